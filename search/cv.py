"""k-fold cross-validation of a stage chain: tune on k-1 folds, score the held-out fold.

Conventions:
    * One *chain* = the stages run on one tune set. With ``k > 1`` there are ``k x repeats``
      fold chains (``"fold-0"`` ..., ``"r1.fold-0"`` ... for later repeats) plus the
      ``"final"`` chain tuned on every soundscape (the policy that is written out);
      ``k == 1`` runs the final chain only.
    * With ``--stage auto`` each chain first *selects* its stages by an inner cross-validation
      of its own tune set (`search.nested.select_stages`) and then runs them; the fold chains
      do the whole procedure without seeing their held-out fold, so the pooled held-out figure
      reports the procedure, selection included.
    * Each fold chain records, for its held-out soundscapes, the per-soundscape values of the
      start setting and of the setting after each stage, so held-out gains per stage can be
      pooled over folds.
    * Chains are independent and may run in parallel (``jobs``); the result does not depend on
      ``jobs`` (each chain is seeded by its label).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Optional

import numba
import numpy as np
from tqdm.auto import tqdm

from .engines import open_storage
from .nested import Selection, select_stages
from .objective import Objective
from .settings import SearchSettings, worker_pool
from .stages import StageContext, StageRecord, run_chain

__all__ = ["ChainResult", "run_fold_chain", "run_chains", "single_numba_thread"]

_OPEN = object()  # run_fold_chain's default: open settings.storage itself


@dataclass
class ChainResult:
    """One chain.

    Attributes:
        fold: ``"fold-<i>"`` (repeat 0), ``"r<repeat>.fold-<i>"`` or ``"final"``.
        records: the `StageRecord` of each stage run, in order.
        x_start, x_end: encoded start and result.
        tune_idx, heldout_idx: soundscape ids tuned on / held out (empty for ``"final"``).
        heldout_values: ``(n_stages + 1, n_heldout)`` per-soundscape values of the start and
            after each stage on the held-out soundscapes (NaN = None).
        selection: the `search.nested.Selection` of ``--stage auto`` (None otherwise).
        tune_start_db, tune_end_db: tune score (dB) of the start and of the result.
    """

    fold: str
    records: list
    x_start: np.ndarray
    x_end: np.ndarray
    tune_idx: np.ndarray
    heldout_idx: np.ndarray
    heldout_values: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    selection: Optional[Selection] = None
    tune_start_db: float = float("nan")
    tune_end_db: float = float("nan")

    @property
    def stages(self) -> tuple:
        return tuple(r.stage for r in self.records)


@contextmanager
def single_numba_thread():
    """Run numba kernels on one thread inside (restored after): a search issues many small
    replays, where waking a thread pool costs more than it saves; chains run in parallel
    processes instead (``jobs``)."""
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def run_fold_chain(problem, x_start: np.ndarray, tune_mask: np.ndarray, fold: str,
                   settings: SearchSettings, split_fn: Optional[Callable] = None,
                   on_stage: Optional[Callable[[StageRecord], None]] = None,
                   storage=_OPEN) -> ChainResult:
    """Tune on ``tune_mask`` (``settings.stage``; ``auto`` selects the stages first with
    ``split_fn``, see `search.nested.select_stages`) and score the rest (held out).

    ``storage``: the Optuna storage of ``settings.storage`` already opened by the caller
    (`run_chains` opens it once for its serial chains: opening an RDB storage checks its
    schema, about 0.1-0.4 s); by default it is opened here."""
    if storage is _OPEN:
        with open_storage(settings.storage) as opened:
            return run_fold_chain(problem, x_start, tune_mask, fold, settings, split_fn,
                                  on_stage, opened)
    with single_numba_thread():
        mask = np.asarray(tune_mask, bool)
        selection = None
        if settings.stage == "auto":
            selection = select_stages(problem, x_start, np.flatnonzero(mask), settings,
                                      split_fn, fold)
            stages, settings = selection.stages, settings.with_(**selection.variant)
        else:
            stages = settings.chains[0]
        obj = Objective(problem, mask)
        ctx = StageContext(objective=obj, settings=settings, fold=fold, storage=storage)
        records = run_chain(stages, x_start, ctx, on_stage)
        t0 = records[0].start_score_db if records else obj.score(x_start)
        t1 = records[-1].end_score_db if records else t0
        x_end = records[-1].x_end if records else np.array(x_start, dtype=np.float64)
        heldout_idx = np.flatnonzero(~mask)
        X = np.stack([np.asarray(x_start, np.float64)] + [r.x_end for r in records])
        held = (problem.values(X, heldout_idx) if heldout_idx.size
                else np.zeros((X.shape[0], 0)))
    return ChainResult(fold, records, np.asarray(x_start, np.float64), x_end,
                       np.flatnonzero(mask), heldout_idx, held, selection, t0, t1)


def run_chains(problem, x_start: np.ndarray, tasks, settings: SearchSettings,
               split_fn: Optional[Callable] = None, problem_factory: Optional[Callable] = None,
               on_chain: Optional[Callable[[str], None]] = None,
               on_stage: Optional[Callable[[StageRecord], None]] = None) -> list:
    """Run chains ``tasks`` (``[(label, tune_mask)]``), in ``settings.jobs`` processes (this
    one and ``jobs - 1`` workers: `_run_chains_parallel`) when ``jobs > 1``.

    Args:
        problem: the `search.objective.Problem`.
        x_start: ``(P,)`` start setting.
        tasks: ``[(label, (S,) bool tune mask)]``.
        settings: `SearchSettings`.
        split_fn: inner split of ``--stage auto`` (see `search.nested.select_stages`).
        problem_factory: rebuilds the problem in each worker (else it is pickled).
        on_chain: called with each label before a serial chain starts (status lines).
        on_stage: callback after each stage (serial runs only).

    Returns:
        one `ChainResult` per task, in order.
    """
    jobs = settings.auto_jobs()  # ("auto" when called as a library function)
    if jobs > 1 and len(tasks) > 1:
        return _run_chains_parallel(problem, x_start, tasks, settings, split_fn,
                                    problem_factory)
    results = []
    with open_storage(settings.storage) as storage:  # once for every serial chain
        for label, mask in tasks:
            if on_chain is not None:
                on_chain(label)
            results.append(run_fold_chain(problem, x_start, mask, label, settings, split_fn,
                                          on_stage, storage))
    return results


def _run_chains_parallel(problem, x_start, tasks, settings, split_fn, factory) -> list:
    """The chains on ``settings.jobs`` processes: this one and ``jobs - 1`` loky workers.

    Largest tune sets first (the final chain tunes on all), handed out one at a time to
    whoever is free: a worker gets its next chain the moment it returns one, and this process
    (whose problem is loaded and whose kernels are warm) takes the next one whenever it
    finishes its own, so no worker starts up (imports, cache load) while this process idles.
    Results come back in task order; a chain's result does not depend on who ran it. An error
    in any chain (a worker's is raised once this process's current chain ends) or Ctrl-C
    stops the workers.
    """
    quiet = settings.with_(progress=False)  # one bar here, none in the chains
    pending = sorted(range(len(tasks)), key=lambda t: -int(np.count_nonzero(tasks[t][1])))
    out = [None] * len(tasks)
    done = threading.Condition()
    state = {"left": len(tasks), "error": None}
    bar = tqdm(total=len(tasks), desc=f"chains ({settings.auto_jobs()} jobs)",
               disable=not settings.progress)
    n_workers = min(settings.auto_jobs(), len(tasks)) - 1
    executor = worker_pool(n_workers)

    def take():
        with done:
            return pending.pop(0) if pending and state["error"] is None else None

    def submit():
        t = take()
        if t is not None:
            f = executor.submit(_chain_task, factory, None if factory else problem, x_start,
                                tasks[t][1], tasks[t][0], quiet, split_fn)
            f.add_done_callback(lambda f, t=t: finished(t, f))

    def finished(t, f=None, result=None):
        # (a worker's callback runs on loky's thread, which drops exceptions: record them)
        try:
            with done:
                if f is not None and (f.cancelled() or f.exception() is not None):
                    if state["error"] is None and not f.cancelled():
                        state["error"] = f.exception()
                else:
                    out[t] = f.result() if f is not None else result
                    state["left"] -= 1
                    bar.update()
            if f is not None:
                submit()  # this worker's next chain
        except BaseException as e:  # noqa: BLE001 - raised in the parent below
            with done:
                state["error"] = state["error"] or e
        finally:
            with done:
                done.notify_all()

    try:
        for _ in range(n_workers):
            submit()
        while (t := take()) is not None:
            finished(t, result=run_fold_chain(problem, x_start, tasks[t][1], tasks[t][0],
                                              quiet, split_fn))
        with done:
            while state["left"] > 0 and state["error"] is None:
                done.wait()
            if state["error"] is not None:
                raise state["error"]
    except BaseException:
        with done:
            pending.clear()
        # a running chain cannot be cancelled: stop the workers, or the error (or Ctrl-C)
        # would wait for their chains, here and at the interpreter's exit
        executor.shutdown(wait=False, kill_workers=True)
        raise
    finally:
        bar.close()
    return out


def _chain_task(factory, problem, x_start, mask, label, settings, split_fn):
    if problem is None:
        problem = factory()
    return run_fold_chain(problem, x_start, mask, label, settings, split_fn)
