"""Joint low-dimensional stages: ``fusion``, ``verify``, ``gates`` (Optuna) and ``select``
(every combination of its choices).

Conventions:
    * A per-class threshold tuned here is **global**: one value written into all its columns.
    * The start setting is one of the trials, so a stage never ends below its start; a trial
      replaces it only when it scores strictly higher.
"""
from __future__ import annotations

import itertools

import numpy as np

from .engines import Knob, optimize_joint
from .objective import Param
from .stages import StageContext, StageRecord

__all__ = ["FUSION_PARAMS", "VERIFY_PARAMS", "GATE_PARAMS", "SELECT_PARAMS",
           "run_fusion", "run_verify", "run_gates", "run_select", "stage_params"]

FUSION_PARAMS = ("w", "solo_keep_1ch", "solo_keep_4ch")
VERIFY_PARAMS = ("verify_thr", "verify_mode", "drop_thr")
GATE_PARAMS = ("energy_gate_db", "prob_gate", "silence_thr")
SELECT_PARAMS = ("select_separator", "stage")


def stage_params(problem, names) -> list:
    """The `Param` objects of ``names`` that the problem's policy has, in the given order."""
    return [problem.params[n] for n in names if n in problem.params]


def _knob(p: Param) -> Knob:
    if p.categorical:
        return Knob(p.name, choices=tuple(float(c) for c in p.choices))
    if p.integer:
        return Knob(p.name, choices=tuple(float(v) for v in range(int(p.low), int(p.high) + 1)))
    return Knob(p.name, low=float(p.low), high=float(p.high))


def _apply(x: np.ndarray, params: list, values: dict) -> np.ndarray:
    y = x.copy()
    for p in params:
        y[p.columns] = float(values[p.name])
    return y


def _digest(idx) -> str:
    """Short digest of the tune soundscapes (workers of a shared study must agree on it)."""
    import hashlib

    return hashlib.sha1(np.ascontiguousarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]


def _noop(stage, x, start, ctx, note) -> StageRecord:
    return StageRecord(stage, ctx.fold, "none", start, start, x.copy(), x.copy(), note=note)


def _run_optuna(stage: str, names, x: np.ndarray, start: float, ctx: StageContext) -> StageRecord:
    obj = ctx.objective
    params = stage_params(obj.problem, names)
    if not params:
        return _noop(stage, x, start, ctx, f"the policy has none of {names}")
    knobs = [_knob(p) for p in params]
    start_values = {}
    for p, k in zip(params, knobs):
        v = float(x[p.columns[0]])
        if k.choices and v not in k.choices:
            v = min(k.choices, key=lambda c: abs(c - v))
        start_values[p.name] = v

    def score_batch(batch):
        return obj.scores(np.stack([_apply(x, params, b) for b in batch]))

    res = optimize_joint(
        score_batch, knobs, start_values, ctx.n_trials, sampler=ctx.sampler,
        seed=ctx.stage_seed(stage), storage=ctx.storage,
        study_name=f"{ctx.study_name}.{ctx.fold}.{stage}", progress=ctx.progress,
        desc=f"{ctx.fold} {stage}", study_attrs={"tune_set": _digest(obj.idx)})
    better = res.best_score_db > start  # against the true start (not its clipped copy)
    x_end = _apply(x, params, res.best) if better else x.copy()
    end = res.best_score_db if better else start
    trials = [{"fold": ctx.fold, "stage": stage, "engine": ctx.sampler, "number": n,
               "state": st, "score_db": v, **{f"param_{k}": pv for k, pv in prm.items()}}
              for n, prm, v, st in res.trials]
    return StageRecord(stage, ctx.fold, ctx.sampler, start, end, x.copy(), x_end, trials=trials)


def run_fusion(x, start, ctx):
    """Tagger fusion: weight ``w`` and the solo-keep thresholds (Optuna)."""
    return _run_optuna("fusion", FUSION_PARAMS, x, start, ctx)


def run_verify(x, start, ctx):
    """Global verify and drop thresholds (and the verify mode) (Optuna)."""
    return _run_optuna("verify", VERIFY_PARAMS, x, start, ctx)


def run_gates(x, start, ctx):
    """Global energy gate, probability gate and silence threshold (Optuna)."""
    return _run_optuna("gates", GATE_PARAMS, x, start, ctx)


def run_select(x, start, ctx):
    """Dual-separator selection and separator stage: every combination, one batch replay."""
    obj = ctx.objective
    params = stage_params(obj.problem, SELECT_PARAMS)
    if not params:
        return _noop("select", x, start, ctx, f"the policy has none of {SELECT_PARAMS}")
    choices = [_knob(p).choices for p in params]
    combos = list(itertools.product(*choices))
    X = np.stack([_apply(x, params, dict(zip([p.name for p in params], c))) for c in combos])
    scores = obj.scores(X)
    s = np.where(np.isnan(scores), -np.inf, scores)
    j = int(np.argmax(s))
    better = bool(s[j] > start) or not np.isfinite(start)
    x_end = X[j].copy() if better else x.copy()
    trials = [{"fold": ctx.fold, "stage": "select", "engine": "choices", "number": i,
               "state": "COMPLETE", "score_db": float(scores[i]),
               **{f"param_{p.name}": float(c[k]) for k, p in enumerate(params)}}
              for i, c in enumerate(combos)]
    return StageRecord("select", ctx.fold, "choices", start, float(s[j]) if better else start,
                       x.copy(), x_end, trials=trials)
