"""Joint low-dimensional stages: ``fusion``, ``verify``, ``gates`` (Optuna) and ``select``
(every combination of its choices).

Conventions:
    * A per-class threshold tuned here is **global**: one value written into all its columns.
    * The start setting is one of the trials, so a stage never ends below its start; a trial
      replaces it only when it scores strictly higher **and** the chain's acceptance rule keeps
      the stage's result (`search.acceptance`). Under the evidence rule an Optuna stage is
      cross-fitted whole: one more study runs on each half of the tune set (same trials, its
      own seed, in memory), each half is scored at the other half's best, and the rule judges
      those honest values; ``select`` (no adaptive proposals) cross-fits its choice among all
      combinations (`judge_candidates`). The written result is the best on all tune
      soundscapes. Under the margin rule a joint stage keeps any strict gain (as before).
"""
from __future__ import annotations

import hashlib
import itertools

import numpy as np

from casdri.replay import scored_mean

from .acceptance import (Evidence, choose_on_parts, gain_standard_error, honest_values,
                         part_scores, simplest_within_se)
from .engines import distribution, optimize_joint
from .objective import Objective, Param
from .stage_base import StageContext, StageRecord

__all__ = ["run_fusion", "run_verify", "run_gates", "run_select", "stage_params",
           "judge_candidates"]


def stage_params(problem, stage: str) -> list:
    """The `Param` objects a stage may move: ``problem.plan[stage]`` (the policy's
    ``SEARCH_PLAN``, the one truth of which stage moves what), in plan order; a problem
    without a plan, or a stage the plan does not name, moves nothing."""
    names = getattr(problem, "plan", {}).get(stage, ())
    return [problem.params[n] for n in names if n in problem.params]


def judge_candidates(ctx: StageContext, x: np.ndarray, X: np.ndarray, gain_db: float
                     ) -> Evidence:
    """Keep or drop a joint stage's result: the best of the candidate settings ``X``
    ``(n, P)`` (the evaluated trials or combinations), ``gain_db`` its tune gain over ``x``.

    Margin rule: any strict gain is kept (the joint stages' old rule). Evidence rule: the best
    candidate on each half of the tune set is confirmed on the other (`search.acceptance`).
    """
    acc = ctx.acceptance()
    if not acc.cross_fitted or gain_db == np.inf:
        ok = bool(gain_db > 0)
        return Evidence(ok, acc.rule, float(gain_db), reason="kept" if ok else "no tune gain")
    if not gain_db > 0:
        return acc.judge(gain_db, stage=True)
    V = ctx.objective.values(np.vstack([x[None, :], X]))
    v0, V = V[0], V[1:]
    cur = part_scores(v0[None, :], acc.parts)[:, 0]
    j = choose_on_parts(part_scores(V, acc.parts), cur)
    honest = None if (j < 0).all() else honest_values(
        v0, [None if jg < 0 else V[jg] for jg in j], acc.parts)
    return acc.judge(gain_db, v0, honest, stage=True)


def simplest_trial(obj: Objective, x: np.ndarray, X: np.ndarray, x_best: np.ndarray,
                   best_db: float, start_db: float) -> tuple:
    """The one-standard-error rule over evaluated settings ``X`` ``(n, P)``: among those within
    one standard error of the best (``x_best``, ``best_db``) and above the start, the one that
    changes the fewest tune soundscapes' values (`search.acceptance.simplest_within_se`).

    Returns:
        ``(setting, its tune score)``.
    """
    V = obj.values(np.vstack([x[None, :], x_best[None, :], X]))
    v0, v_best, V = V[0], V[1], V[2:]
    scores = scored_mean(V)
    changed = (~((V == v0) | (np.isnan(V) & np.isnan(v0)))).sum(1)
    j = simplest_within_se(scores, best_db, gain_standard_error(v0, v_best), start_db, changed)
    if j < 0:
        return x_best, best_db
    return X[j].copy(), float(scores[j])


def _choices(p: Param) -> tuple:
    """The values Optuna samples for a categorical or integer ``p`` (``()`` for a numeric one)."""
    return tuple(getattr(distribution(p), "choices", ()))


def _apply(x: np.ndarray, params: list, values: dict) -> np.ndarray:
    y = x.copy()
    for p in params:
        y[p.columns] = float(values[p.name])
    return y


def _digest(idx) -> str:
    """Short digest of the tune soundscapes (workers of a shared study must agree on it)."""
    return hashlib.sha1(np.ascontiguousarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]


def _noop(stage, x, start, ctx, note) -> StageRecord:
    return StageRecord(stage, ctx.fold, "none", start, start, x.copy(), x.copy(), note=note)


def _run_optuna(stage: str, x: np.ndarray, start: float, ctx: StageContext) -> StageRecord:
    obj = ctx.objective
    params = stage_params(obj.problem, stage)
    if not params:
        return _noop(stage, x, start, ctx, "the policy's search plan moves nothing here")
    start_values = {}
    for p in params:
        v = float(x[p.columns[0]])
        choices = _choices(p)
        if choices and v not in choices:
            v = min(choices, key=lambda c: abs(c - v))
        start_values[p.name] = v

    def run(o: Objective, seed: int, storage, name: str):
        def score_batch(batch):
            return o.scores(np.stack([_apply(x, params, b) for b in batch]))

        return optimize_joint(
            score_batch, params, start_values, ctx.n_trials, sampler=ctx.sampler, seed=seed,
            storage=storage, study_name=name, progress=ctx.progress, desc=f"{ctx.fold} {stage}",
            study_attrs={"tune_set": _digest(o.idx)}, live=ctx.settings.resume)

    name = f"{ctx.study_name}.{ctx.fold}.{stage}"
    res = run(obj, ctx.stage_seed(stage), ctx.storage, name)
    gain = res.best_score_db - start if np.isfinite(start) else np.inf
    acc = ctx.acceptance()
    if acc.cross_fitted and 0 < gain < np.inf:  # the whole stage, once per half
        v0 = obj.values(x[None, :])[0]
        chosen = []
        for g in (0, 1):
            half = np.zeros(obj.mask.shape[0], bool)
            half[obj.idx[acc.parts == g]] = True
            o = Objective(obj.problem, half)
            r = run(o, (ctx.stage_seed(stage) + 1 + g) % 2**32, None, f"{name}.half-{g}")
            obj.n_settings += o.n_settings
            obj.n_clip_evals += o.n_clip_evals
            better = r.best_score_db > o.score(x) + 1e-9
            chosen.append(obj.values(_apply(x, params, r.best)[None, :])[0] if better else None)
        honest = (None if all(c is None for c in chosen)
                  else honest_values(v0, chosen, acc.parts))
        ev = acc.judge(gain, v0, honest, stage=True)
    else:
        ev = judge_candidates(ctx, x, np.zeros((0, x.shape[0])), gain)
    better = bool(res.best_score_db > start or not np.isfinite(start)) and ev.accepted
    x_end = _apply(x, params, res.best) if better else x.copy()
    end = res.best_score_db if better else start
    if better and acc.cross_fitted and np.isfinite(start):
        X = np.stack([_apply(x, params, prm) for _, prm, v, st in res.trials
                      if st == "COMPLETE" and np.isfinite(v)])
        x_end, end = simplest_trial(obj, x, X, x_end, end, start)
    trials = [{"fold": ctx.fold, "stage": stage, "engine": ctx.sampler, "number": n,
               "state": st, "score_db": v, **{f"param_{k}": pv for k, pv in prm.items()}}
              for n, prm, v, st in res.trials]
    return StageRecord(stage, ctx.fold, ctx.sampler, start, end, x.copy(), x_end, trials=trials,
                       note="" if better else _why(ev), evidence=ev)


def run_fusion(x, start, ctx):
    """Tagger fusion: weight ``w`` and the solo-keep thresholds (Optuna)."""
    return _run_optuna("fusion", x, start, ctx)


def run_verify(x, start, ctx):
    """Global verify and drop thresholds (and the verify mode) (Optuna)."""
    return _run_optuna("verify", x, start, ctx)


def run_gates(x, start, ctx):
    """Global energy gate, probability gate and silence threshold (Optuna)."""
    return _run_optuna("gates", x, start, ctx)


def run_select(x, start, ctx):
    """Dual-separator selection and separator stage: every combination, one batch replay."""
    obj = ctx.objective
    params = stage_params(obj.problem, "select")
    if not params:
        return _noop("select", x, start, ctx, "the policy's search plan moves nothing here")
    choices = [_choices(p) for p in params]
    combos = list(itertools.product(*choices))
    X = np.stack([_apply(x, params, dict(zip([p.name for p in params], c))) for c in combos])
    scores = obj.scores(X)
    s = np.where(np.isnan(scores), -np.inf, scores)
    j = int(np.argmax(s))
    gain = (s[j] - start) if np.isfinite(start) else np.inf
    ev = judge_candidates(ctx, x, X[np.isfinite(s)], gain) if np.isfinite(s[j]) else None
    better = (bool(s[j] > start) or not np.isfinite(start)) and ev is not None and ev.accepted
    x_end = X[j].copy() if better else x.copy()
    end = float(s[j]) if better else start
    if better and ctx.acceptance().cross_fitted and np.isfinite(start):
        fin = np.isfinite(s)
        x_end, end = simplest_trial(obj, x, X[fin], x_end, end, start)
    trials = [{"fold": ctx.fold, "stage": "select", "engine": "choices", "number": i,
               "state": "COMPLETE", "score_db": float(scores[i]),
               **{f"param_{p.name}": float(c[k]) for k, p in enumerate(params)}}
              for i, c in enumerate(combos)]
    return StageRecord("select", ctx.fold, "choices", start, end, x.copy(), x_end,
                       trials=trials, note="" if better or ev is None else _why(ev), evidence=ev)


def _why(ev: Evidence) -> str:
    """The note of a stage whose result was dropped."""
    if ev.reason == "no tune gain":
        return ""
    return f"result dropped: {ev.reason}"
