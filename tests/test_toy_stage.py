"""Adding a stage touches no other file: a toy stage is defined here, registered through
`search.stages.register_stage`, given its parameters by the policy's ``SEARCH_PLAN`` and run in
a chain on a synthetic cache (the walkthrough "Add a stage" of docs/ARCHITECTURE.md).

The toy ``coarse`` stage: draws a few values of each parameter the plan gives it (seeded by its
name), scores them in one batch replay and keeps the best one that beats the start.
"""
from __future__ import annotations

import numpy as np
import pytest

from casdri.errors import InputError
from casdri.policies import get_policy
from casdri.replay import replay
from casdri.synthetic import make_synthetic_cache
from search.casdri_problem import CasdriProblem
from search.objective import Objective, with_values
from search.settings import SearchSettings
from search.stage_joint import stage_params
from search.stages import STAGES, StageContext, StageRecord, register_stage, run_chain

N_DRAWS = 5


def coarse_stage(x: np.ndarray, start: float, ctx: StageContext) -> StageRecord:
    """The toy stage: ``(x, start_score_db, ctx) -> StageRecord``, never below its start."""
    obj = ctx.objective
    rng = np.random.default_rng(ctx.stage_seed("coarse"))
    best_x, best = x.copy(), start
    trials = []
    for p in stage_params(obj.problem, "coarse"):
        values = (rng.choice(np.asarray(p.choices), N_DRAWS) if p.categorical
                  else rng.uniform(p.low, p.high, N_DRAWS))
        X = with_values(best_x, p, values)
        scores = obj.scores(X)
        trials += [{"param": p.name, "value": float(v), "score_db": float(s)}
                   for v, s in zip(values, scores)]
        j = int(np.nanargmax(scores)) if np.isfinite(scores).any() else -1
        if j >= 0 and (not np.isfinite(best) or scores[j] > best):
            best_x, best = X[j].copy(), float(scores[j])
    return StageRecord("coarse", ctx.fold, "random", start, best, x.copy(), best_x,
                       trials=trials, note="" if trials else "the plan moves nothing here")


@pytest.fixture
def toy_stage(monkeypatch):
    """Register the toy stage and give it ``w`` in refine's search plan (both undone after)."""
    monkeypatch.setitem(get_policy("refine").SEARCH_PLAN, "coarse", ("w",))
    register_stage("coarse", coarse_stage)
    yield coarse_stage
    STAGES.pop("coarse", None)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_synthetic_cache(tmp_path_factory.mktemp("toy_stage") / "c", n_soundscapes=40,
                                seed=5)


def _chain(cache, seed):
    problem = CasdriProblem(cache)
    obj = Objective(problem, np.ones(cache.n_soundscapes, bool))
    ctx = StageContext(obj, SearchSettings(seed=seed, n_trials=6))
    x0 = problem.start_vector()
    return problem, x0, run_chain(["verify", "coarse"], x0, ctx)


def test_toy_stage_runs_in_a_chain(cache, toy_stage):
    problem, x0, (first, rec) = _chain(cache, seed=3)
    assert rec.stage == "coarse" and rec.fold == "final" and rec.engine == "random"
    np.testing.assert_array_equal(rec.x_start, first.x_end)  # starts where verify ended
    assert rec.end_score_db >= rec.start_score_db
    # the plan's parameter only: columns outside w never move
    moved = np.flatnonzero(rec.x_end != rec.x_start)
    assert set(moved) <= set(problem.params["w"].columns.tolist())
    assert [t["param"] for t in rec.trials] == ["w"] * N_DRAWS
    # run_stage's bookkeeping: the settings scored (the start and the draws) and the
    # soundscape-settings replayed (the draws: the start's values come from the objective's
    # memo, replayed when the verify stage ended there)
    assert rec.n_settings == N_DRAWS + 1 and rec.n_clip_evals == N_DRAWS * 40
    # the recorded score is the replay's dataset mean, bit for bit (one dataset-mean rule)
    assert rec.end_score_db == float(replay(cache, "refine", rec.x_end[None, :]).capi_sdri[0])
    assert rec.start_score_db == float(replay(cache, "refine", rec.x_start[None, :]).capi_sdri[0])


def test_toy_stage_seeded_by_name(cache, toy_stage):
    _, _, (_, a) = _chain(cache, seed=3)
    _, _, (_, b) = _chain(cache, seed=3)
    _, _, (_, c) = _chain(cache, seed=4)
    assert a.trials == b.trials and np.array_equal(a.x_end, b.x_end)
    assert [t["value"] for t in a.trials] != [t["value"] for t in c.trials]


def test_register_stage_refuses_a_taken_name(toy_stage):
    with pytest.raises(InputError, match="taken"):
        register_stage("verify", coarse_stage)
    with pytest.raises(InputError, match="not callable"):
        register_stage("other", 3)
    assert register_stage("coarse", coarse_stage) is coarse_stage  # the same function again


def test_a_stage_the_plan_does_not_name_moves_nothing(cache):
    register_stage("coarse", coarse_stage)
    try:
        problem = CasdriProblem(cache)
        ctx = StageContext(Objective(problem, np.ones(cache.n_soundscapes, bool)))
        (rec,) = run_chain(["coarse"], problem.start_vector(), ctx)
    finally:
        STAGES.pop("coarse", None)
    assert rec.trials == [] and rec.note and np.array_equal(rec.x_end, rec.x_start)
