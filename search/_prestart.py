"""Start ``casdri-search``'s chain workers when the command starts.

A worker process takes about 2 s to become useful: a fresh interpreter imports numba, optuna
and pyarrow, loads the cache and the compiled kernels. `search.cv` hands chains to loky's
reusable executor; started here, at the top of the command, the same executor's workers do
that start-up while this process does its own (the same imports, the cache, the baseline and
oracle scoring), instead of after it. Measured on 2 cores: the command's imports take 1.2-1.9 s,
so most of a worker's start-up is hidden.

This module imports nothing heavy at its top: the command calls it before its own heavy
imports. The worker's task (`_warm`) does the imports there and builds the problem of
`search.casdri_problem.ProblemFactory` (kept in the worker for the chains, keyed by the cache's
files). On a first run (nothing compiled yet) the first worker compiles the kernels a chain
runs, on a tiny synthetic cache, while this process compiles the ones it runs before the
chains: the compilation is split over two processes instead of done in one. Its errors are
left to the chains, which raise them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from casdri._cli import lazy_import

from .settings import worker_pool

__all__ = ["prestart"]


def prestart(cache: Optional[str], policy: str, allow_incomplete: bool, stages: tuple,
             n_workers: int):
    """Start ``n_workers`` loky workers (none when ``n_workers < 1``) and warm each one.

    Args:
        cache: the cache directory the search will load (None: the demo cache).
        policy: the policy name; allow_incomplete: as `casdri.cache.load_cache`.
        stages: the stages of a chain (which kernels it runs).
        n_workers: the workers `search.cv` will use (``jobs - 1``).

    Returns:
        the executor (its ``shutdown(wait=True, kill_workers=True)`` stops the workers
        should the command fail before its chains), or None.
    """
    if n_workers < 1:
        return None
    executor = worker_pool(n_workers)
    for i in range(n_workers):  # (one compiles on a first run: the others would repeat it)
        executor.submit(_warm, None if cache is None else str(cache), policy, allow_incomplete,
                        tuple(stages), i == 0)
    return executor


def _warm(cache: Optional[str], policy: str, allow_incomplete: bool, stages: tuple,
          compile_first_run: bool = True) -> None:
    """In a worker: import the search and build the problem (under the key a chain's
    `ProblemFactory` looks up) and load its kernels. On a first run (the kernels are not in
    Numba's disk cache) and when ``compile_first_run``, it first compiles the kernels a chain
    runs on a tiny synthetic cache (`_compile_chain_kernels`), while the main process
    compiles the ones it needs before the chains (the cache's tables, the baseline's and the
    oracle's drivers); without it, a first run only imports."""
    cp, run = lazy_import("search.casdri_problem"), lazy_import("search.run")
    try:
        path = cp.demo_cache_path() if cache is None else Path(cache)
        module = lazy_import("casdri.policies").get_policy(policy)
        if path is None:
            return
        if not run.search_kernels_cached(module, stages):
            if not compile_first_run:
                return
            _compile_chain_kernels(module, stages)
            if not run.search_kernels_cached(module, stages):
                return  # (the main process's kernels are not ready yet: the chains load them)
        _run_chain_kernels(cp.ProblemFactory(path, policy, allow_incomplete)(), stages)
        lazy_import("search.engines").make_sampler("tpe", 0)  # (Optuna's sampler, SciPy)
    except Exception:  # noqa: BLE001 - the chains run the same steps and raise it
        return


def _run_chain_kernels(problem, stages: tuple) -> None:
    """Replay the start setting through every kernel a chain of ``stages`` runs (serial
    values and, for sweeping stages, pairs, the trace behind the change points and the sweep
    passes), compiling or loading each."""
    np, sweep = lazy_import("numpy"), lazy_import("search.sweep")
    run = lazy_import("search.run")
    x = problem.start_vector()
    idx = np.arange(min(4, problem.n_soundscapes))
    problem.values(x[None, :], idx)
    if run.SWEEP_STAGES & set(stages):
        problem.pair_values(x[None, :], idx[:1])
        for name, p in problem.params.items():  # each kind (some read the policy's trace)
            if p.per_class:
                problem.change_points(name, 0, x, idx)
        sweep.warm_up()


def _compile_chain_kernels(module, stages: tuple) -> None:
    """First run: compile the kernels of `_run_chain_kernels` on a synthetic cache of 8
    soundscapes (the same argument types as any cache's, so Numba's disk cache then serves
    the main process and the chains). Its own tables compile here too, beside the main
    process's (2 cores: the worker's core is idle until the chains). The synthetic cache is
    held in memory (its folder is deleted once it is loaded), so a worker killed while it
    compiles leaves no files behind."""
    dc = lazy_import("casdri.synthetic").make_synthetic_cache(None, n_soundscapes=8, seed=0)
    _run_chain_kernels(lazy_import("search.casdri_problem").CasdriProblem(dc, module.NAME),
                       stages)
