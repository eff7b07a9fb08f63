"""``--stage auto``: choose the stages to keep by an inner cross-validation of one tune set.

Conventions:
    * Stepwise forward selection: the tune set is split into ``inner_folds`` folds (grouped
      and stratified as the outer split); every inner fold keeps its own current setting,
      starting at the start policy. At each step every stage not yet kept is run on every
      inner tune set from that fold's current setting and scored by its **pooled inner
      held-out gain** (dataset mean over the tune set of the held-out values after the stage
      minus before it). The best stage is kept when its gain exceeds ``auto_min_se`` standard
      errors of the mean per-soundscape change (the one-standard-error rule: a stage must beat
      noise, else the simpler chain wins); then every inner fold moves on to its tuned setting
      and the next step begins. Selection stops at the first step whose best stage fails.
    * The kept stages run in the order they were chosen (the strongest first).
    * With several ``auto_variants`` (overrides of the settings, e.g. ``{"margin": 0.1}``, or
      an acceptance strictness), the selection runs once per variant and the variant with the
      highest pooled inner held-out score wins (ties: the first, listed simplest first).
    * Inner chains run in memory (never in a shared storage) and are seeded by their label
      (``"<chain>.inner-<i>"``), so a selection is reproducible and independent of ``jobs``.
    * The caller runs the kept stages on the whole tune set (`search.cv.run_fold_chain`); done
      inside every outer fold, the outer held-out figure reports selection and tuning together.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .objective import Objective
from .settings import SearchSettings
from .stage_base import StageContext
from .stages import run_stage
from casdri.stats import dataset_mean

__all__ = ["Selection", "select_stages"]


@dataclass(frozen=True)
class Selection:
    """What `select_stages` chose, and why.

    Attributes:
        stages: the kept stages, in order.
        variant: the winning settings overrides (``{}``: the settings as given).
        inner_gain_db: ``{kept stage: pooled inner held-out gain in dB}`` at the step it was
            kept (winning variant), in the order kept.
        alone_gain_db: ``{stage: pooled inner held-out gain in dB}`` of every stage run alone
            from the start policy (the first step).
        inner_score_db: pooled inner held-out dataset CAPI-SDRi of the winning variant's kept
            chain; start_score_db: that of the start policy.
        variant_scores_db: the inner held-out score of every variant, in order.
        seconds: wall time of the selection.
    """

    stages: tuple
    variant: dict
    inner_gain_db: dict
    alone_gain_db: dict
    inner_score_db: float
    start_score_db: float
    variant_scores_db: tuple = field(default_factory=tuple)
    seconds: float = 0.0

    def why(self) -> str:
        """One line: what was kept and dropped, with the inner held-out gain of each stage."""
        kept = (" → ".join(f"{s} ({g:+.3f})" for s, g in self.inner_gain_db.items())
                if self.stages else "nothing (the start policy)")
        alone = ", ".join(f"{s} {g:+.3f}" for s, g in self.alone_gain_db.items())
        var = f", variant {self.variant}" if self.variant else ""
        return (f"chose {kept}{var}: each step keeps the stage with the best inner "
                f"cross-validated held-out gain if it beats one standard error; alone from "
                f"the start: {alone} dB")


def select_stages(problem, x_start: np.ndarray, tune_idx: np.ndarray,
                  settings: SearchSettings, split_fn: Callable, label: str) -> Selection:
    """Choose the stages (and variant) for the tune soundscapes ``tune_idx`` (module rules).

    Args:
        problem: the `search.objective.Problem`.
        x_start: ``(P,)`` start setting.
        tune_idx: ``(n,) int64`` soundscapes of this tune set.
        settings: `SearchSettings` (``auto_stages``, ``auto_variants``, ``inner_folds``).
        split_fn: ``split_fn(tune_idx, k, seed) -> Folds`` over positions ``0 .. n-1`` of
            ``tune_idx`` (the outer grouping and stratification).
        label: the chain's label (seeds the inner split and chains).

    Returns:
        `Selection`.
    """
    t0 = time.perf_counter()
    tune_idx = np.asarray(tune_idx, np.int64)
    seed = int(np.random.SeedSequence([settings.seed, *label.encode()]).generate_state(1)[0])
    k = min(settings.inner_folds, tune_idx.shape[0])
    inner = split_fn(tune_idx, k, seed)
    best = None
    scores = []
    for variant in settings.auto_variants:
        sel = _forward(problem, x_start, tune_idx, inner,
                       settings.with_(storage=None, progress=False, **variant), label)
        scores.append(sel[3])
        if best is None or sel[3] > best[0][3]:
            best = (sel, dict(variant))
    (stages, gains, alone, score, start), variant = best
    return Selection(stages, variant, gains, alone, score, start, tuple(scores),
                     time.perf_counter() - t0)


def _forward(problem, x_start, tune_idx, inner, settings, label):
    S = problem.n_soundscapes
    ctxs, held, xs = [], [], []
    for i in range(inner.k):
        mask = np.zeros(S, bool)
        mask[tune_idx[inner.tune(i)]] = True
        ctxs.append(StageContext(Objective(problem, mask), settings, f"{label}.inner-{i}"))
        held.append(tune_idx[inner.held_out(i)])
        xs.append(np.array(x_start, np.float64))
    pos = [np.flatnonzero(inner.held_out(i)) for i in range(inner.k)]
    pooled = np.full(tune_idx.shape[0], np.nan)
    for i in range(inner.k):
        pooled[pos[i]] = problem.values(xs[i][None, :], held[i])[0]
    start = current = dataset_mean(pooled)
    kept, gains, alone, left = [], {}, {}, list(settings.auto_stages)
    runs = {}  # (stage, inner fold, setting bytes) -> x_end: a stage's run is a function of these
    while left:
        tried = {}
        for stage in left:  # every remaining stage from every inner fold's current setting
            trial, new_x = pooled.copy(), []
            for i in range(inner.k):
                key = (stage, i, xs[i].tobytes())  # an inner fold the kept stage left unchanged
                if key not in runs:                # runs the others from the same setting again
                    runs[key] = run_stage(stage, xs[i], ctxs[i]).x_end
                new_x.append(runs[key])
                trial[pos[i]] = problem.values(new_x[-1][None, :], held[i])[0]
            tried[stage] = (dataset_mean(trial) - current, _se(trial, pooled), trial, new_x)
        if not kept:
            alone = {stage: tried[stage][0] for stage in left}
        best = max(left, key=lambda st: (tried[st][0], -left.index(st)))  # ties: chain order
        gain, se, trial, new_x = tried[best]
        if not gain > settings.auto_min_se * se:
            break
        gains[best] = gain
        kept.append(best)
        left.remove(best)
        xs, pooled, current = new_x, trial, dataset_mean(trial)
    return tuple(kept), gains, alone, current, start


def _se(after: np.ndarray, before: np.ndarray) -> float:
    """Standard error (dB) of the mean per-soundscape change (soundscapes scored both times;
    0 when fewer than 2)."""
    ok = ~np.isnan(after) & ~np.isnan(before)
    d = after[ok] - before[ok]
    return float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else 0.0
