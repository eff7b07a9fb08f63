"""``refine`` stage: coordinate descent over every parameter until no move is kept.

Conventions:
    * A pass visits every coordinate in policy field order: each scalar parameter; for each
      per-class parameter first its **global** move (one shared value for every class, or the
      threshold switched fully off/on, `search.moves.threshold_ends`), then each class column
      (exact sweeps where the parameter is a threshold on cached values, a grid or the choices
      otherwise).
    * A move is kept when the chain's acceptance rule keeps it (`search.acceptance`,
      ``ctx.acceptance()``); the descent stops after a pass that keeps nothing (or after
      ``max_passes`` passes). Each kept move strictly raises the tune score, so the descent
      terminates.
"""
from __future__ import annotations

from tqdm.auto import tqdm

from .moves import best_move
from .stage_base import StageContext, StageRecord
from .stage_per_class import _rows

__all__ = ["coordinates", "run_refine"]


def coordinates(problem) -> list:
    """``[(Param, cls or None)]``: every coordinate the descent visits, in order (a per-class
    parameter: its global move ``(p, None)``, then each class)."""
    out = []
    for p in problem.params.values():
        if p.per_class:
            out.append((p, None))
            out.extend((p, c) for c in range(len(p.columns)))
        else:
            out.append((p, None))
    return out


def run_refine(x, start: float, ctx: StageContext) -> StageRecord:
    """Coordinate descent from ``x`` (tune score ``start``)."""
    obj = ctx.objective
    coords = coordinates(obj.problem)
    acc = ctx.acceptance()
    x, score = x.copy(), start
    x0 = x.copy()
    moves = []
    for n_pass in range(ctx.max_passes):
        kept_any = False
        bar = tqdm(total=len(coords), desc=f"{ctx.fold} refine pass {n_pass + 1}",
                   disable=not ctx.progress, leave=False)
        for p, c in coords:
            m = best_move(obj, x, p, c, score, accept=acc)
            moves.append(m)
            if m.kept:
                cols = p.columns if c is None else p.columns[[c]]
                x[cols] = m.value
                score = m.score_db
                kept_any = True
            bar.update(1)
        bar.close()
        if not kept_any:
            break
    return StageRecord("refine", ctx.fold, "sweep", start, score, x0, x, moves=moves,
                       trials=_rows(moves, ctx, "refine", obj.problem),
                       note=f"{n_pass + 1} pass(es)")
