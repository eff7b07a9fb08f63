"""The search stages, their registry and the chain that runs them in order.

Conventions:
    * Every stage maps a start setting ``x`` (encoded ``refine`` parameters) to a setting whose
      tune score is **never lower** (the start is always a candidate) and records a
      `StageRecord`.
    * Order of the chain (``--stage all``): ``fusion`` → ``verify`` → ``gates`` →
      ``per-class`` → ``select`` → ``refine``; each starts from the best setting of the stages
      before it (``--stage auto``: the kept stages, in the order `search.nested` chose them).
    * A new stage: a function in a ``stage_<name>.py`` module, added to `STAGES` here (or, from
      outside the package, with `register_stage`); see docs/ARCHITECTURE.md "Add a stage".
    * Stage parameters are looked up by name in the problem; a name the policy does not have is
      skipped (a stage with none left is a no-op, recorded as such).
    * `StageContext` and `StageRecord` live in `search.stage_base` (re-exported here); the
      stage modules import that base, so this registry imports them at module top.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np

from casdri.errors import InputError

from .settings import STAGE_ORDER, stage_names
from .stage_base import StageContext, StageRecord
from .stage_joint import run_fusion, run_gates, run_select, run_verify
from .stage_per_class import run_per_class
from .stage_refine import run_refine

__all__ = ["STAGES", "STAGE_ORDER", "StageContext", "StageRecord", "register_stage",
           "run_stage", "run_chain", "stage_names"]

#: stage name -> stage function ``(x, start_score_db, ctx) -> StageRecord``
STAGES = {"fusion": run_fusion, "verify": run_verify, "gates": run_gates,
          "per-class": run_per_class, "select": run_select, "refine": run_refine}


def register_stage(name: str, fn: Callable, *, replace: bool = False) -> Callable:
    """Add stage ``fn`` ``(x, start_score_db, ctx) -> StageRecord`` under ``name``, so
    `run_stage` / `run_chain` run it (it moves the fields the policy's ``SEARCH_PLAN[name]``
    names, seeded by ``ctx.stage_seed(name)``). The CLI's ``--stage`` offers `STAGE_ORDER`
    only. Returns ``fn``.

    Raises:
        InputError: ``name`` is taken by another function and ``replace`` is false, or ``fn``
            is not callable.
    """
    if not callable(fn):
        raise InputError(f"stage {name!r}: {fn!r} is not callable; a stage is a function "
                         "(x, start_score_db, ctx) -> StageRecord")
    old = STAGES.get(name)
    if old is not None and old is not fn and not replace:
        raise InputError(f"stage name {name!r} is taken by {getattr(old, '__name__', old)}; "
                         "pick another name or pass replace=True")
    STAGES[name] = fn
    return fn


def run_stage(stage: str, x: np.ndarray, ctx: StageContext) -> StageRecord:
    """Run one stage from setting ``x``; returns its `StageRecord` (``x_end`` is the result)."""
    fn: Callable = STAGES[stage]
    obj = ctx.objective
    n0, c0, t0 = obj.n_settings, obj.n_clip_evals, time.perf_counter()
    x = np.array(x, dtype=np.float64)
    start = obj.score(x)
    if np.isnan(start):  # every tune soundscape is None (zero-target, no false positive):
        # a setting could only add false positives there, so there is nothing to tune
        rec = StageRecord(stage, ctx.fold, "none", start, start, x.copy(), x.copy(),
                          note="no scored soundscape in the tune set")
    else:
        rec = fn(x, start, ctx)
    if not rec.end_score_db >= rec.start_score_db - 1e-12 and np.isfinite(start):
        raise RuntimeError(f"stage {stage} ended below its start ({rec.end_score_db} < {start})")
    rec.n_settings = obj.n_settings - n0
    rec.n_clip_evals = obj.n_clip_evals - c0
    rec.seconds = time.perf_counter() - t0
    return rec


def run_chain(stages, x: np.ndarray, ctx: StageContext,
              on_stage: Optional[Callable[[StageRecord], None]] = None) -> list:
    """Run ``stages`` in order, each from the previous one's result; returns the records."""
    records = []
    for stage in stages:
        rec = run_stage(stage, x, ctx)
        records.append(rec)
        x = rec.x_end
        if on_stage is not None:
            on_stage(rec)
    return records
