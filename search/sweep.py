"""Exact 1-D threshold sweeps: score every interval between change points, take the best.

Conventions:
    * A decision threshold ``t`` in ``[lo, hi]`` is compared with cached values (probabilities,
      energies in dB). With everything else fixed, the dataset CAPI-SDRi is piecewise constant
      in ``t`` and can change only where ``t`` crosses a cached value (a *change point*). The
      open intervals between consecutive distinct change points (and ``lo`` / ``hi``) therefore
      cover every score ``t`` can reach, whether the policy compares with ``>`` or ``>=``; one
      interior point per interval (its midpoint) is scored.
    * Passing a superset of the true change points is exact too (it only splits intervals).
    * The best score wins; ties (within `TIE_TOL_DB`) merge adjacent intervals into runs and
      the midpoint of the **widest** best run is returned (the most robust setting), the lower
      run on equal widths.
    * Two faces, one result (sed_scores_eval's trick): `sweep_dense` scores every interval point
      over all soundscapes in one batch; `sweep_sparse` scores each soundscape only at its own
      change points and assembles the dataset score with a cumulative sum of per-clip deltas.
    * `sweep_sparse` can also score every interval on each *part* of the soundscapes (the
      halves of `search.acceptance`) from the same replays: the part scores sum exactly to the
      same numerators and counts as the dataset score.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from casdri._jit_cache import is_cached, njit_cached
from casdri.errors import InputError

__all__ = [
    "TIE_TOL_DB", "SweepResult", "interval_grid", "pick_best", "sweep_dense", "sweep_sparse",
    "distinct_points", "kernels_cached", "warm_up",
]

#: Scores closer than this (dB) count as tied (cumulative sums differ from a direct mean by
#: rounding only, ~1e-13 dB).
TIE_TOL_DB = 1e-9


@dataclass(frozen=True)
class SweepResult:
    """One exact sweep.

    Attributes:
        value: the chosen threshold (midpoint of the widest best run).
        score_db: dataset score at ``value``.
        edges: ``(m + 2,) float64`` ``[lo, change points..., hi]``.
        points: ``(m + 1,) float64`` interval midpoints that were scored.
        scores_db: ``(m + 1,) float64`` dataset score of each interval (NaN: no scored clip).
        n_evaluations: soundscape-settings replayed.
        group_scores_db: ``(G, m + 1) float64`` score of each interval on each part (when
            `sweep_sparse` was given ``groups``), else None.
    """

    value: float
    score_db: float
    edges: np.ndarray
    points: np.ndarray
    scores_db: np.ndarray
    n_evaluations: int
    group_scores_db: Optional[np.ndarray] = None

    def score_at(self, t: float) -> float:
        """Score of the interval holding ``t`` (right-continuous at change points)."""
        j = int(np.searchsorted(self.edges[1:-1], t, side="right"))
        return float(self.scores_db[j])


def interval_grid(change_points: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Edges and midpoints of the intervals that change points cut ``[lo, hi]`` into.

    Change points outside the open range ``(lo, hi)`` or non-finite are dropped; intervals too
    narrow to hold a float strictly inside are dropped (no threshold can land in them).

    Returns:
        ``edges`` ``(m + 2,)`` and ``points`` ``(m + 1,)``, both ``float64``, ascending.

    Example:
        >>> interval_grid(np.array([0.5, 0.25, 0.5, 2.0]), 0.0, 1.0)[1]
        array([0.125, 0.375, 0.75 ])
    """
    lo, hi = float(lo), float(hi)
    if not lo < hi:
        raise InputError(f"sweep range: expected lo < hi, got [{lo}, {hi}]")
    cp = np.asarray(change_points, dtype=np.float64).ravel()
    cp = np.unique(cp[np.isfinite(cp) & (cp > lo) & (cp < hi)])
    edges = np.concatenate([[lo], cp, [hi]])
    mids = 0.5 * (edges[:-1] + edges[1:])
    inside = (mids > edges[:-1]) & (mids < edges[1:])
    if not inside.all():  # merge intervals with no interior float into a neighbour
        keep_edge = np.concatenate([[True], inside[:-1], [True]])
        if not inside[-1] and edges.shape[0] > 2:
            keep_edge[-2] = False
        edges = edges[keep_edge]
        mids = 0.5 * (edges[:-1] + edges[1:])
    return edges, mids


def pick_best(edges: np.ndarray, scores_db: np.ndarray,
              tol: float = TIE_TOL_DB) -> tuple[float, int]:
    """Threshold at the midpoint of the widest run of best-scoring intervals.

    Returns:
        ``(value, index of the interval holding value)``.

    Raises:
        InputError: every score is NaN.

    Example:
        >>> pick_best(np.array([0.0, 0.1, 0.2, 0.9, 1.0]), np.array([1.0, 2.0, 2.0, 1.0]))
        (0.5, 2)
    """
    s = np.asarray(scores_db, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    if np.isnan(s).all():
        raise InputError("sweep: no interval has a defined score (every clip None)")
    best = np.nanmax(s)
    good = np.where(np.isnan(s), False, s >= best - tol)
    padded = np.concatenate([[False], good, [False]])
    starts = np.flatnonzero(padded[1:-1] & ~padded[:-2])  # runs of good intervals [a, b)
    ends = np.flatnonzero(padded[1:-1] & ~padded[2:]) + 1
    k = int(np.argmax(edges[ends] - edges[starts]))  # (the first of equally wide runs)
    a, b = int(starts[k]), int(ends[k])
    value = 0.5 * (edges[a] + edges[b])
    j = int(np.searchsorted(edges[1:-1], value, side="right"))
    return float(value), min(max(j, a), b - 1)


def sweep_dense(
    score_fn: Callable[[np.ndarray], np.ndarray],
    change_points: np.ndarray,
    lo: float,
    hi: float,
    n_soundscapes: int = 0,
) -> SweepResult:
    """Score every interval with one batch call and pick the best.

    Args:
        score_fn: maps ``(n,) float64`` thresholds to ``(n,) float64`` dataset scores (dB).
        change_points: cached values the threshold is compared with (a superset is fine).
        lo, hi: the threshold's range.
        n_soundscapes: soundscapes each call scores (only for the evaluation count).
    """
    edges, points = interval_grid(change_points, lo, hi)
    scores = np.asarray(score_fn(points), dtype=np.float64)
    value, _ = pick_best(edges, scores)
    j = int(np.searchsorted(edges[1:-1], value, side="right"))
    return SweepResult(value, float(scores[j]), edges, points, scores,
                       int(points.shape[0]) * max(int(n_soundscapes), 1))


def distinct_points(pos: np.ndarray, val: np.ndarray, inner: np.ndarray) -> tuple:
    """``(pos, val)`` of the change points that are inner edges of the grid (in range, finite,
    kept by `interval_grid`'s merge), sorted by soundscape then value, each pair once."""
    ok = np.isin(val, inner)
    p2, v2 = pos[ok], val[ok]
    order = np.lexsort((v2, p2))
    p2, v2 = p2[order], v2[order]
    if p2.size:
        dup = np.concatenate([[False], (p2[1:] == p2[:-1]) & (v2[1:] == v2[:-1])])
        p2, v2 = p2[~dup], v2[~dup]
    return p2, v2


@njit_cached(nogil=True)
def _local_intervals(p2, v2, ids, inner, lo, hi):  # pragma: no cover - jitted
    """Each affected soundscape's own intervals: ``thr`` their midpoints, ``start`` the first
    global interval each holds, ``owner`` the position in ``ids`` of its soundscape.

    ``p2``/``v2``: change points (soundscape, value) sorted by both and distinct, values
    inside the global grid; ``ids``: the affected soundscapes, ascending; ``inner``: the
    grid's inner edges. Soundscape ``ids[q]`` with ``m`` change points owns ``m + 1`` local
    intervals, ``[lo, v_1], [v_1, v_2], ..., [v_m, hi]``.
    """
    n = p2.shape[0] + ids.shape[0]
    thr = np.empty(n, np.float64)
    start = np.empty(n, np.int64)
    owner = np.empty(n, np.int64)
    i = 0  # next change point
    t = 0  # next local interval
    for q in range(ids.shape[0]):
        left = lo
        k = 0
        while True:
            last = i >= p2.shape[0] or p2[i] != ids[q]
            right = hi if last else v2[i]
            thr[t] = 0.5 * (left + right)
            start[t] = 0 if k == 0 else np.searchsorted(inner, left) + 1
            owner[t] = q
            t += 1
            if last:
                break
            left = right
            i += 1
            k += 1
    return thr, start, owner


@njit_cached(nogil=True)
def _interval_sums(values, start, owner, g_of, n_g, n_int, base_s, base_c):  # pragma: no cover
    """Per part ``g`` and global interval ``j``: the sum and count of non-None values
    (``base`` plus the cumulative per-clip deltas, in local-interval order), and their sums
    over the parts: ``(g_total (G, n_int), g_count (G, n_int), total (n_int,), count
    (n_int,))``. A clip's value enters at its first local interval's start and changes at
    each later one's; summation orders are fixed (deltas in input order, then a running sum
    per part, then the parts in order)."""
    d_sum = np.zeros((n_g, n_int), np.float64)
    d_cnt = np.zeros((n_g, n_int), np.float64)
    prev_s = 0.0
    prev_c = 0.0
    for t in range(values.shape[0]):
        v = values[t]
        ok = v == v
        vs = v if ok else 0.0
        vc = 1.0 if ok else 0.0
        if t == 0 or owner[t] != owner[t - 1]:
            prev_s = 0.0
            prev_c = 0.0
        g = g_of[owner[t]]
        d_sum[g, start[t]] += vs - prev_s
        d_cnt[g, start[t]] += vc - prev_c
        prev_s = vs
        prev_c = vc
    g_total = np.empty((n_g, n_int), np.float64)
    g_count = np.empty((n_g, n_int), np.float64)
    for g in range(n_g):
        run_s = 0.0
        run_c = 0.0
        for j in range(n_int):
            run_s += d_sum[g, j]
            run_c += d_cnt[g, j]
            g_total[g, j] = base_s[g] + run_s
            g_count[g, j] = base_c[g] + np.rint(run_c)
    total = g_total[0].copy()
    count = g_count[0].copy()
    for g in range(1, n_g):
        for j in range(n_int):
            total[j] += g_total[g, j]
            count[j] += g_count[g, j]
    return g_total, g_count, total, count


def sweep_sparse(
    clip_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    clip_pos: np.ndarray,
    clip_values: np.ndarray,
    lo: float,
    hi: float,
    base_sum_db=0.0,
    base_count=0,
    groups: Optional[np.ndarray] = None,
) -> SweepResult:
    """Exact sweep that replays each affected soundscape only at its own change points.

    The dataset score of interval ``j`` is ``(base_sum + Σ_s v_s(j)) / (base_count + Σ_s
    [v_s(j) not None])`` where ``s`` runs over the affected soundscapes; each ``v_s`` is
    constant between its own change points, so it is scored once per local interval (at the
    local interval's midpoint) and enters the global intervals as deltas summed cumulatively.

    Args:
        clip_fn: ``clip_fn(thresholds (n,), soundscapes (n,)) -> (n,)`` per-soundscape
            CAPI-SDRi (NaN for None), all pairs in one batch.
        clip_pos: ``(m,) int`` the soundscape of each change point (any order, repeats); every
            soundscape named here counts as affected.
        clip_values: ``(m,) float`` the change points.
        lo, hi: the threshold's range.
        base_sum_db, base_count: sum and number of non-None values of the soundscapes the
            threshold does not affect (scored once, at the current setting); ``(G,)`` arrays
            (one per part) when ``groups`` is given.
        groups: ``(n,) int`` part (0..G-1) of every soundscape position ``clip_pos`` can name;
            when given, the result also holds the score of every interval on each part.
    """
    pos = np.asarray(clip_pos, dtype=np.int64).ravel()
    val = np.asarray(clip_values, dtype=np.float64).ravel()
    if pos.shape != val.shape:
        raise InputError("sweep_sparse: clip_pos and clip_values must have the same length")
    ids = np.unique(pos)
    edges, points = interval_grid(val, lo, hi)
    inner = edges[1:-1]
    n_int = points.shape[0]
    p2, v2 = distinct_points(pos, val, inner)
    thr, start, owner = _local_intervals(p2, v2, ids, inner, float(lo), float(hi))
    values = (np.asarray(clip_fn(thr, ids[owner]), dtype=np.float64) if thr.size
              else np.zeros(0))
    if groups is None:
        g_of, n_g = np.zeros(ids.shape[0], np.int64), 1
        base_s, base_c = np.array([base_sum_db], np.float64), np.array([base_count], np.float64)
    else:
        groups = np.asarray(groups, np.int64)
        n_g = int(groups.max()) + 1 if groups.size else 1
        g_of = groups[ids]
        base_s = np.ascontiguousarray(np.broadcast_to(np.asarray(base_sum_db, np.float64), (n_g,)))
        base_c = np.ascontiguousarray(np.broadcast_to(np.asarray(base_count, np.float64), (n_g,)))
    g_total, g_count, total, count = _interval_sums(values, start, owner, g_of, n_g, n_int,
                                                    base_s, base_c)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        g_scores = np.where(g_count > 0, g_total / np.maximum(g_count, 1), np.nan)
    value, j = pick_best(edges, scores)
    return SweepResult(value, float(scores[j]), edges, points, scores, int(values.shape[0]),
                       None if groups is None else g_scores)


def kernels_cached() -> bool:
    """True when the sweep's jitted passes are compiled or in Numba's on-disk cache (a cheap
    check: it compiles nothing)."""
    return is_cached(_local_intervals) and is_cached(_interval_sums)


def warm_up() -> None:
    """Compile (or load from the disk cache) the sweep's jitted passes, with and without
    parts, on a two-soundscape sweep (about 2 s the first time on a machine)."""
    for groups in (None, np.array([0, 1])):
        base = 0.0 if groups is None else np.zeros(2)
        sweep_sparse(lambda ts, ids: ts, np.array([0, 1]), np.array([0.5, 0.25]), 0.0, 1.0,
                     base, base, groups=groups)
