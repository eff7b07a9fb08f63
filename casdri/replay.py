"""Exact batch replay of decision policies on a `casdri.cache.DecisionCache`.

Conventions:
    * ``params`` is one parameter object, a list of them, or an encoded ``(n, P)`` float64
      array (the policy's ``encode`` layout); results are per setting.
    * ``mask`` selects soundscapes: ``(S,) bool`` or an integer index array; ``None`` = all.
      Matrices have one column per selected soundscape, in mask order (an index array may
      repeat a soundscape: it is then scored once per repeat, as a bootstrap resample needs).
      A float array, or an integer array of length S holding only 0/1 with repeats (a 0/1
      mask), is refused as ambiguous (`PolicyError`): pass ``mask.astype(bool)`` or
      ``np.flatnonzero(mask)``.
    * A clip that scores None is NaN in value matrices and is left out of the dataset mean (its
      label accuracy still counts, as officially). The dataset mean sums clip values in
      soundscape order (the order of `casdri.accumulator.CapiSdri`).
    * Derived tables (per key, combo and keep mask: Σ SDRi, entries, tp/fp/fn) are built once
      per cache on first use (`prepare`) and memoised on the cache.

Errors: a query the cache does not hold raises `CacheKeyError` naming the soundscape and
the query's classes; bad settings raise `PolicyError`.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Optional, Union

import numba
import numpy as np
import pandas as pd

from . import _kernels as K_
from . import _kernels_stage as KS
from ._jit_cache import is_cached
from .errors import CacheKeyError, InputError, PolicyError
from .labels import SILENCE
from .policies import POLICIES, PolicyParams, drivers, get_policy, params_class

__all__ = ["ReplayResult", "ReplayMatrix", "replay", "replay_matrix", "replay_pairs",
           "scored_mean", "decisions", "trace", "encode_settings", "prepare", "kernels_cached",
           "warm_up", "block_size"]


def scored_mean(values):
    """The official dataset mean over scored soundscapes (the one rule of casdri and search).

    Args:
        values: per-soundscape CAPI-SDRi in dB, ``float64`` (other real dtypes are cast),
            NaN for a clip that scores None; ``(S,)`` for one setting or ``(n, S)`` for ``n``
            settings (one row each).

    Returns:
        ``float`` for a 1-D input, ``(n,) float64`` for a 2-D one: the mean over the non-NaN
        entries, NaN when there is none (every clip None, or ``S == 0``).

    Summation order: left to right over soundscapes in index order, one float64 accumulator
    per row, then one division by the count (`casdri._kernels.row_means`, the jitted reduction
    `replay` uses). Every dataset mean in casdri and search goes through here, so the same
    values give bit-identical means everywhere (numpy's pairwise ``sum``/``mean`` can differ in
    the last bits).

    Raises:
        ValueError: ``values`` is not 1-D or 2-D.

    Example:
        >>> scored_mean(np.array([1.0, np.nan, 3.0]))
        2.0
    """
    v = np.ascontiguousarray(values, dtype=np.float64)
    if v.ndim == 1:
        return float(K_.row_means(v.reshape(1, -1))[0][0])
    if v.ndim != 2:
        raise ValueError(f"scored_mean: values must be (S,) or (n, S), got shape {v.shape}")
    return K_.row_means(v)[0]


@dataclass(frozen=True)
class ReplayResult:
    """Dataset figures of each setting (arrays ``(n_settings,)``).

    Attributes:
        policy: policy name; settings: ``(n, P)`` encoded settings.
        capi_sdri: dataset CAPI-SDRi, dB (NaN when every clip is None).
        accuracy_mix, accuracy_src: label accuracies, percent.
        n_soundscapes: soundscapes in the mask; n_scored: non-None clips per setting.
        per_soundscape, per_class: DataFrames of the single setting, when asked.
    """

    policy: str
    settings: np.ndarray
    capi_sdri: np.ndarray
    accuracy_mix: np.ndarray
    accuracy_src: np.ndarray
    n_soundscapes: int
    n_scored: np.ndarray
    per_soundscape: Optional[pd.DataFrame] = None
    per_class: Optional[pd.DataFrame] = None


@dataclass(frozen=True)
class ReplayMatrix:
    """Per-soundscape values of each setting (the search's fast path).

    Attributes:
        values: ``(n, S_sel) float64`` clip CAPI-SDRi in dB, NaN = None.
        is_none: ``(n, S_sel) bool`` (``np.isnan(values)``, computed on first read).
        soundscapes: ``(S_sel,) int64`` cache rows of the columns.
        n_acc, tp, fp, fn: ``(n,) int64`` label totals over the columns.
        labels: ``(n, S_sel, 3) int64`` per-clip (tp, fp, fn) when ``counts=True``.
    """

    values: np.ndarray
    soundscapes: np.ndarray
    n_acc: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    labels: Optional[np.ndarray] = None

    @functools.cached_property
    def is_none(self) -> np.ndarray:
        # built on first read: the search reads only the values (a mask of every call's
        # 1,512 x 2,000 cells cost 10-20 % of a one-lookup policy's replay)
        return np.isnan(self.values)


# ----------------------------------------------------------------------------- preparation


def _tables(cache, mixed: bool) -> dict:
    """The shared tables, with the mixed-stage combos of `casdri._kernels_stage` appended when
    ``mixed`` and the cache has more than one stage (memoised separately)."""
    mixed = mixed and cache.n_stages > 1
    key = "tables_mixed" if mixed else "tables"
    if key not in cache.memo:
        NK, maxs = cache.key_labels.shape
        G = 3 * cache.n_stages + (KS.n_mixed(cache.n_stages, maxs, len(cache.separators))
                                   if mixed else 0)
        M = 1 << maxs
        slot_rows = np.zeros((NK, G, maxs), np.int64)
        slot_f = np.zeros((NK, G, maxs, 4), np.float64)
        tab_sum = np.zeros((NK, G, M), np.float64)
        tab_cnt = np.zeros((NK, G, M), np.int32)
        tab_lab = np.zeros((NK, M, 3), np.int32)
        if NK:
            K_.build_tables(cache.key_sc, cache.key_len, cache.key_labels, cache.key_stem,
                            cache.stem_retag_max, cache.stem_energy_db,
                            cache.stem_retag_silence_min, cache.stem_snr_offsets,
                            cache.stem_snr_db, cache.ref_offsets, cache.ref_labels,
                            cache.snr_mix_db, slot_rows, slot_f, tab_sum, tab_cnt, tab_lab)
            if mixed:
                KS.build_mixed_tables(cache.key_sc, cache.key_len, cache.key_labels,
                                      cache.stem_snr_db, cache.stem_snr_offsets,
                                      cache.ref_offsets, cache.ref_labels, cache.snr_mix_db,
                                      cache.n_stages, slot_rows, slot_f, tab_sum, tab_cnt)
        tab = (cache.key_sc, cache.key_len, cache.key_labels, slot_f, tab_sum, tab_cnt, tab_lab,
               np.ascontiguousarray(cache.n_ref))
        dims = np.array([cache.n_classes, cache.n_tracks, cache.n_stages, maxs, M,
                         2 * cache.n_tracks, len(cache.separators)], np.int64)
        cache.memo[key] = dict(tab=tab, dims=dims, slot_rows=slot_rows)
    return cache.memo[key]


def prepare(cache, policy=None) -> dict:
    """Build (once) the shared tables and, if ``policy`` is given, its kernel inputs.

    Returns:
        ``{"tab", "dims", "slot_rows"[, "policy", "off"]}`` (a stable contract; see
        `casdri._kernels` conventions for the meaning):
        ``tab = (key_sc, key_len, key_labels, slot_f, tab_sum, tab_cnt, tab_lab, n_ref)`` with
        ``slot_f (NK, G, MAXS, 4) float64`` = (retag prob of the slot class, energy_db, retag
        silence min, argmax flag) of the stem each combo ``g = sel * n_stages + stage`` uses,
        ``tab_sum/tab_cnt (NK, G, 2^MAXS)`` Σ SDRi (dB) / entries per keep mask, ``tab_lab
        (NK, 2^MAXS, 3)`` tp/fp/fn; ``dims = [C, K, n_stages, MAXS, 2^MAXS, 2K, n_separators]``;
        ``slot_rows (NK, G, MAXS)`` stem rows; ``policy = (pi, pf)`` from the policy's
        ``prepare``; ``off`` the policy's field offsets (``PARAMS.offsets(cache)`` as a tuple
        of ints: a decision indexes it, array methods do not apply). A policy
        with ``MIXED_STAGES = True`` gets the mixed-stage combos appended
        (`casdri._kernels_stage`; multi-stage caches only).
    """
    _need_cache(cache)
    mod = None if policy is None else get_policy(policy)
    out = _tables(cache, bool(getattr(mod, "MIXED_STAGES", False)))
    if mod is not None:
        key = ("policy", mod.NAME)
        if key not in cache.memo or cache.memo[key][0] is not mod:
            # the offsets as a tuple: passed by value, so a driver keeps them in registers
            # across soundscapes (an array's entries are reloaded after every store)
            cache.memo[key] = (mod, mod.prepare(cache),
                               tuple(int(v) for v in mod.PARAMS.offsets(cache)))
        out = dict(out, policy=cache.memo[key][1], off=cache.memo[key][2])
    return out


def _need_cache(cache) -> None:
    """Refuse what is not a loaded cache (a path, None) with the call that loads one."""
    if not (hasattr(cache, "n_soundscapes") and hasattr(cache, "memo")):
        raise InputError(f"cache: expected a DecisionCache, got {type(cache).__name__} "
                         f"{cache!r:.80}; load one with casdri.load_cache(path)")


def encode_settings(cache, policy, params) -> np.ndarray:
    """``(n, P)`` checked float64 settings from params object(s) or an encoded array.

    Raises:
        InputError: ``cache`` is not a `casdri.cache.DecisionCache`.
        PolicyError: ``params`` is none of a params object of the policy, a non-empty list
            of them, or an ``(n, P)`` array of encoded settings; or a value is invalid.
    """
    _need_cache(cache)
    mod = get_policy(policy)
    cls = params_class(mod)
    if isinstance(params, PolicyParams):
        params = [params]
    if isinstance(params, (list, tuple)) and params and isinstance(params[0], PolicyParams):
        for p in params:
            if type(p) is not cls:
                owner = [m.NAME for m in POLICIES.values() if m.PARAMS is type(p)]
                hint = f" ({type(p).__name__} belongs to policy {owner[0]!r})" if owner else ""
                if isinstance(p, cls) and not owner:
                    continue  # a subclass of the policy's own parameters
                raise PolicyError(f"{type(p).__name__} given for policy {mod.NAME!r}; "
                                  f"expected {cls.__name__}{hint}")
        params = np.stack([p.encode(cache) for p in params])
    if isinstance(params, (list, tuple)) and not params:
        raise PolicyError("no settings given")

    def forms() -> str:  # (only on an error: the layout is not free)
        return (f"expected a {cls.__name__}, a list of them, or an (n, "
                f"{cls.n_params(cache)}) array of encoded settings")
    if params is None or isinstance(params, (dict, str, bytes, type)):
        raise PolicyError(f"params: {forms()}; got {type(params).__name__}")
    if not isinstance(params, np.ndarray) or params.dtype != np.float64:
        try:
            params = np.asarray(params, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise PolicyError(f"params: {forms()}; got {type(params).__name__} ({e})") from None
    return cls.check_encoded(params, cache)


def _mask_idx(cache, mask, what: str = "mask") -> np.ndarray:
    """``(n,) int64`` soundscape rows of a bool mask or an index array (module conventions)."""
    _need_cache(cache)
    S = cache.n_soundscapes
    if mask is None:
        return np.arange(S, dtype=np.int64)
    m = np.asarray(mask)
    if m.dtype == bool:
        if m.shape != (S,):
            raise PolicyError(f"{what}: a bool mask must have shape ({S},), got {m.shape}")
        return np.flatnonzero(m).astype(np.int64)
    if m.size and not np.issubdtype(m.dtype, np.integer):
        raise PolicyError(f"{what}: {m.dtype} array is neither a bool mask nor integer indices; "
                          f"pass a ({S},) bool mask (mask.astype(bool)) or integer soundscape "
                          "indices (np.flatnonzero(mask))")
    m = m.astype(np.int64).reshape(-1)
    if what == "mask" and S > 1 and m.shape == (S,) and np.isin(m, (0, 1)).all() and \
            len(np.unique(m)) < S:
        raise PolicyError(f"mask: an integer array of length {S} holding only 0 and 1 is "
                          "ambiguous (a 0/1 mask or soundscape indices?); pass "
                          "mask.astype(bool) for a mask or np.flatnonzero(mask) for indices")
    if len(m) and (m.min() < 0 or m.max() >= S):
        raise PolicyError(f"{what}: soundscape index outside 0..{S - 1}")
    return np.ascontiguousarray(m)


def _raise_key_error(cache, mod, x, s: int, code: int):
    params = params_class(mod).decode(x, cache)
    mod.decide(cache.inputs(s), params, cache.lookup(s))  # raises CacheKeyError with names
    raise CacheKeyError(f"soundscape {cache.soundscape_ids[s]!r}: policy {mod.NAME!r} asked for "
                        f"a query the cache {cache.path} does not hold (code {code})")


def block_size(n: int, parallel: bool, cap: int = K_.BLOCK) -> int:
    """Settings per block of a dense replay of ``n`` settings: at least 2 blocks per thread
    when ``parallel``, at most ``cap`` (`casdri._kernels.BLOCK`), at least 8."""
    threads = numba.get_num_threads() if parallel else 1
    return int(min(cap, max(8, -(-n // (2 * threads)))))


def _run(cache, mod, X, sidx, want_lab: bool, parallel: bool):
    prep = prepare(cache, mod)
    pi, pf = prep["policy"]
    n, ns = X.shape[0], len(sidx)
    val = np.empty((n, ns), np.float64)
    lab = np.zeros((n if want_lab else 1, ns, 3), np.int64)
    tot = np.zeros((n, 4), np.int64)
    err = np.zeros((n, 3), np.int64)
    drv = drivers(mod)
    kern = drv.par if parallel else drv.ser
    kern(X, sidx, pi, pf, prep["off"], prep["tab"], prep["dims"], val, lab, want_lab, tot, err,
         block_size(n, parallel))
    bad = np.flatnonzero(err[:, 0] >= 0)
    if len(bad):
        i = int(bad[0])
        _raise_key_error(cache, mod, X[i], int(sidx[err[i, 0]]), int(err[i, 1]))
    return val, (lab if want_lab else None), tot


# ----------------------------------------------------------------------------- public API


def replay_matrix(cache, policy: Union[str, ModuleType], params, mask=None,
                  counts: bool = False, parallel: bool = True) -> ReplayMatrix:
    """Per-soundscape CAPI-SDRi of many settings (parallel over settings).

    Args:
        cache: `DecisionCache`; policy: name or module; params: see module conventions.
        mask: soundscapes (bool ``(S,)`` or indices); counts: also per-clip tp/fp/fn.
        parallel: False runs the same kernel on one thread (identical results).

    Returns:
        `ReplayMatrix`: ``values`` ``(n settings, S_sel) float64`` clip CAPI-SDRi in dB (NaN
        where the clip is None, as the official metric leaves it out of the mean), the cache
        rows of its columns, label totals per setting, and per-clip (tp, fp, fn) when
        ``counts``. `scored_mean` of ``values`` gives each setting's dataset CAPI-SDRi.

    Raises:
        PolicyError: bad settings; CacheKeyError: a query not in the cache.
    """
    mod = get_policy(policy)
    X = encode_settings(cache, mod, params)
    sidx = _mask_idx(cache, mask)
    val, lab, tot = _run(cache, mod, X, sidx, counts, parallel)
    return ReplayMatrix(val, sidx, tot[:, 0].copy(), tot[:, 1].copy(), tot[:, 2].copy(),
                        tot[:, 3].copy(), lab)


def replay_pairs(cache, policy, params, soundscapes, parallel: bool = True) -> np.ndarray:
    """``(n,) float64``: setting ``i`` on soundscape ``soundscapes[i]`` (NaN = None).

    For paired bootstraps and per-soundscape moves; ``parallel=False`` runs on one thread.
    """
    mod = get_policy(policy)
    X = encode_settings(cache, mod, params)
    sidx = _mask_idx(cache, soundscapes, "soundscapes")
    if len(sidx) != X.shape[0]:
        raise PolicyError(f"{X.shape[0]} settings for {len(sidx)} soundscapes")
    prep = prepare(cache, mod)
    pi, pf = prep["policy"]
    val = np.empty((len(sidx), 1), np.float64)
    err = np.zeros((len(sidx), 3), np.int64)
    drv = drivers(mod)
    kern = drv.pairs if parallel else drv.pairs_ser
    kern(X, sidx, pi, pf, prep["off"], prep["tab"], prep["dims"], val, err)
    bad = np.flatnonzero(err[:, 0] >= 0)
    if len(bad):
        i = int(bad[0])
        _raise_key_error(cache, mod, X[i], int(sidx[i]), int(err[i, 1]))
    return val[:, 0]


def replay(cache, policy: Union[str, ModuleType], params, mask=None,
           per_soundscape: bool = False, per_class: bool = False,
           parallel: bool = True) -> ReplayResult:
    """Dataset CAPI-SDRi and label accuracies of one or many settings.

    Args:
        cache: `DecisionCache`; policy: a registered name (``"baseline"``, ``"refine"``,
            ``"oracle"``, ...) or plug-in.
        params: params object(s) or encoded ``(n, P)`` array.
        mask: soundscapes to score (bool ``(S,)`` or indices; None = all).
        per_soundscape, per_class: build the DataFrames (one setting only).

    Returns:
        `ReplayResult`.

    Raises:
        PolicyError: bad settings, or tables asked for several settings.
        CacheKeyError: a query the cache does not hold (soundscape and classes named).

    Example:
        >>> from casdri.synthetic import make_synthetic_cache
        >>> from casdri.policies import OracleParams
        >>> c = make_synthetic_cache(n_soundscapes=5, seed=1)
        >>> r = replay(c, "oracle", OracleParams(), per_class=True)
        >>> round(float(r.capi_sdri[0]), 4), r.per_class.label.tolist()[:2]
        (7.3357, ['BicycleBell', 'Blender'])
    """
    mod = get_policy(policy)
    X = encode_settings(cache, mod, params)
    if (per_soundscape or per_class) and X.shape[0] != 1:
        raise PolicyError("per_soundscape / per_class tables need exactly one setting")
    sidx = _mask_idx(cache, mask)
    val, lab, tot = _run(cache, mod, X, sidx, per_soundscape, parallel)
    mean, n_scored = K_.row_means(val)
    ns = len(sidx)
    acc_mix = 100.0 * tot[:, 0] / ns if ns else np.full(X.shape[0], np.nan)
    den = tot[:, 1] + tot[:, 2] + tot[:, 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        acc_src = np.where(den > 0, 100.0 * tot[:, 1] / np.maximum(den, 1), np.nan)
    ps = pc = None
    if per_soundscape or per_class:
        dec = _trace(cache, mod, X[0], sidx)
        if per_soundscape:
            ps = _per_soundscape(cache, sidx, dec, val[0], lab[0])
        if per_class:
            pc = _per_class(cache, mod, sidx, dec)
    return ReplayResult(mod.NAME, X, mean, acc_mix, acc_src, ns, n_scored, ps, pc)


def trace(cache, policy, params, mask=None) -> np.ndarray:
    """One setting's decisions: ``(n_sel, 4) int64`` rows (key, combo, keep mask, 0) per
    soundscape of ``mask`` (key -1: no stems). Stem rows: ``prepare(cache, policy)["slot_rows"]``.

    Raises:
        CacheKeyError: a query not in the cache; PolicyError: not exactly one setting.
    """
    mod = get_policy(policy)
    X = encode_settings(cache, mod, params)
    if X.shape[0] != 1:
        raise PolicyError("trace() takes one setting")
    return _trace(cache, mod, X[0], _mask_idx(cache, mask))


def _trace(cache, mod, x, sidx) -> np.ndarray:
    sidx = np.ascontiguousarray(sidx, dtype=np.int64)
    prep = prepare(cache, mod)
    pi, pf = prep["policy"]
    out = np.zeros((len(sidx), 4), np.int64)
    drivers(mod).trace(np.ascontiguousarray(x).reshape(1, -1), sidx, pi, pf, prep["off"],
                       prep["tab"], prep["dims"], out)
    bad = np.flatnonzero(out[:, 3] != 0)
    if len(bad):
        _raise_key_error(cache, mod, x, int(sidx[bad[0]]), int(out[bad[0], 3]))
    return out


def _est_classes(cache, j: int, m: int) -> list[int]:
    return [] if j < 0 else [int(cache.key_labels[j, i]) for i in range(cache.key_len[j])
                             if (m >> i) & 1]


def _per_soundscape(cache, sidx, dec, val, lab) -> pd.DataFrame:
    names = cache.meta.classes
    rows = []
    for p, s in enumerate(sidx):
        r0, r1 = cache.ref_offsets[s], cache.ref_offsets[s + 1]
        tp, fp, fn = (int(v) for v in lab[p])
        rows.append((cache.soundscape_ids[s], cache.splits[s], float(val[p]),
                     [names[c] for c in _est_classes(cache, int(dec[p, 0]), int(dec[p, 2]))],
                     [names[c] for c in cache.ref_labels[r0:r1]], fp == 0 and fn == 0, tp, fp, fn))
    return pd.DataFrame(rows, columns=["soundscape", "split", "capi_sdri", "est_labels",
                                       "ref_labels", "acc", "tp", "fp", "fn"])


def _per_class(cache, mod, sidx, dec) -> pd.DataFrame:
    acc = np.zeros((cache.n_classes, 5), np.float64)
    K_.class_tally(sidx, dec, prepare(cache, mod)["slot_rows"], cache.key_len, cache.key_labels,
                   cache.ref_offsets, cache.ref_labels, cache.snr_mix_db, cache.stem_snr_db,
                   cache.stem_snr_offsets, acc)
    rows = []
    for c, name in enumerate(cache.meta.classes):
        s, n, tp, fp, fn = acc[c]
        if n == 0:
            continue
        rows.append((name, s / n, s / tp if tp else np.nan, int(n), int(tp), int(fp), int(fn)))
    return pd.DataFrame(rows, columns=["label", "sdri_mean", "sdri_matched_mean", "n_entries",
                                       "tp", "fp", "fn"])


def decisions(cache, policy, params, mask=None) -> pd.DataFrame:
    """One row per slot of each soundscape's final query under one setting.

    Columns: soundscape, separator (name), stage, query (class-index tuple), slot, stem_row
    (cache row), label (class name or ``'silence'``).
    """
    mod = get_policy(policy)
    X = encode_settings(cache, mod, params)
    if X.shape[0] != 1:
        raise PolicyError("decisions() takes one setting")
    sidx = _mask_idx(cache, mask)
    dec = _trace(cache, mod, X[0], sidx)
    slot_rows = prepare(cache, mod)["slot_rows"]
    rows = []
    for p, s in enumerate(sidx):
        j, g, m = (int(v) for v in dec[p, :3])
        if j < 0:
            continue
        q = tuple(int(c) for c in cache.key_labels[j, :cache.key_len[j]])
        for i in range(len(q)):
            r = int(slot_rows[j, g, i])
            rows.append((cache.soundscape_ids[s], cache.separators[cache.stem_separator[r]],
                         int(cache.stem_stage[r]), q, i, r,
                         cache.meta.classes[q[i]] if (m >> i) & 1 else SILENCE))
    return pd.DataFrame(rows, columns=["soundscape", "separator", "stage", "query", "slot",
                                       "stem_row", "label"])


# ----------------------------------------------------------------------------- compilation


def _dispatchers(policy) -> list:
    return [*drivers(policy), K_.build_tables, K_.row_means, K_.class_tally]


def kernels_cached(policy: Union[str, ModuleType] = "refine",
                   uses: Optional[tuple] = None) -> bool:
    """True when the replay kernels of ``policy`` are compiled in this process or stored in
    Numba's on-disk cache (then loading them takes well under a second); False means the
    first replay compiles them (tens of seconds: say "compiling kernels (first run only)").
    A cheap check: it compiles nothing.

    Args:
        uses: the drivers to check (fields of `casdri._kernels.Drivers`: ``"par"``,
            ``"ser"``, ``"pairs"``, ``"pairs_ser"``, ``"trace"``), with the table kernels;
            None: every driver. A caller that never runs a driver (the search never runs
            ``pairs``) checks the ones it runs, or it would say "compiling" on every run.
    """
    if uses is None:
        return all(is_cached(d) for d in _dispatchers(policy))
    drv = drivers(get_policy(policy))
    return all(is_cached(d) for d in [*(getattr(drv, u) for u in uses), K_.build_tables,
                                      K_.row_means])


def warm_up(cache, policy: Union[str, ModuleType] = "refine") -> float:
    """Compile (or load from Numba's cache) every replay kernel of ``policy`` by replaying its
    default setting on one soundscape of ``cache``; returns the seconds it took."""
    t = time.perf_counter()
    mod = get_policy(policy)
    x = mod.PARAMS().encode(cache)[None, :]
    one = np.zeros(min(1, cache.n_soundscapes), np.int64)
    prep = prepare(cache, mod)
    try:
        for parallel in (True, False):
            replay_matrix(cache, mod, x, mask=one, counts=True, parallel=parallel)
            replay_pairs(cache, mod, x[:len(one)], one, parallel=parallel)
        trace(cache, mod, x, one)
    except CacheKeyError:  # a cache without the default's keys still compiled everything
        pass
    K_.row_means(np.zeros((1, 1)))
    K_.class_tally(one, np.zeros((len(one), 4), np.int64), prep["slot_rows"], cache.key_len,
                   cache.key_labels, cache.ref_offsets, cache.ref_labels, cache.snr_mix_db,
                   cache.stem_snr_db, cache.stem_snr_offsets, np.zeros((cache.n_classes, 5)))
    return time.perf_counter() - t
