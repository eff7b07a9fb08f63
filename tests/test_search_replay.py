"""The search on real replays of small synthetic caches: exact sweeps, planted optima, stages
never below their start, seeded reproducibility, the CV protocol."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from casdri.synthetic import make_synthetic_cache
from search.casdri_problem import CasdriProblem
from search.moves import best_move
from search.objective import Objective
from search.run import run_search
from search.settings import SearchSettings
from search.stages import STAGE_ORDER, StageContext, run_stage
from casdri.stats import dataset_mean

PLANTED = {"AlarmClock": -30.0, "Cough": -20.0, "Speech": -12.0}


@pytest.fixture(scope="module")
def cache150(tmp_path_factory):
    return make_synthetic_cache(tmp_path_factory.mktemp("c150") / "cache", n_soundscapes=150,
                                seed=11)


@pytest.fixture(scope="module")
def problem(cache150):
    return CasdriProblem(cache150)


def _random_setting(problem, rng):
    x = problem.start_vector().copy()
    for p in problem.params.values():
        if p.categorical:
            x[p.columns] = rng.choice(p.choices)
        else:
            x[p.columns] = rng.uniform(p.low, p.high, len(p.columns)) if p.per_class else \
                rng.uniform(p.low, p.high)
    # keep most detections alive so every comparison is exercised
    for name, hi in (("prob_gate", 0.3), ("silence_thr", 1.0), ("solo_keep_1ch", 0.5),
                     ("solo_keep_4ch", 0.5)):
        c = problem.params[name].columns
        x[c] = (rng.uniform(0, hi, len(c)) if name != "silence_thr"
                else rng.uniform(0.8, 1.0, len(c)))
    x[problem.params["energy_gate_db"].columns] = rng.uniform(-60, -20, problem.n_classes)
    x[problem.params["verify_mode"].columns] = 0.0
    return x


@pytest.mark.parametrize("seed", [0, 1])
def test_sweep_is_exact_on_replay(problem, seed):
    """Every interval score of every sweep equals a direct replay at its point, and no point
    of a fine grid scores higher than the sweep's choice."""
    rng = np.random.default_rng(seed)
    x = _random_setting(problem, rng)
    obj = Objective(problem, rng.random(problem.n_soundscapes) < 0.8)
    s0 = obj.score(x)
    classes = rng.choice(problem.n_classes, 2, replace=False)
    for name, p in problem.params.items():
        if p.categorical:
            continue
        for cls in ([None] if not p.per_class else [None, *classes]):
            m = best_move(obj, x, p, None if cls is None else int(cls), s0, margin=0.0)
            assert m.engine == "sweep"
            cols = p.columns if cls is None else p.columns[[int(cls)]]
            X = np.repeat(x[None], m.points.size, 0)
            X[:, cols] = m.points[:, None]
            direct = obj.scores(X)
            assert np.allclose(direct, m.scores_db, atol=1e-9, equal_nan=True), (name, cls)
            grid = np.linspace(p.low, p.high, 801)
            G = np.repeat(x[None], grid.size, 0)
            G[:, cols] = grid[:, None]
            assert np.nanmax(obj.scores(G)) <= m.best_score_db + 1e-9, (name, cls)
            if cls is not None or not p.per_class:  # the start lies on this line
                assert m.best_score_db >= s0 - 1e-12


@pytest.fixture(scope="module")
def planted_cache(tmp_path_factory):
    return make_synthetic_cache(tmp_path_factory.mktemp("planted") / "cache", n_soundscapes=150,
                                seed=5, planted={"energy_gate_db": PLANTED})


def test_planted_energy_gates_recovered(planted_cache):
    problem = CasdriProblem(planted_cache)
    obj = Objective(problem, np.ones(problem.n_soundscapes, bool))
    x = problem.start_vector()
    p = problem.params["energy_gate_db"]
    names = problem.class_names
    def same_best_run(m, value, t):
        # the planted gate t and the chosen value lie in one run of best-scoring intervals
        a, b = sorted(int(np.searchsorted(m.edges[1:-1], v, side="right")) for v in (value, t))
        return np.all(m.scores_db[a:b + 1] >= m.best_score_db - 1e-9)

    for label, t in PLANTED.items():  # one exact sweep per class finds the planted optimum
        m = best_move(obj, x, p, names.index(label), obj.score(x), margin=0.0)
        assert m.score_at(t) == pytest.approx(m.best_score_db, abs=1e-9), label
        assert same_best_run(m, m.best_value, t), (label, m.best_value)
    # and the whole refine stage (coordinate descent) keeps a gate of that run
    rec = run_stage("refine", x, StageContext(obj, SearchSettings(margin=0.0, accept="margin",
                                                                  max_passes=3)))
    for label, t in PLANTED.items():
        v = rec.x_end[p.columns[names.index(label)]]
        y = rec.x_end.copy()
        m = best_move(obj, y, p, names.index(label), obj.score(y), margin=0.0)
        assert same_best_run(m, v, t), (label, v)


def test_every_stage_never_below_start(problem):
    obj = Objective(problem, np.arange(problem.n_soundscapes) % 3 != 0)
    x = problem.start_vector()
    ctx = StageContext(obj, SearchSettings(margin=0.02, n_trials=10, seed=3, max_passes=2))
    for stage in STAGE_ORDER:
        rec = run_stage(stage, x, ctx)
        assert rec.end_score_db >= rec.start_score_db - 1e-12, stage
        assert obj.score(rec.x_end) == pytest.approx(rec.end_score_db, abs=1e-9), stage
        x = rec.x_end


def test_run_search_cv_protocol_and_reproducible(cache150):
    kw = dict(stage="all", folds=3, trials=6, margin=0.05, seed=2, n_boot=500, max_passes=2)
    a = run_search(cache150, **kw)
    b = run_search(cache150, **kw)
    assert np.array_equal(a.x_final, b.x_final)
    ta, tb = a.trials_table(), b.trials_table()
    assert ta.drop(columns=[]).equals(tb)
    # held-out values: each soundscape scored once, by the policy of its fold
    for f in a.fold_results:
        v = a.problem.values(f.x_end[None], f.heldout_idx)[0]
        assert np.array_equal(v, a.heldout_values[f.heldout_idx], equal_nan=True)
        assert not np.intersect1d(f.tune_idx, f.heldout_idx).size
    assert a.heldout.gain_db == pytest.approx(
        dataset_mean(a.heldout_values) - dataset_mean(a.baseline_values))
    assert a.oracle_db >= a.baseline_db
    assert a.final_tune_db >= dataset_mean(a.start_values) - 1e-12
    st = a.stage_table()
    assert list(st["stage"]) == list(STAGE_ORDER) and (st["tune_gain_db"] >= -1e-12).all()
    c = run_search(cache150, **{**kw, "seed": 3})
    assert not c.trials_table().equals(ta)


def test_jobs_equal_serial(tmp_path):
    path = make_synthetic_cache(tmp_path / "c", n_soundscapes=60, seed=2, load=False)
    kw = dict(stage="fusion", folds=2, trials=5, seed=1, n_boot=200)
    a = run_search(path, jobs=1, **kw)
    b = run_search(path, jobs=2, **kw)
    assert np.array_equal(a.x_final, b.x_final)
    assert np.array_equal(a.heldout_values, b.heldout_values, equal_nan=True)


def test_problem_factory_loads_once_per_process_until_the_cache_changes(tmp_path):
    from search.casdri_problem import ProblemFactory
    path = make_synthetic_cache(tmp_path / "c", n_soundscapes=30, seed=4, load=False)
    first = ProblemFactory(path)()
    assert ProblemFactory(path)() is first  # a worker's next chain reuses its problem
    assert ProblemFactory(path, "baseline")() is not first
    again = ProblemFactory(path)()
    assert again is not first and again.policy == first.policy
    part = sorted(path.glob("separations/part-*.parquet"))[0]
    st = part.stat()
    os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # rewritten in place
    assert ProblemFactory(path)() is not again


class _BrokenFactory:
    """A problem recipe whose worker side fails (as a cache deleted under a search would)."""

    def __call__(self):
        raise RuntimeError("worker: the cache is gone")


def _chain_tasks(n_soundscapes, k):
    folds = np.arange(n_soundscapes) % k
    return [(f"fold-{i}", folds != i) for i in range(k)] + [("final", np.ones(n_soundscapes,
                                                                              bool))]


def test_parallel_chains_run_here_and_in_workers_with_the_serial_results(tmp_path,
                                                                          monkeypatch):
    """`--jobs 2` runs chains in this process and in a worker, handing each the next chain as
    it frees up; every chain's result equals the serial run's, in task order."""
    from search import cv
    from search.casdri_problem import ProblemFactory
    from search.settings import SearchSettings

    path = make_synthetic_cache(tmp_path / "c", n_soundscapes=60, seed=2, load=False)
    factory = ProblemFactory(path)
    problem = factory()
    x0 = problem.start_vector()
    tasks = _chain_tasks(problem.n_soundscapes, 5)
    settings = SearchSettings(stage="fusion", n_trials=5, seed=1, progress=False).validate()
    serial = cv.run_chains(problem, x0, tasks, settings)
    here = []
    run_here = cv.run_fold_chain
    def counted(*a, **k):  # this process's chains (a worker imports the module afresh)
        if len(a) < 8:  # not the call it makes to itself with the storage it opened
            here.append(a[3])
        return run_here(*a, **k)

    monkeypatch.setattr(cv, "run_fold_chain", counted)
    par = cv.run_chains(problem, x0, tasks, settings.with_(jobs=2), problem_factory=factory)
    assert [r.fold for r in par] == [t[0] for t in tasks]
    for a, b in zip(serial, par):
        assert np.array_equal(a.x_end, b.x_end)
        assert np.array_equal(a.heldout_values, b.heldout_values, equal_nan=True)
    assert 1 <= len(here) < len(tasks)  # this process worked, and so did the worker
    assert "final" not in here  # the largest tune set went to the worker first
    # jobs="auto" given to the library function itself (run_search resolves it before): a
    # one-stage chain runs in this process alone, with the same result
    assert settings.with_(jobs="auto").auto_jobs() == 1
    auto = cv.run_chains(problem, x0, tasks, settings.with_(jobs="auto"),
                         problem_factory=factory)
    for a, b in zip(serial, auto):
        assert np.array_equal(a.x_end, b.x_end)


def test_a_chain_failing_in_a_worker_fails_the_search(tmp_path):
    """An error in a worker's chain is raised here (not a hang, not a result with a hole)."""
    from search import cv
    from search.settings import SearchSettings

    path = make_synthetic_cache(tmp_path / "c", n_soundscapes=30, seed=2, load=False)
    from search.casdri_problem import ProblemFactory
    problem = ProblemFactory(path)()
    settings = SearchSettings(stage="fusion", n_trials=3, seed=1, progress=False, jobs=2).validate()
    with pytest.raises(RuntimeError, match="the cache is gone"):
        cv.run_chains(problem, problem.start_vector(), _chain_tasks(30, 3), settings,
                      problem_factory=_BrokenFactory())


STOPS_WORKERS = """
import sys, time
import numpy as np
from casdri.synthetic import make_synthetic_cache
from search import cv
from search.casdri_problem import ProblemFactory
from search.settings import SearchSettings

class SlowFactory:  # a worker's chain that takes a minute
    def __init__(self, path):
        self.path = path
    def __call__(self):
        time.sleep(60)
        return ProblemFactory(self.path)()

class Failing:  # this process's chains fail at once
    def __init__(self, problem):
        self.__dict__.update(problem.__dict__)
        self._p = problem
    def __getattr__(self, name):
        return getattr(self._p, name)
    def values(self, X, idx=None):
        raise RuntimeError("parent chain failed")

path = make_synthetic_cache(sys.argv[1], n_soundscapes=30, seed=2, load=False)
problem = ProblemFactory(path)()
masks = [("fold-0", np.arange(30) % 2 == 0), ("final", np.ones(30, bool))]
settings = SearchSettings(stage="fusion", n_trials=3, seed=1, progress=False, jobs=2).validate()
t = time.perf_counter()
try:
    cv.run_chains(Failing(problem), problem.start_vector(), masks, settings,
                  problem_factory=SlowFactory(str(path)))
except RuntimeError as e:
    print("raised", str(e), round(time.perf_counter() - t, 1), flush=True)
"""


def test_an_error_here_stops_the_workers(tmp_path):
    """A chain that fails in this process while a worker is busy raises at once, and the
    process exits without waiting for the worker's chain (a minute here)."""
    import subprocess
    import sys
    import time

    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", STOPS_WORKERS, str(tmp_path / "c")],
                       capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).resolve().parents[1])
    wall = time.perf_counter() - t
    assert r.returncode == 0, r.stderr[-2000:]
    assert "raised parent chain failed" in r.stdout
    assert wall < 40, wall  # not the worker's 60 s
