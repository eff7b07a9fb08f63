"""``per-class`` stage: per-class verify, drop, probability-gate and silence thresholds.

Conventions:
    * One class at a time (label-set order), its thresholds in `PER_CLASS_PARAMS` order; each
      threshold is swept exactly over its change points on the tune soundscapes
      (`search.moves.best_move`) and the change is kept only when it beats the current score by
      more than ``margin`` dB.
"""
from __future__ import annotations

from tqdm.auto import tqdm

from .moves import best_move
from .stage_joint import stage_params
from .stages import StageContext, StageRecord

__all__ = ["PER_CLASS_PARAMS", "run_per_class"]

PER_CLASS_PARAMS = ("verify_thr", "drop_thr", "prob_gate", "silence_thr")


def run_per_class(x, start: float, ctx: StageContext) -> StageRecord:
    """Per-class threshold sweeps from ``x`` (tune score ``start``)."""
    obj = ctx.objective
    params = [p for p in stage_params(obj.problem, PER_CLASS_PARAMS)
              if p.per_class and not p.categorical]
    x, score = x.copy(), start
    x0 = x.copy()
    moves = []
    n_cls = obj.problem.n_classes
    bar = tqdm(total=n_cls * len(params), desc=f"{ctx.fold} per-class", disable=not ctx.progress,
               leave=False)
    for c in range(n_cls):
        for p in params:
            m = best_move(obj, x, p, c, score, ctx.margin)
            moves.append(m)
            if m.kept:
                x[p.columns[c]] = m.value
                score = m.score_db
            bar.update(1)
    bar.close()
    note = "" if params else f"the policy has no per-class {PER_CLASS_PARAMS}"
    return StageRecord("per-class", ctx.fold, "sweep" if params else "none", start, score, x0, x,
                       moves=moves, trials=_rows(moves, ctx, "per-class", obj.problem), note=note)


def _rows(moves, ctx, stage, problem) -> list:
    names = problem.class_names
    return [{"fold": ctx.fold, "stage": stage, "engine": m.engine, "number": i,
             "state": "COMPLETE", "score_db": m.best_score_db, "param": m.param,
             "class": None if m.cls is None else names[m.cls], "old_value": m.old_value,
             "value": m.best_value, "old_score_db": m.old_score_db, "kept": m.kept}
            for i, m in enumerate(moves)]
