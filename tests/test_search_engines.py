"""Optuna plumbing: storage URLs, seeded samplers, the batched ask/tell loop, shared studies."""
from __future__ import annotations

import multiprocessing as mp

import numpy as np
import optuna
import pytest

from casdri.errors import InputError
from search.engines import (distribution, make_sampler, make_storage, optimize_joint,
                            study_knobs)
from search.objective import Param

KNOBS = [Param("a", np.array([0]), 0.0, 1.0), Param("b", np.array([1]), -2.0, 2.0),
         Param("m", np.array([2]), choices=(0.0, 1.0, 2.0))]


def _score(batch):
    return np.array([-(p["a"] - 0.3) ** 2 - (p["b"] - 1.0) ** 2 + 0.1 * p.get("m", 0.0)
                     for p in batch])


def test_storage_urls(tmp_path):
    assert make_storage(None) is None
    s = make_storage(f"sqlite:///{tmp_path}/s.db")
    assert isinstance(s, optuna.storages.RDBStorage)
    j = make_storage(str(tmp_path / "j.log"))
    assert isinstance(j, optuna.storages.JournalStorage)
    j2 = make_storage(f"journal://{tmp_path}/sub/j2.log")
    assert isinstance(j2, optuna.storages.JournalStorage) and (tmp_path / "sub").is_dir()
    with pytest.raises(InputError, match="expected sqlite"):
        make_storage("nonsense")
    with pytest.raises(InputError, match="expected one of"):
        make_sampler("grid", 0)


def test_same_seed_same_trials():
    a = optimize_joint(_score, KNOBS, {"a": 0.5, "b": 0.0, "m": 0.0}, 20, seed=5)
    b = optimize_joint(_score, KNOBS, {"a": 0.5, "b": 0.0, "m": 0.0}, 20, seed=5)
    c = optimize_joint(_score, KNOBS, {"a": 0.5, "b": 0.0, "m": 0.0}, 20, seed=6)
    assert [t[1] for t in a.trials] == [t[1] for t in b.trials]
    assert a.best == b.best
    assert [t[1] for t in a.trials] != [t[1] for t in c.trials]
    assert a.trials[0][1] == {"a": 0.5, "b": 0.0, "m": 0.0}  # the start is trial 0
    assert a.best_score_db >= a.start_score_db and a.n_trials == 20


def test_start_kept_when_nothing_beats_it():
    res = optimize_joint(lambda batch: np.array([0.0 if p["a"] == 0.5 else -1.0 for p in batch]),
                         KNOBS[:1], {"a": 0.5}, 5, seed=0)
    assert res.best == {"a": 0.5} and res.best_score_db == 0.0


def test_cmaes_sampler_or_clear_error():
    try:
        import cmaes  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="pip install cmaes"):
            make_sampler("cmaes", 0)
        return
    a = optimize_joint(_score, KNOBS[:2], {"a": 0.5, "b": 0.0}, 12, sampler="cmaes", seed=2)
    b = optimize_joint(_score, KNOBS[:2], {"a": 0.5, "b": 0.0}, 12, sampler="cmaes", seed=2)
    assert [t[1] for t in a.trials] == [t[1] for t in b.trials]


def _worker(url, n, seed):
    optimize_joint(_score, KNOBS, {"a": 0.5, "b": 0.0, "m": 0.0}, n,
                   storage=make_storage(url), study_name="shared", seed=seed, batch_size=3)


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_shared_study_two_processes(tmp_path, kind):
    url = (f"journal://{tmp_path}/study.log" if kind == "journal"
           else f"sqlite:///{tmp_path}/study.db")
    make_storage(url)  # create the schema once (sqlite tables)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(url, n, s)) for n, s in ((7, 1), (5, 2))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    study = optuna.load_study(study_name="shared", storage=make_storage(url))
    trials = study.get_trials()
    assert len(trials) == 12
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert study_knobs(study) == {k.name: distribution(k) for k in KNOBS}
