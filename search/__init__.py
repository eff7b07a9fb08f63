"""casdri-search: tune casdri decision policies on a decision cache.

Optuna (TPE or CMA-ES) for the joint low-dimensional stages, exact 1-D threshold sweeps for
per-class and coordinate-descent moves, stratified (and grouped, repeated) k-fold held-out
validation with a paired bootstrap against the baseline policy; ``stage="auto"`` chooses the
stages to keep by an inner cross-validation. Never imports torch.

    >>> from search import run_search, write_outputs          # doctest: +SKIP
    >>> result = run_search("my_cache", stage="auto", folds=5)  # doctest: +SKIP
    >>> write_outputs(result, "out")                           # doctest: +SKIP

Public names are loaded lazily (``import search`` stays light).
"""
from __future__ import annotations

import importlib

__all__ = [
    "run_search", "SearchResult", "SearchSettings", "summarize", "write_outputs",
    "grouped_folds", "select_stages", "Selection",
    "stratified_folds", "Folds", "paired_bootstrap", "dataset_mean", "BootstrapGain",
    "sweep_dense", "sweep_sparse", "SweepResult", "make_storage", "make_sampler",
    "STAGE_ORDER", "run_stage", "run_chain", "StageContext", "StageRecord",
    "Objective", "Param", "main",
]

_WHERE = {
    "run_search": "run", "SearchResult": "result", "summarize": "result",
    "SearchSettings": "settings", "grouped_folds": "folds", "select_stages": "nested",
    "Selection": "nested",
    "write_outputs": "report",
    "stratified_folds": "folds", "Folds": "folds",
    "paired_bootstrap": "stats", "dataset_mean": "stats", "BootstrapGain": "stats",
    "sweep_dense": "sweep", "sweep_sparse": "sweep", "SweepResult": "sweep",
    "make_storage": "engines", "make_sampler": "engines",
    "STAGE_ORDER": "stages", "run_stage": "stages", "run_chain": "stages",
    "StageContext": "stages", "StageRecord": "stages",
    "Objective": "objective", "Param": "objective",
    "main": "cli",
}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
