"""One-parameter moves: the best value of one coordinate with everything else fixed.

Conventions:
    * A threshold on cached values is swept exactly (`search.sweep.sweep_sparse`): only the
      tune soundscapes whose decision it can change are replayed, each at its own change points.
    * A numeric parameter with no change points (a fusion weight) is scored on a uniform grid of
      `GRID_POINTS` values plus its current value; a categorical one on all its choices.
    * A *global* move (``cls=None``) of a per-class threshold writes one shared value into every
      class column; besides its exact sweep it offers the threshold's ends (`threshold_ends`:
      ``low``, ``high`` and the policy's declared "off" value, e.g. ``energy_gate_db = -inf``,
      ``silence_thr = +inf``; ``prob_gate = 0`` gates nothing): the gate switched fully off or
      on for every class. Only values the policy's validation allows are offered, so a tuned
      policy always loads in ``casdri-cache apply``.
    * Whether a move is *kept* is decided by `search.acceptance.Acceptance` (the evidence rule:
      cross-fitted over the halves of the tune set, the whole selection runs on each half; or
      the old absolute ``margin``). Under the evidence rule the value written is chosen on all
      tune soundscapes by the one-standard-error rule (the candidate nearest the current value
      among those within one standard error of the best); under the margin rule, the best.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from casdri.replay import scored_mean

from .acceptance import (TIE_DB, Acceptance, Evidence, choose_on_parts, gain_standard_error,
                         honest_values, part_scores, simplest_within_se)
from .objective import Objective, Param, with_values
from .sweep import TIE_TOL_DB, SweepResult, pick_best, sweep_sparse

__all__ = ["GRID_POINTS", "threshold_ends", "Move", "best_move"]

#: Grid size for numeric parameters that are not thresholds on cached values.
GRID_POINTS = 33
#: A sweep's predicted score and the replayed score of its choice must agree to this (dB).
CHECK_TOL_DB = 1e-7
#: A sweep whose predicted gain is at most this (dB) is decided without its halves: its scored
#: gain differs from the prediction by rounding (~1e-13 dB), so it stays <=
#: `search.acceptance.TIE_DB` and the rule keeps nothing (should it not, the full path runs).
NO_GAIN_DB = TIE_DB / 2


def threshold_ends(param: Param) -> tuple:
    """Extra candidates of a global threshold move: the range ends and the declared "off"
    value (``param.off``, e.g. ``-inf`` for an energy gate), sorted, each a value the
    policy's validation allows."""
    vals = {float(param.low), float(param.high)}
    if getattr(param, "off", None) is not None:
        vals.add(float(param.off))
    return tuple(sorted(vals))


@dataclass
class Move:
    """The best value of one coordinate.

    Attributes:
        param, cls: the coordinate (``cls`` None: every column of ``param`` together).
        old_value, best_value: its value before and the best value found.
        old_score_db, best_score_db: tune scores before and at ``best_value`` (replayed).
        kept: the acceptance rule keeps the move (`evidence` says why).
        engine: ``"sweep"`` (exact), ``"grid"`` or ``"choices"``.
        points, scores_db: what was scored (for the report's score-against-threshold plots);
        edges: interval edges of a sweep.
        evidence: the `search.acceptance.Evidence` of the decision.
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
    evidence: Optional[Evidence] = None

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


def _unchanged(x: np.ndarray, param: Param, cls: Optional[int], value: float) -> bool:
    """True when writing ``value`` leaves ``x`` as it is (every column of a global move)."""
    cols = param.columns if cls is None else param.columns[[cls]]
    return bool(np.all(x[cols] == value))


def best_move(obj: Objective, x: np.ndarray, param: Param, cls: Optional[int], score_db: float,
              margin: float = 0.05, exact: bool = True,
              accept: Optional[Acceptance] = None) -> Move:
    """Best value of ``param`` (class ``cls``) from setting ``x`` whose tune score is ``score_db``.

    Args:
        obj: tune objective.
        x: ``(P,)`` current setting (not modified).
        param: the parameter; cls: its class column, or None for all columns together (a
            global move; thresholds also try `threshold_ends`).
        score_db: ``obj.score(x)`` (passed in to save a replay).
        margin: dB a move must gain to be kept when ``accept`` is None (the margin rule).
        exact: use change points when the problem has them (``False``: the grid, for tests).
        accept: the acceptance rule (`search.acceptance.Acceptance`, its ``parts`` the halves of
            ``obj``'s tune soundscapes); None: ``Acceptance("margin", margin_db=margin)``.

    Returns:
        `Move` (``kept`` and ``evidence`` from the rule).
    """
    acc = accept if accept is not None else Acceptance("margin", margin_db=margin)
    parts = np.asarray(acc.parts) if acc.cross_fitted else None
    v0 = obj.values(x[None, :])[0] if parts is not None else None
    old = _current(x, param, cls)
    if param.categorical:
        pts = np.asarray(param.choices, dtype=np.float64)
        V = obj.values(with_values(x, param, pts, cls))
        scores = scored_mean(V)
        j = _first_best(scores)
        halves = _pick_rows(V, pts, parts, v0, old) if parts is not None else None
        return _finish(obj, x, param, cls, old, float(pts[j]), float(scores[j]), score_db, acc,
                       "choices", pts, scores, None, v0, halves)
    cps = obj.problem.change_points(param.name, cls, x, obj.idx) if exact else None
    if cps is not None and not param.integer:
        moved = _moved(obj, cps)
        base = obj.values(x[None, :])[0] if v0 is None else v0  # (the margin rule has none)
        res = _sparse(obj, x, param, cls, cps, parts, v0, moved)
        incremental = lambda X: obj.values_moved(X, base, moved)  # noqa: E731
        new, predicted = res.value, res.score_db
        ends = threshold_ends(param) if (cls is None and param.per_class) else ()
        Ve = obj.values(with_values(x, param, ends, cls)) if ends else np.zeros((0, 0))
        if ends:
            se = scored_mean(Ve)
            k = _first_best(se)
            if np.isfinite(se[k]) and (not np.isfinite(predicted)
                                       or se[k] > predicted + TIE_TOL_DB):
                new, predicted = float(ends[k]), float(se[k])
        if np.isfinite(score_db) and np.isfinite(predicted) and predicted - score_db <= NO_GAIN_DB:
            m = _finish(obj, x, param, cls, old, new, predicted, score_db, acc, "sweep",
                        res.points, res.scores_db, res.edges, v0, None, incremental)
            if not m.evidence.tune_gain_db > TIE_DB:  # dropped as the full path drops it
                return m
        halves = None
        if parts is not None:
            halves = _pick_sweep(
                res, lambda v: _unchanged(x, param, cls, v), np.asarray(ends), Ve, parts, v0,
                lambda v: incremental(with_values(x, param, [v], cls))[0], old)
        return _finish(obj, x, param, cls, old, new, predicted, score_db, acc,
                       "sweep", res.points, res.scores_db, res.edges, v0, halves, incremental)
    pts = np.linspace(param.low, param.high, GRID_POINTS)
    if param.integer:
        pts = np.unique(np.round(pts))
    pts = np.unique(np.concatenate([pts, [old]]))
    V = obj.values(with_values(x, param, pts, cls))
    scores = scored_mean(V)
    edges = np.concatenate([[pts[0]], 0.5 * (pts[:-1] + pts[1:]), [pts[-1]]])
    if param.integer or np.isnan(scores).all():
        j = _first_best(scores)
    else:
        value, j = pick_best(edges, scores)
    halves = _pick_rows(V, pts, parts, v0, old) if parts is not None else None
    return _finish(obj, x, param, cls, old, float(pts[j]), float(scores[j]), score_db, acc,
                   "grid", pts, scores, None, v0, halves)


def _first_best(scores: np.ndarray) -> int:
    s = np.where(np.isnan(scores), -np.inf, scores)
    return int(np.argmax(s))


def _pick_rows(V, pts, parts, v0, old) -> list:
    """Per half: ``(value, its values on the tune set)`` of the row the full selection would
    write were that half the tune set (best, then the one-standard-error rule toward ``old``),
    or None when no row beats the current setting there."""
    cur = part_scores(v0[None, :], parts)[:, 0]
    S = part_scores(V, parts)
    j = choose_on_parts(S, cur)
    cost = np.abs(pts - old) if np.isfinite(old) else np.zeros_like(pts)
    out = []
    for g, jg in enumerate(j):
        if jg < 0:
            out.append(None)
            continue
        on = parts == g
        k = simplest_within_se(S[g], S[g, jg], gain_standard_error(v0[on], V[jg][on]), cur[g],
                               cost)
        k = jg if k < 0 else k
        out.append((float(pts[k]), V[k]))
    return out


def _pick_sweep(res: SweepResult, unchanged, ends, Ve, parts, v0, values_at, old) -> list:
    """Per half, ``(value, its values on the tune set or None)``: the value the full
    selection would write if that half were the tune set (the sweep's widest best run on the
    half, or a better end, then the one-standard-error rule on the half: the interval nearest
    the current value within one standard error); None when nothing beats the current value
    there."""
    cur = part_scores(v0[None, :], parts)[:, 0]
    se = part_scores(Ve, parts) if ends.size else np.zeros((2, 0))
    out = []
    for g in (0, 1):
        gs = res.group_scores_db[g]
        cand_v, cand_s = [], []
        if not np.isnan(gs).all():
            value, j = pick_best(res.edges, gs)
            cand_v.append(value)
            cand_s.append(gs[j])
        cand_v.extend(ends.tolist())
        cand_s.extend(se[g].tolist())
        if not cand_v:
            out.append(None)
            continue
        k = int(choose_on_parts(np.array([cand_s]), np.array([cur[g]]))[0])
        if k < 0 or unchanged(cand_v[k]):
            out.append(None)
            continue
        value = float(cand_v[k])
        if k == 0 and np.isfinite(value) and not np.isnan(gs).all():  # the sweep's best: 1-SE
            on = parts == g
            v_best = values_at(value)
            se_g = gain_standard_error(v0[on], v_best[on])
            pts = res.points
            cost = np.abs(pts - old) if np.isfinite(old) else (pts if old < 0 else -pts)
            j = simplest_within_se(gs, cand_s[0], se_g, cur[g], cost)
            if j >= 0 and pts[j] != value and not unchanged(pts[j]):
                out.append((float(pts[j]), None))
                continue
            out.append((value, v_best))  # (its values, already replayed)
            continue
        out.append((value, None))
    return out


def _moved(obj: Objective, cps) -> np.ndarray:
    """``(n_tune,) bool``: the tune soundscapes the change points ``cps`` name (the only ones
    the coordinate can change)."""
    moved = np.zeros(obj.idx.shape[0], dtype=bool)
    moved[np.asarray(cps[0], np.int64)] = True
    return moved


def _sparse(obj: Objective, x, param: Param, cls, cps, parts=None, v0=None,
            moved=None) -> SweepResult:
    pos, values = cps
    moved = _moved(obj, cps) if moved is None else moved
    if parts is None:
        base_sum, base_count = obj.sums(x, ~moved)
    else:  # per half, from the current values already replayed
        ok = ~moved & ~np.isnan(v0)
        base_sum = np.array([v0[ok & (parts == g)].sum() for g in (0, 1)])
        base_count = np.array([(ok & (parts == g)).sum() for g in (0, 1)], np.float64)
    col = param.columns if cls is None else param.columns[[cls]]

    def clip_fn(thresholds: np.ndarray, local: np.ndarray) -> np.ndarray:
        X = np.repeat(x[None, :], thresholds.shape[0], axis=0)
        X[:, col] = thresholds[:, None]
        return obj.pair_values(X, obj.idx[local])

    return sweep_sparse(clip_fn, pos, values, param.low, param.high, base_sum, base_count,
                        groups=parts)


def _one_se(obj, x, param, cls, old, new, replayed, score_db, pts, scores, v0, engine):
    """The one-standard-error rule (`search.acceptance.simplest_within_se`): the scored point
    nearest the current value among those within one standard error of the best."""
    v_best = obj.values(with_values(x, param, [new], cls))[0]
    se = gain_standard_error(v0, v_best)
    cost = np.abs(pts - old) if np.isfinite(old) else (pts if old < 0 else -pts)
    j = simplest_within_se(scores, replayed, se, score_db, cost)
    if j < 0 or pts[j] == new:
        return new, replayed
    r = obj.score(with_values(x, param, [pts[j]], cls)[0])
    if not (np.isfinite(r) and r > score_db) or (
            engine == "sweep" and abs(r - scores[j]) > CHECK_TOL_DB):
        return new, replayed  # the replay is the truth: keep the best
    return float(pts[j]), r


def _finish(obj, x, param, cls, old, new, predicted, score_db, acc, engine, pts, scores, edges,
            v0=None, halves=None, values=None):
    """The move's result: its choice scored (the truth a sweep's prediction is checked
    against) and the acceptance rule's verdict. ``values``: the per-soundscape values of
    settings (``obj.values`` by default; a sweep's `Objective.values_moved`, which replays
    only the soundscapes its change points name). A kept move scored that way is replayed in
    full as well: should the two differ (change points that miss a soundscape, a bug to
    report), it warns and decides the move again with full replays of its choice and of the
    halves' candidates (the halves' choices stay those made on the incremental values)."""
    incremental = values is not None
    values = obj.values if values is None else values

    def score_of(v) -> float:
        return float(scored_mean(values(with_values(x, param, [v], cls)))[0])

    same = _unchanged(x, param, cls, new)
    replayed = score_of(new) if not same else score_db
    if engine == "sweep" and np.isfinite(predicted) and abs(replayed - predicted) > CHECK_TOL_DB:
        # the midpoint of a tied run sat on a change point: take the widest single interval
        j = int(np.searchsorted(edges[1:-1], new, side="right"))
        good = np.flatnonzero(np.isclose(scores, predicted, rtol=0, atol=1e-9))
        j = int(good[np.argmax(np.diff(edges)[good])]) if good.size else j
        new = float(pts[j])
        same = _unchanged(x, param, cls, new)
        replayed = score_of(new) if not same else score_db
        if abs(replayed - predicted) > CHECK_TOL_DB:  # the replay is the truth; keep going
            warnings.warn(
                f"exact sweep of {param.name}[{cls}] predicted {predicted!r} dB at {new!r} but "
                f"the replay gives {replayed!r} dB: the change points miss a decision boundary "
                "(please report); the replayed score is used", RuntimeWarning, stacklevel=3)
    gain = (replayed - score_db) if np.isfinite(score_db) else (
        np.inf if np.isfinite(replayed) else np.nan)
    honest = None
    if halves is not None and np.isfinite(replayed) and gain > 0:
        need = [h[0] for h in halves if h is not None and h[1] is None]
        got = dict(zip(need, values(with_values(x, param, need, cls)))) if need else {}
        honest = honest_values(v0, [None if h is None else (h[1] if h[1] is not None
                                                             else got[h[0]]) for h in halves],
                               acc.parts)
    ev = acc.judge(float(gain), v0, honest)
    kept = bool(np.isfinite(replayed) and ev.accepted)
    if kept and incremental and not same and obj.score(
            with_values(x, param, [new], cls)[0]) != replayed:
        warnings.warn(
            f"{param.name}[{cls}] = {new!r}: the replay of the soundscapes its change points "
            "name differs from the full replay (please report); decided on full replays",
            RuntimeWarning, stacklevel=3)
        full = None if halves is None else [None if h is None else (h[0], None)
                                             for h in halves]  # (their values replayed anew)
        return _finish(obj, x, param, cls, old, new, predicted, score_db, acc, engine, pts,
                       scores, edges, v0, full)
    if kept and acc.cross_fitted and engine in ("sweep", "grid") and np.isfinite(new) \
            and np.isfinite(score_db):
        new, replayed = _one_se(obj, x, param, cls, old, new, replayed, score_db, pts, scores,
                                v0, engine)
    return Move(param.name, cls, old, new, score_db, replayed, kept, engine, pts, scores, edges,
                ev)
