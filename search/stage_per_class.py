"""``per-class`` stage: per-class verify, drop, probability-gate and silence thresholds.

Conventions:
    * The thresholds moved are the policy's search plan for ``per-class`` (``problem.plan``).
    * First one **global** move per threshold (plan order): one shared value for
      every class, swept exactly, or the threshold switched fully off/on
      (`search.moves.threshold_ends`). Then one class at a time (label-set order), its
      thresholds in plan order, each starting from the shared value and swept
      exactly over its change points on the tune soundscapes (`search.moves.best_move`).
    * Every move is kept only when the chain's acceptance rule keeps it
      (`search.acceptance`; ``ctx.acceptance()``): a class moves away from the shared value only
      on cross-fitted evidence, which is the shrinkage toward the shared value.
"""
from __future__ import annotations

from tqdm.auto import tqdm

from .moves import best_move
from .stage_base import StageContext, StageRecord
from .stage_joint import stage_params

__all__ = ["run_per_class", "per_class_params"]


def per_class_params(problem) -> list:
    """The per-class numeric `Param` objects this stage moves (one place to read the plan)."""
    return [p for p in stage_params(problem, "per-class")
            if p.per_class and not p.categorical]


def run_per_class(x, start: float, ctx: StageContext) -> StageRecord:
    """Global then per-class threshold sweeps from ``x`` (tune score ``start``)."""
    obj = ctx.objective
    acc = ctx.acceptance()
    params = per_class_params(obj.problem)
    x, score = x.copy(), start
    x0 = x.copy()
    moves = []
    n_cls = obj.problem.n_classes
    coords = [(p, None) for p in params] + [(p, c) for c in range(n_cls) for p in params]
    bar = tqdm(total=len(coords), desc=f"{ctx.fold} per-class", disable=not ctx.progress,
               leave=False)
    for p, c in coords:
        m = best_move(obj, x, p, c, score, accept=acc)
        moves.append(m)
        if m.kept:
            x[p.columns if c is None else p.columns[[c]]] = m.value
            score = m.score_db
        bar.update(1)
    bar.close()
    note = "" if params else "the policy's search plan has no per-class threshold"
    return StageRecord("per-class", ctx.fold, "sweep" if params else "none", start, score, x0, x,
                       moves=moves, trials=_rows(moves, ctx, "per-class", obj.problem), note=note)


def _rows(moves, ctx, stage, problem) -> list:
    names = problem.class_names
    rows = []
    for i, m in enumerate(moves):
        ev = m.evidence
        rows.append({
            "fold": ctx.fold, "stage": stage, "engine": m.engine, "number": i,
            "state": "COMPLETE", "score_db": m.best_score_db, "param": m.param,
            "class": None if m.cls is None else names[m.cls], "old_value": m.old_value,
            "value": m.best_value, "old_score_db": m.old_score_db, "kept": m.kept,
            "honest_gain_db": float("nan") if ev is None else ev.honest_gain_db,
            "p_value": float("nan") if ev is None else ev.p_value,
            "n_changed": 0 if ev is None else ev.n_changed,
            "why": "" if ev is None else ev.reason})
    return rows
