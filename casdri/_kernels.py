"""Jitted replay drivers, built once per policy around its jitted decision (the CAPI-SDRi of a
clip and the per-key tables live in `casdri._kernels_capi`, re-exported here). No I/O, no
pandas, no validation (see `casdri.replay` for the facade and `casdri.cache` for the arrays).

Conventions:
    * Flat arrays with offsets, as built by `casdri.cache.load_cache`: soundscape ``s`` owns
      references ``ref_off[s]:ref_off[s+1]``; stem row ``r`` owns SNRs
      ``stem_snr[snr_off[r] : snr_off[r] + n_ref(s)]`` (dB, one per reference).
    * A *key* ``j`` is one cached query of one soundscape (``key_sc[j]``), its ``key_len[j]``
      slots hold classes ``key_lab[j, :key_len[j]]`` (sorted ascending).
    * A *combo* ``g = sel * n_stages + stage`` names where a key's stems come from: ``sel`` 0 =
      separator 0, 1 = separator 1, 2 = per slot the stem with the higher retag probability of
      its query class (tie: separator 0). ``G = 3 * n_stages`` combos.
    * A *keep mask* ``m`` has bit ``i`` set when slot ``i`` keeps its label (else silence).
    * Tables per (key, combo, mask): ``tab_sum`` (Σ SDRi, dB) and ``tab_cnt`` (entries; 0 =
      the clip scores None; ``tab_cnt[j, g, 0] = -1`` marks a combo the cache cannot serve);
      per (key, mask) ``tab_lab`` = (tp, fp, fn).
    * A policy's jitted decision (``inline="always"``, see `casdri.policies`) has the signature
      ``decide(X, n0, n1, s, pi, pf, off, tab, dims, wi, wf, dec)``: settings ``X[n0:n1]``
      (at most `BLOCK`) on soundscape ``s``, writing ``dec[n - n0] = (j, g, m, code)``;
      ``pi``/``pf`` the policy's per-soundscape inputs; ``off`` the first column of each
      parameter field (``PolicyParams.offsets``, as a tuple of ints: passed by value, the
      offsets stay in registers across soundscapes, where an array's entries would be read
      again after every store); ``tab`` = (key_sc, key_len, key_lab, slot_f,
      tab_sum, tab_cnt, tab_lab, n_ref); ``dims`` (`D_C` ...); ``wi``/``wf`` int64/float64
      scratch of ``pi.shape[1] + 1`` / ``pf.shape[1] + 1`` entries. ``j = -1`` is the empty
      query (no stems); ``code`` 0 ok, 1 = query not in the cache, 2 = separator/stage combo
      missing. It loops over the settings itself: arrays handed to a function are
      reference-counted per call, so a call per block (not per cell) keeps that off the hot
      loop, and the policy can read a soundscape's inputs once for the whole block.
    * Paper symbols: E/R = stem/reference rows of one class, k = min(|E|, |R|).

Speed: the driver loops soundscape-outer, setting-inner over a block of settings so that one
soundscape's tables stay in L1; the decision is inlined (Numba IR inlining) and called once
per (soundscape, block); the pairs drivers call it once per pair inside one jitted loop per
chunk of pairs (scratch allocated once per chunk). A decision makes no views of its scratch
(see `casdri.policies._jit`), so nothing is reference-counted per soundscape or per pair.

fastmath stays off: the replay must equal `casdri.metric.capi_sdri_from_snr` (same additions
in the same order), and the parallel drivers must equal the serial ones bit for bit.
"""
from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Callable, NamedTuple

import numba
import numpy as np
from numba import prange

from ._jit_cache import KernelCache, attach_cache, njit_cached
from ._kernels_capi import (_JIT, _PJIT, A_ENT, A_FN, A_FP, A_SUM, A_TP, F_ARGMAX, F_ENERGY,
                            F_OWN, F_SIL, build_tables, clip_capi, find_key, key_code,
                            label_counts)

__all__ = ["build_tables", "clip_capi", "find_key", "key_code", "label_counts", "Drivers",
           "make_drivers", "class_tally", "row_means", "BLOCK", "A_SUM", "A_ENT", "A_TP",
           "A_FP", "A_FN", "F_OWN", "F_ENERGY", "F_SIL", "F_ARGMAX", "D_C", "D_K", "D_NST",
           "D_MAXS", "D_M", "D_MAXI", "D_NSEP"]

#: dims vector layout (int64) passed to the drivers
D_C, D_K, D_NST, D_MAXS, D_M, D_MAXI, D_NSEP = range(7)

#: settings per block at most: one soundscape's tables (~17 kB) are read into L1 once per
#: block and reused by every setting of it; the block's rows of X stream from L2/L3. Measured
#: (benchmarks/bench_replay.py): 1,024 beats 256 by ~15 %, smaller blocks lose more.
BLOCK = 1024

#: chunks of pairs the parallel ``pairs`` driver hands out (a chunk allocates its scratch once)
PAIR_CHUNKS = 64


# The clip value rules, on scalars only: an inlined helper with array arguments would be
# reference-counted once per cell (see `casdri.policies._jit`).
@numba.njit(inline="always")
def _empty_value(n_ref_s):  # pragma: no cover - jitted
    """CAPI-SDRi (dB) of a clip given no stems: 0 with references, None (NaN) without."""
    return 0.0 if n_ref_s > 0 else np.nan


@numba.njit(inline="always")
def _key_value(total, cnt):  # pragma: no cover - jitted
    """CAPI-SDRi (dB) of a clip from its table entry: Σ SDRi / entries, None (NaN) at 0."""
    return total / cnt if cnt > 0 else np.nan


class Drivers(NamedTuple):
    """The jitted drivers of one policy (same per-cell code in each).

    ``par``/``ser(X, sidx, pi, pf, off, tab, dims, val, lab, want_lab, tot, err, block)``:
    settings ``X (n, P)`` on soundscapes ``sidx``; out ``val (n, len(sidx))`` clip values
    (NaN = None), ``lab (n, len(sidx), 3)`` tp/fp/fn when ``want_lab``, ``tot (n, 4)`` (n_acc,
    tp, fp, fn), ``err (n, 3)`` (first failing position or -1, code, key); ``par`` runs
    blocks of ``block`` settings in parallel.
    ``pairs``/``pairs_ser(X, sidx, pi, pf, off, tab, dims, val, err)``: setting ``X[i]`` on
    soundscape ``sidx[i]`` → ``val (n, 1)``.
    ``trace(X, sidx, pi, pf, off, tab, dims, dec)``: one setting ``X (1, P)`` → ``dec
    (len(sidx), 4)`` = (j, g, keep_mask, code) per clip.
    """

    par: Callable
    ser: Callable
    pairs: Callable
    pairs_ser: Callable
    trace: Callable


class _TokenCache(KernelCache):
    """Numba's on-disk cache for a driver built around a policy's decision: keyed by the
    decision's source (Numba's own key pickles the closure, which differs per process)."""

    def __init__(self, py_func, token: str):
        self._token = token
        super().__init__(py_func)

    def _index_key(self, sig, codegen):
        code = hashlib.sha256(self._py_func.__code__.co_code).hexdigest()
        return (sig, codegen.magic_tuple(), (code, self._token))


def _sources(fn) -> list:
    """The source files the drivers of decision ``fn`` are compiled from, besides
    `casdri._kernels` itself (whose own stamp Numba checks): the decision's module, and the
    modules of its own top-level package that module imports from (modules, functions,
    classes), since a decision inlines their helpers and reads their constants: ``staged``
    calls refine's decision, ``baseline`` inlines `casdri.policies._jit.one_key`, ``refine``
    reads `casdri._kernels_capi`'s column constants. Sorted paths."""
    top = fn.__module__.split(".")[0]
    files = {inspect.getsourcefile(fn)}
    for obj in list(fn.__globals__.values()):
        obj = getattr(obj, "py_func", obj)  # a Numba dispatcher: its Python function
        mod = obj if inspect.ismodule(obj) else (
            inspect.getmodule(obj) if inspect.isfunction(obj) or inspect.isclass(obj) else None)
        if mod is not None and mod.__name__.split(".")[0] == top:
            try:
                files.add(inspect.getsourcefile(mod))
            except TypeError:  # pragma: no cover - a built-in or namespace module
                pass
    return sorted(f for f in files if f)


def _token(decide) -> str:
    """Digest of the decision's name and of every file in `_sources` (changes when any
    does, so that an edit to a helper the decision inlines recompiles its drivers)."""
    fn = getattr(decide, "py_func", decide)
    h = hashlib.sha256(f"{fn.__module__}.{fn.__qualname__}".encode())
    try:
        for f in _sources(fn):
            h.update(f.encode() + b"\0" + Path(f).read_bytes())
    except (TypeError, OSError):  # pragma: no cover - no source: key on the bytecode only
        h.update(fn.__code__.co_code)
    return h.hexdigest()


def _jit(fn, token: str, parallel: bool = False):
    # A name of its own per policy: Numba's symbol names (qualname + a per-process counter +
    # types) of closures loaded from the disk cache would otherwise collide with those of
    # another policy's drivers compiled in this process, and calls would bind to their code.
    fn.__qualname__ = f"{fn.__qualname__}_{token[:16]}"
    return attach_cache(numba.njit(**(_PJIT if parallel else _JIT))(fn), _TokenCache, token)


def make_drivers(decide) -> Drivers:
    """Build the drivers of a policy around its jitted ``decide`` (module conventions).

    Compiled on first call and cached on disk (a second process loads them).
    """
    token = _token(decide)

    def block(X, n0, n1, sidx, pi, pf, off, tab, dims, val, lab, want_lab, tot, err, dec,
              want_dec):  # pragma: no cover - jitted
        """Settings ``n0:n1`` on the soundscapes ``sidx`` (soundscape outer, setting inner):
        decide ``(j, g, m, code)``, then score it from the tables."""
        tab_sum, tab_cnt, tab_lab, n_ref = tab[4], tab[5], tab[6], tab[7]
        wi = np.empty(pi.shape[1] + 1, np.int64)
        wf = np.empty(pf.shape[1] + 1, np.float64)
        dd = np.empty((n1 - n0, 4), np.int64)
        for n in range(n0, n1):
            for k in range(4):
                tot[n, k] = 0
            err[n, 0] = -1
        for p in range(sidx.shape[0]):
            s = sidx[p]
            decide(X, n0, n1, s, pi, pf, off, tab, dims, wi, wf, dd)
            for n in range(n0, n1):
                j = dd[n - n0, 0]
                g = dd[n - n0, 1]
                m = dd[n - n0, 2]
                code = dd[n - n0, 3]
                if want_dec:
                    dec[p, 0] = j
                    dec[p, 1] = g
                    dec[p, 2] = m
                    dec[p, 3] = code
                if code != 0:
                    val[n, p] = np.nan
                    if err[n, 0] < 0:
                        err[n, 0] = p
                        err[n, 1] = code
                        err[n, 2] = j
                    continue
                if j < 0:
                    v = _empty_value(n_ref[s])
                    tp = 0
                    fp = 0
                    fn = n_ref[s]
                else:
                    v = _key_value(tab_sum[j, g, m], tab_cnt[j, g, m])
                    tp = tab_lab[j, m, 0]
                    fp = tab_lab[j, m, 1]
                    fn = tab_lab[j, m, 2]
                val[n, p] = v
                if fp == 0 and fn == 0:
                    tot[n, 0] += 1
                tot[n, 1] += tp
                tot[n, 2] += fp
                tot[n, 3] += fn
                if want_lab:
                    lab[n, p, 0] = tp
                    lab[n, p, 1] = fp
                    lab[n, p, 2] = fn

    block = _jit(block, token)

    def par(X, sidx, pi, pf, off, tab, dims, val, lab, want_lab, tot, err,
            block_size):  # pragma: no cover - jitted
        dec = np.zeros((1, 4), np.int64)
        nb = (X.shape[0] + block_size - 1) // block_size
        for b in prange(nb):
            block(X, b * block_size, min((b + 1) * block_size, X.shape[0]), sidx, pi, pf, off,
                  tab, dims, val, lab, want_lab, tot, err, dec, False)

    def ser(X, sidx, pi, pf, off, tab, dims, val, lab, want_lab, tot, err,
            block_size):  # pragma: no cover - jitted
        dec = np.zeros((1, 4), np.int64)
        nb = (X.shape[0] + block_size - 1) // block_size
        for b in range(nb):
            block(X, b * block_size, min((b + 1) * block_size, X.shape[0]), sidx, pi, pf, off,
                  tab, dims, val, lab, want_lab, tot, err, dec, False)

    def pairs_chunk(X, i0, i1, sidx, pi, pf, off, tab, dims, val,
                    err):  # pragma: no cover - jitted
        """Setting ``X[i]`` on soundscape ``sidx[i]`` for ``i0 <= i < i1``: the decision is
        called per pair (one call of this function per chunk of pairs, so the scratch and the
        arrays' reference counts are paid once per chunk, not once per pair)."""
        tab_sum, tab_cnt, n_ref = tab[4], tab[5], tab[7]
        wi = np.empty(pi.shape[1] + 1, np.int64)
        wf = np.empty(pf.shape[1] + 1, np.float64)
        dd = np.empty((1, 4), np.int64)
        for i in range(i0, i1):
            s = sidx[i]
            decide(X, i, i + 1, s, pi, pf, off, tab, dims, wi, wf, dd)
            j = dd[0, 0]
            code = dd[0, 3]
            err[i, 0] = -1
            if code != 0:
                val[i, 0] = np.nan
                err[i, 0] = 0
                err[i, 1] = code
                err[i, 2] = j
                continue
            if j < 0:
                val[i, 0] = _empty_value(n_ref[s])
            else:
                g = dd[0, 1]
                m = dd[0, 2]
                val[i, 0] = _key_value(tab_sum[j, g, m], tab_cnt[j, g, m])

    pairs_chunk = _jit(pairs_chunk, token)

    def pairs(X, sidx, pi, pf, off, tab, dims, val, err):  # pragma: no cover - jitted
        n = X.shape[0]
        nch = min(n, PAIR_CHUNKS)
        for c in prange(nch):
            pairs_chunk(X, c * n // nch, (c + 1) * n // nch, sidx, pi, pf, off, tab, dims, val,
                        err)

    def pairs_ser(X, sidx, pi, pf, off, tab, dims, val, err):  # pragma: no cover - jitted
        pairs_chunk(X, 0, X.shape[0], sidx, pi, pf, off, tab, dims, val, err)

    def trace(X, sidx, pi, pf, off, tab, dims, dec):  # pragma: no cover - jitted
        val = np.empty((1, sidx.shape[0]), np.float64)
        lab = np.zeros((1, 1, 3), np.int64)
        tot = np.zeros((1, 4), np.int64)
        err = np.zeros((1, 3), np.int64)
        block(X, 0, 1, sidx, pi, pf, off, tab, dims, val, lab, False, tot, err, dec, True)

    return Drivers(_jit(par, token, parallel=True), _jit(ser, token),
                   _jit(pairs, token, parallel=True), _jit(pairs_ser, token), _jit(trace, token))


@njit_cached(**_JIT)
def class_tally(sidx, dec, slot_rows, key_len, key_lab, ref_off, ref_lab, snr_mix, stem_snr,
                snr_off, cls_acc):  # pragma: no cover - jitted
    """Add the per-class entries of traced decisions ``dec`` (see `Drivers.trace`) to
    ``cls_acc``."""
    maxs = key_lab.shape[1]
    rows = np.empty(max(maxs, 1), np.int64)
    labs = np.empty(max(maxs, 1), np.int64)
    for p in range(sidx.shape[0]):
        s = sidx[p]
        j, g, m = dec[p, 0], dec[p, 1], dec[p, 2]
        ne = 0
        if j >= 0:
            for i in range(key_len[j]):
                if (m >> i) & 1:
                    rows[ne] = slot_rows[j, g, i]
                    labs[ne] = key_lab[j, i]
                    ne += 1
        rl = ref_lab[ref_off[s]:ref_off[s + 1]]
        nm = max(ne, rl.shape[0]) + 1
        clip_capi(rows, labs, ne, rl, snr_mix[ref_off[s]:ref_off[s + 1]], stem_snr, snr_off,
                  cls_acc, np.empty(7 * nm, np.int64), np.empty(nm + 1, np.float64))


@njit_cached(**_JIT)
def row_means(val):  # pragma: no cover - jitted
    """Per row: mean over non-NaN entries summed in column order (NaN when none), count."""
    out = np.empty(val.shape[0], np.float64)
    cnt = np.zeros(val.shape[0], np.int64)
    for n in range(val.shape[0]):
        t = 0.0
        for p in range(val.shape[1]):
            v = val[n, p]
            if v == v:
                t += v
                cnt[n] += 1
        out[n] = t / cnt[n] if cnt[n] > 0 else np.nan
    return out, cnt
