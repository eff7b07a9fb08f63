"""Content checks of a decision cache at load (private; run by `casdri.cache.load_cache`):
values a corrupt byte or a wrong writer would produce, and builds that did not finish.

Conventions: every check names the file (part or metadata), the column and the first bad
value, and the fix; nothing here changes what a valid cache loads as.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import schema as sc
from .errors import CacheError, CacheSchemaError
from .labels import DCASE_SAMPLE_RATE_HZ, LABEL_SETS, sample_rate_problem

__all__ = ["check_meta", "check_values", "check_complete", "completeness_problems",
           "prob_sum_tol", "BUILD_DIR", "SNR_BOUND_DB", "PROB_SUM_TOL",
           "DCASE_SAMPLE_RATE_HZ"]

#: build bookkeeping of `cache_builder` (``_build/<split>.shard-<i>of<n>.json`` manifests)
BUILD_DIR = "_build"
#: largest |SNR| in dB that float32 audio can give: 10·log10(2³¹ · f32max² / f32 eps) ≈ 931
#: dB (every sample at the float32 maximum over 2³¹ samples, against the metric's eps), so a
#: larger cached value is a corrupt byte, not a measurement
SNR_BOUND_DB = 1000.0
#: a cached softmax row (float32) sums to 1 within this
PROB_SUM_TOL = sc.PROB_SUM_TOL


def check_meta(meta: sc.CacheMeta, meta_file) -> None:
    """The metadata's class list equals the named label set's and, for the DCASE label sets,
    the sample rate is 32 kHz (a renamed or swapped class list would silently relabel every
    per-class table).

    Raises:
        CacheSchemaError: naming ``meta_file``, the field and the fix.
    """
    known = LABEL_SETS.get(meta.label_set)
    if known is None:
        return
    if tuple(meta.classes) != tuple(known.classes):
        diff = [f"{i}: {a!r} != {b!r}" for i, (a, b) in enumerate(
            zip(meta.classes, known.classes)) if a != b][:3]
        raise CacheSchemaError(
            f"{meta_file}: classes differ from label set {meta.label_set!r} ("
            f"{len(meta.classes)} vs {len(known.classes)} classes; "
            f"{', '.join(diff) or 'extra or missing classes'}); the cache was written for "
            "another class list: rebuild it, or give it a label-set name of its own")
    problem = sample_rate_problem(meta.label_set, meta.sample_rate_hz)
    if problem:
        raise CacheSchemaError(f"{meta_file}: {problem}; rebuild the cache from 32 kHz "
                               "soundscapes")



def _flat(t: pa.Table, column: str, dtype) -> np.ndarray:
    col = t.column(column)
    if pa.types.is_list(col.type):
        col = pc.list_flatten(col)
    return col.to_numpy().astype(dtype, copy=False)


def _check_range(f: Path, column: str, x: np.ndarray, lo: float, hi: float,
                 allow_neg_inf: bool = False) -> None:
    ok = (x >= lo) & (x <= hi)
    if allow_neg_inf:
        ok |= x == -np.inf
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise CacheSchemaError(
            f"{f}: {column} value {float(x[i])!r} (value {i} of the column) outside [{lo:g}, {hi:g}]"
            f"{' (or -inf)' if allow_neg_inf else ''}; the part is corrupt: delete it and "
            "rebuild it")


def prob_sum_tol(meta: sc.CacheMeta) -> float:
    """`PROB_SUM_TOL`, or ``(C + 1) / 16`` for a `casdri.synthetic` cache made with
    ``quantize=True`` (each probability rounded to 1/8, so a row sum moves by up to 1/16 per
    entry)."""
    synth = (meta.extra or {}).get("synthetic")
    if isinstance(synth, dict) and synth.get("quantize"):
        return (meta.n_classes + 1) / 16
    return PROB_SUM_TOL


def _check_probs(f: Path, column: str, x: np.ndarray, width: int, tol: float) -> None:
    _check_range(f, column, x.astype(np.float64), 0.0, 1.0)
    if not len(x) or len(x) % width:
        return  # lengths are checked where the rows are built
    sums = x.reshape(-1, width).astype(np.float64).sum(axis=1)
    bad = ~(np.abs(sums - 1.0) <= tol)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CacheSchemaError(
            f"{f}: {column} row {i} sums to {float(sums[i]):.6g}, not 1 (within {tol:g}); "
            "a softmax over the classes and silence is expected: the part is corrupt or was "
            "written from logits: rebuild it")


def _check_retag_reduced(f: Path, mx: np.ndarray, smin: np.ndarray, C: int, tol: float
                         ) -> None:
    """Schema version 2's retagger columns: probabilities in [0, 1], and per stem the class
    maxima and the silence minimum consistent with a softmax (the track whose silence is
    the minimum spreads ``1 - silence`` over classes whose maxima are at least that:
    ``sum(retag_max) + retag_silence_min >= 1``, within ``tol``)."""
    _check_range(f, sc.RETAG_MAX, mx.astype(np.float64), 0.0, 1.0)
    _check_range(f, sc.RETAG_SILENCE_MIN, smin.astype(np.float64), 0.0, 1.0)
    if not len(smin) or len(mx) != len(smin) * C:
        return  # lengths are checked where the rows are built
    total = mx.reshape(-1, C).astype(np.float64).sum(axis=1) + smin
    bad = ~(total >= 1.0 - tol)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CacheSchemaError(
            f"{f}: row {i}: sum of {sc.RETAG_MAX} + {sc.RETAG_SILENCE_MIN} is "
            f"{float(total[i]):.6g} < 1 (within {tol:g}); they must come from a softmax over "
            "the classes and silence per track (`casdri.schema.reduce_retag`): the part is "
            "corrupt or was written from logits: rebuild it")


def check_values(meta: sc.CacheMeta, name: str, f: Path, t: pa.Table) -> None:
    """Range checks of one part: finite SNRs within ±`SNR_BOUND_DB`, ``energy_db`` finite
    (or ``-inf`` for an all-zero stem), probabilities in [0, 1] with rows summing to 1
    within `prob_sum_tol` (the retagger's reduced columns: consistent with such rows).

    Raises:
        CacheSchemaError: naming the file, the column and the first bad value.
    """
    width, tol = meta.n_classes + 1, prob_sum_tol(meta)
    if name == "soundscapes":
        _check_range(f, sc.SNR_MIX_DB, _flat(t, sc.SNR_MIX_DB, np.float64),
                     -SNR_BOUND_DB, SNR_BOUND_DB)
    elif name == "tagger":
        _check_probs(f, sc.PROBS, _flat(t, sc.PROBS, np.float32), width, tol)
    elif name == "separations":
        _check_range(f, sc.SNR_DB, _flat(t, sc.SNR_DB, np.float64), -SNR_BOUND_DB,
                     SNR_BOUND_DB)
        _check_range(f, sc.ENERGY_DB, _flat(t, sc.ENERGY_DB, np.float64), -np.finfo(float).max,
                     np.finfo(float).max, allow_neg_inf=True)
        if sc.RETAG in t.column_names:  # schema version 1: the whole softmax
            _check_probs(f, sc.RETAG, _flat(t, sc.RETAG, np.float32), width, tol)
        else:
            _check_retag_reduced(f, _flat(t, sc.RETAG_MAX, np.float32),
                                 _flat(t, sc.RETAG_SILENCE_MIN, np.float32), width - 1, tol)


def completeness_problems(path: Path, ids, splits) -> list[str]:
    """What the build manifests (``_build/*.json``) list and the parts lack, per split.

    A cache without manifests (written by `casdri.cache.CacheWriter`) gives none.

    Args:
        path: cache folder; ids, splits: soundscape ids and their split tags (same order).
    """
    d = Path(path) / BUILD_DIR
    out: list[str] = []
    total: dict = {}
    for f in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            m = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            out.append(f"{f}: unreadable build manifest ({e}); completeness cannot be checked: "
                       "restore it from the build folder or rerun the build command")
            continue
        total.setdefault(m.get("split"), set()).add(m.get("n_total"))
    have: dict = {}
    for s in np.asarray(splits).astype(str).tolist():
        have[s] = have.get(s, 0) + 1
    for split, n in sorted(total.items(), key=lambda kv: str(kv[0])):
        n_total = max((x for x in n if isinstance(x, int)), default=None)
        got = have.get(str(split), 0)
        if n_total is not None and got < n_total:
            out.append(f"split {split!r}: the parts hold {got} of the {n_total} soundscapes "
                       "the build listed (a chunk or shard is missing or unfinished)")
    return out


def check_complete(path: Path, ids, splits, allow_incomplete: bool) -> None:
    """Refuse (or, with ``allow_incomplete``, warn about) a cache the build did not finish.

    Raises:
        CacheError: naming the cache, the split and the fix.
    """
    problems = completeness_problems(path, ids, splits)
    if not problems:
        return
    msg = (f"{path}: incomplete cache: {'; '.join(problems[:3])}; finish the build (rerun "
           "its command: it resumes), or pass --allow-incomplete (allow_incomplete=True in "
           "Python) to use what is there")
    if not allow_incomplete:
        raise CacheError(msg)
    warnings.warn(msg, stacklevel=3)
