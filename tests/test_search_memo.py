"""The memos on the search's hot path change costs, never results: `search.objective.Objective`
serves a setting it has replayed before from its memo, and refine's change points reuse the
step (a) confidences and the trace of the settings they were computed at."""
from __future__ import annotations

import numpy as np
import pytest

from casdri.policies.refine import change_points
from casdri.replay import prepare, scored_mean, trace
from casdri.synthetic import make_synthetic_cache, random_settings
from search.casdri_problem import CasdriProblem
from search.objective import Objective, with_values


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    cache = make_synthetic_cache(tmp_path_factory.mktemp("memo") / "c", n_soundscapes=60, seed=3)
    return CasdriProblem(cache)


def test_objective_memo_serves_the_replayed_values(problem):
    mask = np.zeros(problem.n_soundscapes, bool)
    mask[::2] = True
    obj = Objective(problem, mask)
    X = random_settings(problem.cache, "refine", 4, np.random.default_rng(0))
    first = obj.values(X[:2])
    assert obj.n_settings == 2 and obj.n_clip_evals == 2 * 30
    # seen, new, repeated, seen: the two new rows are replayed once each, in one batch
    Y = np.stack([X[1], X[2], X[2], X[0], X[3]])
    got = obj.values(Y)
    assert obj.n_settings == 7 and obj.n_clip_evals == 4 * 30
    want = problem.values(Y, obj.idx)
    np.testing.assert_array_equal(got, want)  # bit for bit, NaN (None clips) included
    np.testing.assert_array_equal(first, want[[3, 0]])
    got[:] = 0.0  # what a caller does with its copy does not reach the memo
    np.testing.assert_array_equal(obj.values(X[:1]), want[3:4])
    assert obj.score(X[1]) == scored_mean(want[0])  # the one dataset-mean rule


def test_objective_memo_sums_equal_a_replay(problem):
    obj = Objective(problem, np.ones(problem.n_soundscapes, bool))
    x = problem.start_vector()
    keep = np.arange(problem.n_soundscapes) % 3 != 0
    fresh = obj.sums(x, keep)  # not in the memo: replayed
    obj.values(x[None, :])
    n = obj.n_clip_evals
    assert obj.sums(x, keep) == fresh and obj.n_clip_evals == n  # from the memo, same sums


@pytest.mark.parametrize("name", ["drop_thr", "prob_gate", "tagger_silence_gate", "verify_thr",
                                  "energy_gate_db", "silence_thr", "tagger_silence_margin", "w"])
def test_change_point_memo_equals_a_fresh_computation(problem, name):
    cache = problem.cache
    prep = prepare(cache, "refine")

    def fresh():
        return change_points(cache, prep, lambda X, idx: trace(cache, "refine", X, idx))

    memo = fresh()
    idx = np.arange(0, problem.n_soundscapes, 2)
    X = random_settings(cache, "refine", 3, np.random.default_rng(1))
    lay = problem.layout
    x2 = X[0].copy()
    x2[lay["drop_thr"]] = X[1][lay["drop_thr"]]  # differs only where step (a) does not read
    x3 = X[0].copy()
    x3[lay["w"]] = X[2][lay["w"]]  # differs where it does
    for x in (X[0], x2, x3, X[0], X[1]):
        for cls in (None, 0, 5):
            a, b = memo(name, cls, x, idx), fresh()(name, cls, x, idx)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("name", ["drop_thr", "prob_gate", "tagger_silence_gate", "verify_thr",
                                  "energy_gate_db", "silence_thr", "solo_keep_4ch"])
def test_values_moved_equals_a_full_replay(problem, name):
    """A sweep's halves are scored by replaying only the soundscapes the coordinate's change
    points name (`Objective.values_moved`): bit for bit the full replay, for global and
    per-class moves, at values inside, between and beyond the change points."""
    mask = np.arange(problem.n_soundscapes) % 4 != 1
    obj = Objective(problem, mask)
    param = problem.params[name]
    named = []
    for x in random_settings(problem.cache, "refine", 3, np.random.default_rng(7)):
        v0 = problem.values(x[None, :], obj.idx)[0]
        for cls in (None, 0, 4, 11):
            cps = problem.change_points(name, cls, x, obj.idx)
            moved = np.zeros(obj.idx.shape[0], bool)
            moved[cps[0]] = True
            named.append(moved.sum())
            assert moved.sum() < moved.shape[0]  # a real saving, not a full replay
            pts = np.unique(np.concatenate([
                cps[1][np.isfinite(cps[1])][:20], [param.low, param.high, 0.5 * (
                    param.low + param.high)]]))
            pts = pts[(pts >= param.low) & (pts <= param.high)]
            X = with_values(x, param, pts, cls)
            n = obj.n_clip_evals
            got = obj.values_moved(X, v0, moved)
            assert obj.n_clip_evals - n == len(pts) * moved.sum()
            np.testing.assert_array_equal(got, problem.values(X, obj.idx))
    assert max(named) > 0  # and moves that change something


def test_values_moved_trusts_its_soundscapes(problem):
    """It replays only where told (so the full replay of a kept move stays the check): a
    `moved` set that leaves out a soundscape the move changes gives the old value there."""
    obj = Objective(problem, np.ones(problem.n_soundscapes, bool))
    x = problem.start_vector()
    param = problem.params["prob_gate"]
    X = with_values(x, param, [param.high], None)  # gates every stem: many values change
    v0 = problem.values(x[None, :], obj.idx)[0]
    full = problem.values(X, obj.idx)[0]
    changed = np.flatnonzero(~((full == v0) | (np.isnan(full) & np.isnan(v0))))
    assert changed.size > 1
    moved = np.ones(obj.idx.shape[0], bool)
    moved[changed[0]] = False
    got = obj.values_moved(X, v0, moved)[0]
    assert got[changed[0]] == v0[changed[0]] != full[changed[0]]
    np.testing.assert_array_equal(np.delete(got, changed[0]), np.delete(full, changed[0]))
