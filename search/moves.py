"""One-parameter moves: the best value of one coordinate with everything else fixed.

Conventions:
    * A threshold on cached values is swept exactly (`search.sweep.sweep_sparse`): only the
      tune soundscapes whose decision it can change are replayed, each at its own change points.
    * A numeric parameter with no change points (a fusion weight) is scored on a uniform grid of
      `GRID_POINTS` values plus its current value; a categorical one on all its choices.
    * A move is *kept* only when it beats the current score by more than ``margin`` dB.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .objective import Objective, Param, with_values
from .sweep import SweepResult, pick_best, sweep_sparse

__all__ = ["GRID_POINTS", "Move", "best_move"]

#: Grid size for numeric parameters that are not thresholds on cached values.
GRID_POINTS = 33
#: A sweep's predicted score and the replayed score of its choice must agree to this (dB).
CHECK_TOL_DB = 1e-7


@dataclass
class Move:
    """The best value of one coordinate.

    Attributes:
        param, cls: the coordinate (``cls`` None: every column of ``param`` together).
        old_value, best_value: its value before and the best value found.
        old_score_db, best_score_db: tune scores before and at ``best_value`` (replayed).
        kept: ``best_score_db > old_score_db + margin``.
        engine: ``"sweep"`` (exact), ``"grid"`` or ``"choices"``.
        points, scores_db: what was scored (for the report's score-against-threshold plots);
        edges: interval edges of a sweep.
    """

    param: str
    cls: Optional[int]
    old_value: float
    best_value: float
    old_score_db: float
    best_score_db: float
    kept: bool
    engine: str
    points: np.ndarray
    scores_db: np.ndarray
    edges: Optional[np.ndarray] = None

    @property
    def value(self) -> float:
        """The coordinate's value after the move (the old one unless kept)."""
        return self.best_value if self.kept else self.old_value

    @property
    def score_db(self) -> float:
        return self.best_score_db if self.kept else self.old_score_db

    def score_at(self, t: float) -> float:
        """Swept score of the interval holding ``t`` (sweeps only)."""
        j = int(np.searchsorted(self.edges[1:-1], t, side="right"))
        return float(self.scores_db[j])


def _current(x: np.ndarray, param: Param, cls: Optional[int]) -> float:
    return float(x[param.columns[0] if cls is None else param.columns[cls]])


def best_move(obj: Objective, x: np.ndarray, param: Param, cls: Optional[int], score_db: float,
              margin: float, exact: bool = True) -> Move:
    """Best value of ``param`` (class ``cls``) from setting ``x`` whose tune score is ``score_db``.

    Args:
        obj: tune objective.
        x: ``(P,)`` current setting (not modified).
        param: the parameter; cls: its class column, or None for all columns together.
        score_db: ``obj.score(x)`` (passed in to save a replay).
        margin: dB a move must gain to be kept.
        exact: use change points when the problem has them (``False``: the grid, for tests).
    """
    old = _current(x, param, cls)
    if param.categorical:
        pts = np.asarray(param.choices, dtype=np.float64)
        scores = obj.scores(with_values(x, param, pts, cls))
        j = _first_best(scores)
        return _finish(obj, x, param, cls, old, float(pts[j]), float(scores[j]), score_db, margin,
                       "choices", pts, scores, None)
    cps = obj.problem.change_points(param.name, cls, x, obj.idx) if exact else None
    if cps is not None and not param.integer:
        res = _sparse(obj, x, param, cls, cps)
        return _finish(obj, x, param, cls, old, res.value, res.score_db, score_db, margin,
                       "sweep", res.points, res.scores_db, res.edges)
    pts = np.linspace(param.low, param.high, GRID_POINTS)
    if param.integer:
        pts = np.unique(np.round(pts))
    pts = np.unique(np.concatenate([pts, [old]]))
    scores = obj.scores(with_values(x, param, pts, cls))
    edges = np.concatenate([[pts[0]], 0.5 * (pts[:-1] + pts[1:]), [pts[-1]]])
    if param.integer or np.isnan(scores).all():
        j = _first_best(scores)
    else:
        value, j = pick_best(edges, scores)
    return _finish(obj, x, param, cls, old, float(pts[j]), float(scores[j]), score_db, margin,
                   "grid", pts, scores, None)


def _first_best(scores: np.ndarray) -> int:
    s = np.where(np.isnan(scores), -np.inf, scores)
    return int(np.argmax(s))


def _sparse(obj: Objective, x, param: Param, cls, cps) -> SweepResult:
    pos, values = cps
    moved = np.zeros(obj.idx.shape[0], dtype=bool)
    moved[pos] = True
    base_sum, base_count = obj.sums(x, ~moved)
    col = param.columns if cls is None else param.columns[[cls]]

    def clip_fn(thresholds: np.ndarray, local: np.ndarray) -> np.ndarray:
        X = np.repeat(x[None, :], thresholds.shape[0], axis=0)
        X[:, col] = thresholds[:, None]
        return obj.pair_values(X, obj.idx[local])

    return sweep_sparse(clip_fn, pos, values, param.low, param.high, base_sum, base_count)


def _finish(obj, x, param, cls, old, new, predicted, score_db, margin, engine, pts, scores, edges):
    replayed = obj.score(with_values(x, param, [new], cls)[0]) if new != old else score_db
    if engine == "sweep" and np.isfinite(predicted) and abs(replayed - predicted) > CHECK_TOL_DB:
        # the midpoint of a tied run sat on a change point: take the widest single interval
        j = int(np.searchsorted(edges[1:-1], new, side="right"))
        good = np.flatnonzero(np.isclose(scores, predicted, rtol=0, atol=1e-9))
        j = int(good[np.argmax(np.diff(edges)[good])]) if good.size else j
        new = float(pts[j])
        replayed = obj.score(with_values(x, param, [new], cls)[0]) if new != old else score_db
        if abs(replayed - predicted) > CHECK_TOL_DB:  # the replay is the truth; keep going
            warnings.warn(
                f"exact sweep of {param.name}[{cls}] predicted {predicted!r} dB at {new!r} but "
                f"the replay gives {replayed!r} dB: the change points miss a decision boundary "
                "(please report); the replayed score is used", RuntimeWarning, stacklevel=3)
    kept = bool(np.isfinite(replayed)
                and (not np.isfinite(score_db) or replayed > score_db + margin))
    return Move(param.name, cls, old, new, score_db, replayed, kept, engine, pts, scores, edges)
