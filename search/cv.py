"""k-fold cross-validation of a stage chain: tune on k-1 folds, score the held-out fold.

Conventions:
    * One *chain* = the requested stages run on one tune set. With ``k > 1`` there are ``k``
      fold chains (``"fold-0"`` ...) plus the ``"final"`` chain tuned on every soundscape (the
      policy that is written out); ``k == 1`` runs the final chain only.
    * Each fold chain records, for its held-out soundscapes, the per-soundscape values of the
      start setting and of the setting after each stage, so held-out gains per stage can be
      pooled over folds.
    * Chains are independent and may run in parallel (``jobs``); the result does not depend on
      ``jobs`` (each chain is seeded by its fold label).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np

from .engines import make_storage
from .folds import Folds
from .objective import Objective
from .stages import StageContext, StageRecord, run_chain

__all__ = ["ChainSettings", "ChainResult", "run_fold_chain", "cross_validate"]


@dataclass(frozen=True)
class ChainSettings:
    """Search settings shared by every chain (see `search.stages.StageContext`)."""

    margin: float = 0.05
    n_trials: int = 64
    sampler: str = "tpe"
    seed: int = 0
    storage: Optional[str] = None
    study_name: str = "casdri"
    progress: bool = False
    max_passes: int = 8


@dataclass
class ChainResult:
    """One chain.

    Attributes:
        fold: ``"fold-i"`` or ``"final"``.
        records: the `StageRecord` of each stage, in order.
        x_start, x_end: encoded start and result.
        tune_idx, heldout_idx: soundscape ids tuned on / held out (empty for ``"final"``).
        heldout_values: ``(n_stages + 1, n_heldout)`` per-soundscape values of the start and
            after each stage on the held-out soundscapes (NaN = None).
    """

    fold: str
    records: list
    x_start: np.ndarray
    x_end: np.ndarray
    tune_idx: np.ndarray
    heldout_idx: np.ndarray
    heldout_values: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    @property
    def tune_start_db(self) -> float:
        return self.records[0].start_score_db if self.records else float("nan")

    @property
    def tune_end_db(self) -> float:
        return self.records[-1].end_score_db if self.records else float("nan")


@contextmanager
def single_numba_thread():
    """Run numba kernels on one thread inside (restored after): a search issues many small
    replays, where waking a thread pool costs more than it saves; chains run in parallel
    processes instead (``jobs``)."""
    try:
        import numba

        before = numba.get_num_threads()
        numba.set_num_threads(1)
    except (ImportError, ValueError, AttributeError):  # pragma: no cover
        yield
        return
    try:
        yield
    finally:
        numba.set_num_threads(before)


def run_fold_chain(problem, x_start: np.ndarray, stages, tune_mask: np.ndarray, fold: str,
                   settings: ChainSettings,
                   on_stage: Optional[Callable[[StageRecord], None]] = None) -> ChainResult:
    """Tune ``stages`` on ``tune_mask`` and score the rest (held out)."""
    with single_numba_thread():
        return _run_fold_chain(problem, x_start, stages, tune_mask, fold, settings, on_stage)


def _run_fold_chain(problem, x_start, stages, tune_mask, fold, settings, on_stage):
    ctx = StageContext(
        objective=Objective(problem, tune_mask), margin=settings.margin,
        n_trials=settings.n_trials, sampler=settings.sampler, seed=settings.seed,
        storage=make_storage(settings.storage), study_name=settings.study_name, fold=fold,
        progress=settings.progress, max_passes=settings.max_passes)
    records = run_chain(stages, x_start, ctx, on_stage)
    x_end = records[-1].x_end if records else np.array(x_start, dtype=np.float64)
    heldout_idx = np.flatnonzero(~np.asarray(tune_mask, bool))
    X = np.stack([np.asarray(x_start, np.float64)] + [r.x_end for r in records])
    held = problem.values(X, heldout_idx) if heldout_idx.size else np.zeros((X.shape[0], 0))
    return ChainResult(fold, records, np.asarray(x_start, np.float64), x_end,
                       np.flatnonzero(tune_mask), heldout_idx, held)


def cross_validate(problem, x_start: np.ndarray, stages, folds: Folds, settings: ChainSettings,
                   jobs: int = 1, problem_factory: Optional[Callable] = None,
                   on_stage: Optional[Callable[[StageRecord], None]] = None):
    """Run the fold chains and the final chain.

    Args:
        problem: the `search.objective.Problem`.
        x_start: ``(P,)`` start setting.
        stages: stage names in order.
        folds: the split (``k == 1``: final chain only).
        settings: `ChainSettings`.
        jobs: chains run in parallel processes when > 1 (``problem_factory()`` rebuilds the
            problem in each worker; without it the problem is pickled to the workers).
        on_stage: callback after each stage (serial runs only), e.g. for progress output.

    Returns:
        ``(fold_results, final_result)``: a list of `ChainResult` (empty when ``k == 1``) and
        the final `ChainResult`.
    """
    tasks = [(f"fold-{i}", folds.tune(i)) for i in range(folds.k)] if folds.k > 1 else []
    tasks.append(("final", np.ones(folds.n_soundscapes, dtype=bool)))
    from tqdm.auto import tqdm

    if jobs > 1 and len(tasks) > 1:
        from joblib import Parallel, delayed

        quiet = replace(settings, progress=False)  # one bar here, none in the workers
        done = Parallel(n_jobs=min(jobs, len(tasks)), backend="loky", return_as="generator")(
            delayed(_chain_task)(problem_factory, None if problem_factory else problem,
                                 x_start, stages, mask, label, quiet)
            for label, mask in tasks)
        results = list(tqdm(done, total=len(tasks), desc=f"chains ({jobs} jobs)",
                            disable=not settings.progress))
    else:
        results = []
        for label, mask in tqdm(tasks, desc="chains", disable=not settings.progress):
            results.append(run_fold_chain(problem, x_start, stages, mask, label, settings,
                                          on_stage))
    return results[:-1], results[-1]


def _chain_task(factory, problem, x_start, stages, mask, label, settings):
    if problem is None:
        problem = factory()
    return run_fold_chain(problem, x_start, stages, mask, label, settings)
