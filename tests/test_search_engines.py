"""Optuna plumbing: storage URLs, seeded samplers, the batched ask/tell loop, shared studies."""
from __future__ import annotations

import inspect
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


@pytest.mark.parametrize("kind", ["sqlite", "sqlite-public", "journal"])
def test_a_single_workers_study_reads_back_from_the_storage_as_it_ran(tmp_path, kind,
                                                                      monkeypatch):
    """The copy of an in-memory study into a storage (sqlite: one bulk transaction of Optuna's
    own rows; ``sqlite-public``: `add_trials`, the path of an Optuna whose RDB internals moved)
    reads back equal: numbers, states, params, distributions, values (a failed score's
    stand-in included), attributes and times."""
    import search.engines as engines

    assert engines._rdb_internals_present()  # this Optuna: the bulk path runs for "sqlite"
    if kind == "sqlite-public":
        monkeypatch.setattr(engines, "_rdb_internals_present", lambda: False)
    url = (f"journal://{tmp_path}/j.log" if kind == "journal" else f"sqlite:///{tmp_path}/s.db")

    def score(batch):
        return np.array([np.nan if p["m"] == 2.0 else v for p, v in zip(batch, _score(batch))])

    run = optimize_joint(score, KNOBS, {"a": 0.5, "b": 0.0, "m": 0.0}, 24, seed=3,
                         storage=make_storage(url), study_name="one", live=False,
                         study_attrs={"tune_set": "abc"})
    mem = optimize_joint(score, KNOBS, {"a": 0.5, "b": 0.0, "m": 0.0}, 24, seed=3,
                         study_name="one")
    assert run.trials == mem.trials and run.best == mem.best
    stored = optuna.load_study(study_name="one", storage=make_storage(url))
    assert stored.user_attrs == {"tune_set": "abc"}
    got = stored.get_trials()
    assert [(t.number, t.params, t.value, t.state.name) for t in got] == mem.trials
    assert any(t.value == -1e9 for t in got)  # the failed score's stand-in survives
    assert all(t.distributions == {k.name: distribution(k) for k in KNOBS} for t in got)
    assert got[0].system_attrs == {"fixed_params": {"a": 0.5, "b": 0.0, "m": 0.0}}
    assert all(t.datetime_start <= t.datetime_complete for t in got)
    with pytest.raises(InputError, match="pass --resume"):  # a second copy is refused
        optimize_joint(score, KNOBS, {"a": 0.5, "b": 0.0, "m": 0.0}, 4, seed=3,
                       storage=make_storage(url), study_name="one", live=False)


def test_bulk_copy_writes_what_add_trials_writes(tmp_path):
    """Every field Optuna stores for a trial (also intermediate values, infinite values, user
    attributes, other states) is written by the bulk copy as ``Study.add_trials`` writes it."""
    from search.engines import _insert_trials

    src = optuna.create_study(direction="maximize")
    dists = {"x": optuna.distributions.FloatDistribution(-1, 1),
             "c": optuna.distributions.CategoricalDistribution(["u", "v"]),
             "i": optuna.distributions.IntDistribution(1, 9, log=True)}
    for n, value in enumerate([0.5, float("inf"), float("-inf"), None]):
        t = src.ask(dists)
        t.set_user_attr("note", {"n": n, "s": "é"})
        t.report(0.25 * n, step=n)
        if value is None:
            src.tell(t, state=optuna.trial.TrialState.PRUNED)
        else:
            src.tell(t, value)
    src.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    trials = src.get_trials()
    ref = make_storage(f"sqlite:///{tmp_path}/ref.db")
    optuna.create_study(storage=ref, study_name="s", direction="maximize").add_trials(trials)
    bulk = make_storage(f"sqlite:///{tmp_path}/bulk.db")
    optuna.create_study(storage=bulk, study_name="s", direction="maximize")
    _insert_trials(bulk, bulk.get_study_id_from_name("s"), trials)
    a = optuna.load_study(study_name="s", storage=ref).get_trials()
    b = optuna.load_study(study_name="s", storage=bulk).get_trials()
    assert len(a) == len(b) == 5
    for x, y in zip(a, b):
        assert (x.number, x.state, x.values, x.params, x.distributions, x.user_attrs,
                x.system_attrs, x.intermediate_values, x.datetime_start, x.datetime_complete) \
            == (y.number, y.state, y.values, y.params, y.distributions, y.user_attrs,
                y.system_attrs, y.intermediate_values, y.datetime_start, y.datetime_complete)
    with pytest.raises(InputError, match="not empty"):
        _insert_trials(bulk, bulk.get_study_id_from_name("s"), trials)


@pytest.mark.parametrize("text, match", [
    ('{"op_code": 0}\n{not json\n{"op_code": 1}\n', r"line 2 is not a JSON object"),
    ("{not json\n", r"line 1 is not a JSON object"),
    ("[1, 2]\n", r"line 1 is not a JSON object"),
    ('{"op_code": 0, "worker_id": "x"}\n{"op_code": 99}\n', r"its operations do not replay \(KeyError"),
])
def test_corrupt_journal_names_the_file_and_the_remedy(tmp_path, text, match):
    """A corrupt Optuna journal file (was a bare JSONDecodeError / KeyError on every rerun)."""
    f = tmp_path / "study.log"
    f.write_text(text)
    with pytest.raises(InputError, match=rf"--storage {f}: the Optuna journal file is corrupt: "
                                         rf"{match}.*move it aside"):
        make_storage(str(f))


def test_journal_with_a_write_in_progress_opens(tmp_path):
    """A last line without its newline is another worker's write in progress (Optuna skips
    it), not corruption."""
    url = f"journal://{tmp_path}/study.log"
    optimize_joint(_score, KNOBS, {"a": 0.5, "b": 0.0, "m": 0.0}, 3, storage=make_storage(url),
                   study_name="s", live=False)
    with open(tmp_path / "study.log", "a") as f:
        f.write('{"op_code": 4, "trial_')
    study = optuna.load_study(study_name="s", storage=make_storage(url))
    assert len(study.get_trials()) == 3


def _batched_trials(sampler, n_batches: int = 6, batch: int = 8, tell=None) -> list:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    dists = {p.name: distribution(p) for p in KNOBS}
    tell = tell or (lambda study, trial, value: study.tell(trial, value))
    out = []
    for _ in range(n_batches):
        trials = [study.ask(dists) for _ in range(batch)]
        params = [dict(t.params) for t in trials]
        for t, s in zip(trials, _score(params)):
            tell(study, t, float(s))
        out += params
    return out


def test_batch_tpe_sampler_follows_the_plain_samplers_trials():
    """The same 48 trials as Optuna's own TPESampler, to rounding (its estimator evaluates
    the same kernels with SciPy: `search.parzen`), with fewer estimators built."""
    import warnings
    from search.engines import BatchTPESampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        plain = optuna.samplers.TPESampler(seed=5, multivariate=True, n_startup_trials=4)
        batch = BatchTPESampler(seed=5, multivariate=True, n_startup_trials=4)
    built = []
    original = optuna.samplers.TPESampler._build_parzen_estimator

    def counting(self, *args, **kwargs):
        built.append(self is batch)
        return original(self, *args, **kwargs)

    optuna.samplers.TPESampler._build_parzen_estimator = counting
    try:
        want, got = _batched_trials(plain), _batched_trials(batch)
    finally:
        optuna.samplers.TPESampler._build_parzen_estimator = original
    assert len(got) == len(want) == 48
    for g, w in zip(got, want):
        assert g["m"] == w["m"]  # the categorical choice itself
        assert g["a"] == pytest.approx(w["a"], abs=1e-9)
        assert g["b"] == pytest.approx(w["b"], abs=1e-9)
    n_plain, n_batch = built.count(False), built.count(True)
    # "below" once per batch (8 asks), "above" once per ask (it holds the running trials)
    assert n_plain > 0 and n_batch <= 0.6 * n_plain
    assert isinstance(make_sampler("tpe", 0), BatchTPESampler)


def test_batch_tpe_sampler_uses_optunas_estimator_on_versions_it_does_not_follow(monkeypatch):
    """Where `search.parzen` does not follow the installed Optuna, the sampler keeps Optuna's
    own estimator, and its trials are the plain sampler's, bit for bit."""
    import warnings
    from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator
    import search.parzen as parzen
    from search.engines import BatchTPESampler
    assert parzen.optuna_supported("4.5.0") and parzen.optuna_supported("5.2.0.dev0")
    assert not parzen.optuna_supported("4.4.0") and not parzen.optuna_supported("6.0.0")
    assert BatchTPESampler(seed=1)._parzen_estimator_cls is parzen.VectorParzenEstimator
    monkeypatch.setattr(parzen, "optuna_supported", lambda version=None: False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        plain = optuna.samplers.TPESampler(seed=5, multivariate=True, n_startup_trials=4)
        batch = BatchTPESampler(seed=5, multivariate=True, n_startup_trials=4)
    assert batch._parzen_estimator_cls is _ParzenEstimator
    assert _batched_trials(batch) == _batched_trials(plain)


def _tpe(**kw):
    import warnings
    from search.engines import BatchTPESampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return BatchTPESampler(seed=5, multivariate=True, n_startup_trials=4, **kw)


def test_batch_tpe_bookkeeping_leaves_every_trial_as_it_was():
    """The search space without Optuna's deep copy, the finished trials' internal values kept
    and the tell without its returned copy change no trial, bit for bit: the same sampler
    with Optuna's own three steps asks the same 48 trials."""
    from optuna.search_space import IntersectionSearchSpace
    from search.engines import _teller
    fast = _batched_trials(_tpe(), tell=_teller())
    plain = _tpe()
    assert plain._followed  # (this Optuna is one search.parzen follows)
    plain._followed = False  # Optuna's _get_internal_repr
    plain._search_space = IntersectionSearchSpace(include_pruned=True)
    assert _batched_trials(plain) == fast


def test_internal_values_equal_optunas_for_every_trial_state():
    """`BatchTPESampler._get_internal_repr` equals Optuna's (values and dtypes) on complete,
    pruned, failed and running trials (a running one's params are the relative ones it was
    sampled with), a trial without one of the parameters, and after a running trial
    finishes with other values than the ones first read."""
    from search.engines import BatchTPESampler
    sampler = _tpe()
    study = optuna.create_study(sampler=sampler, direction="maximize")
    dists = {p.name: distribution(p) for p in KNOBS}
    for i in range(8):
        t = study.ask(dists)
        study.tell(t, float(i % 3))
    t = study.ask({"a": dists["a"]})  # misses b and m
    study.tell(t, 1.0)
    pruned = study.ask(dists)
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    study.tell(study.ask(dists), state=optuna.trial.TrialState.FAIL)
    running = [study.ask(dists) for _ in range(3)]
    space = dict(sorted(dists.items()))

    plain = optuna.samplers.TPESampler._get_internal_repr
    extra = (study,) if "study" in inspect.signature(plain).parameters else ()  # (Optuna 5)

    def both():
        trials = study.get_trials(deepcopy=False)
        got = sampler._get_internal_repr(trials, space, *extra)
        want = plain(sampler, trials, space, *extra)
        assert got.keys() == want.keys()
        for k in want:
            assert got[k].dtype == want[k].dtype
            np.testing.assert_array_equal(got[k], want[k])
        return got

    first = both()
    assert len(first["a"]) == 8 + 1 + 1 + 3  # every trial with all three parameters
    study.tell(running[0], 5.0)
    both()
    assert isinstance(sampler, BatchTPESampler)


def test_search_space_without_the_copy_equals_optunas():
    """`_SharedIntersection` gives Optuna's intersection search space while a study grows,
    a parameter whose range changes leaving it, as Optuna's does."""
    from optuna.search_space import IntersectionSearchSpace
    from search.engines import _SharedIntersection
    ours, theirs = _SharedIntersection(include_pruned=True), IntersectionSearchSpace(True)
    cached = (True,) if "use_cache" in inspect.signature(theirs.calculate).parameters else ()
    study = optuna.create_study(direction="maximize")
    dists = {p.name: distribution(p) for p in KNOBS}
    seen = []
    for i in range(6):
        d = dict(dists)
        if i == 4:
            d["a"] = optuna.distributions.FloatDistribution(0.0, 2.0)
        study.tell(study.ask(d), float(i))
        got, want = ours.calculate(study, *cached), theirs.calculate(study, *cached)
        assert got == want and list(got) == list(want)
        seen.append(set(got))
    assert seen[3] == {"a", "b", "m"} and seen[5] == {"b", "m"}


def test_two_workers_never_take_the_same_waiting_trial_of_a_sqlite_study(tmp_path):
    """Optuna takes an enqueued trial by reading that it waits, then marking it running; on
    sqlite that is atomic only in a transaction begun with BEGIN IMMEDIATE (`make_storage`).
    Two workers asking at the same moment, 80 times: without it about 1 in 6 pairs got the
    same trial (and a worker's tell then failed: "Cannot tell a COMPLETE trial")."""
    import threading
    url = f"sqlite:///{tmp_path}/race.db"
    first = optuna.create_study(study_name="race", storage=make_storage(url))
    workers = [first, optuna.load_study(study_name="race", storage=make_storage(url))]
    space = {"x": optuna.distributions.FloatDistribution(-1.0, 100.0)}
    same = 0
    for r in range(80):
        first.enqueue_trial({"x": float(r)})
        got, barrier = [None, None], threading.Barrier(2)

        def ask(i):
            barrier.wait()
            got[i] = workers[i].ask(space)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        same += got[0].number == got[1].number
        for trial in {g.number: g for g in got}.values():
            first.tell(trial.number, 1.0)
    assert same == 0
    queued = {float(r) for r in range(80)}
    assert sorted(t.params["x"] for t in first.get_trials() if t.params["x"] in queued) == \
        sorted(queued)  # every enqueued setting taken exactly once
