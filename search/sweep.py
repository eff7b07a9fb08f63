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

from casdri.errors import InputError

__all__ = [
    "TIE_TOL_DB", "SweepResult", "interval_grid", "pick_best", "sweep_dense", "sweep_sparse",
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
    if np.isnan(s).all():
        raise InputError("sweep: no interval has a defined score (every clip None)")
    best = np.nanmax(s)
    good = np.where(np.isnan(s), False, s >= best - tol)
    runs, start = [], None
    for j, g in enumerate(good):
        if g and start is None:
            start = j
        if not g and start is not None:
            runs.append((start, j))
            start = None
    if start is not None:
        runs.append((start, len(good)))
    widths = [edges[b] - edges[a] for a, b in runs]
    a, b = runs[int(np.argmax(widths))]
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
    ok = np.isin(val, inner)  # in range, finite, and kept by the narrow-interval merge
    p2, v2 = pos[ok], val[ok]
    order = np.lexsort((v2, p2))
    p2, v2 = p2[order], v2[order]
    if p2.size:
        dup = np.concatenate([[False], (p2[1:] == p2[:-1]) & (v2[1:] == v2[:-1])])
        p2, v2 = p2[~dup], v2[~dup]
    first = np.searchsorted(p2, ids, side="left")
    m = np.searchsorted(p2, ids, side="right") - first
    n_local = m + 1
    group = np.repeat(np.arange(ids.shape[0]), n_local)
    k = np.arange(int(n_local.sum())) - np.repeat(np.cumsum(n_local) - n_local, n_local)
    last_k = k == m[group]
    li = np.clip(first[group] + k - 1, 0, max(v2.shape[0] - 1, 0))
    ri = np.clip(first[group] + k, 0, max(v2.shape[0] - 1, 0))
    v2_or = v2 if v2.size else np.zeros(1)
    left = np.where(k == 0, float(lo), v2_or[li])
    right = np.where(last_k, float(hi), v2_or[ri])
    thr = 0.5 * (left + right)
    start = np.where(k == 0, 0, np.searchsorted(inner, left) + 1)
    values = (np.asarray(clip_fn(thr, ids[group]), dtype=np.float64) if thr.size
              else np.zeros(0))
    okv = ~np.isnan(values)
    vs, vc = np.where(okv, values, 0.0), okv.astype(np.float64)
    prev_vs = np.where(k == 0, 0.0, np.roll(vs, 1))
    prev_vc = np.where(k == 0, 0.0, np.roll(vc, 1))
    if groups is None:
        g_of, n_g = np.zeros(start.shape[0], np.int64), 1
        base_s, base_c = np.array([base_sum_db], np.float64), np.array([base_count], np.float64)
    else:
        groups = np.asarray(groups, np.int64)
        n_g = int(groups.max()) + 1 if groups.size else 1
        g_of = groups[ids[group]]
        base_s = np.broadcast_to(np.asarray(base_sum_db, np.float64), (n_g,))
        base_c = np.broadcast_to(np.asarray(base_count, np.float64), (n_g,))
    key = g_of * n_int + start
    d_sum = np.bincount(key, weights=vs - prev_vs, minlength=n_g * n_int).reshape(n_g, n_int)
    d_cnt = np.bincount(key, weights=vc - prev_vc, minlength=n_g * n_int).reshape(n_g, n_int)
    g_total = base_s[:, None] + np.cumsum(d_sum, axis=1)
    g_count = base_c[:, None] + np.rint(np.cumsum(d_cnt, axis=1))
    total, count = g_total.sum(0), g_count.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        g_scores = np.where(g_count > 0, g_total / np.maximum(g_count, 1), np.nan)
    value, j = pick_best(edges, scores)
    return SweepResult(value, float(scores[j]), edges, points, scores, int(values.shape[0]),
                       None if groups is None else g_scores)
