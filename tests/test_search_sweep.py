"""Exact sweep math: intervals, tie-breaking, sparse (cumsum of deltas) == dense == brute force."""
from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import search.objective
from casdri import stats
from search import engines, folds, sweep
from search.sweep import interval_grid, pick_best, sweep_dense, sweep_sparse


@pytest.mark.parametrize("module", [sweep, stats, folds, engines, search.objective])
def test_doctests(module):
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


def test_interval_grid_drops_out_of_range_and_duplicates():
    edges, pts = interval_grid(np.array([0.3, 0.3, -1, 5, np.nan, 0.7]), 0.0, 1.0)
    assert edges.tolist() == [0.0, 0.3, 0.7, 1.0]
    assert np.allclose(pts, [0.15, 0.5, 0.85])


def test_interval_grid_merges_intervals_without_interior_float():
    v = 0.5
    edges, pts = interval_grid(np.array([v, np.nextafter(v, 1)]), 0.0, 1.0)
    assert ((pts > edges[:-1]) & (pts < edges[1:])).all()


def test_pick_best_widest_run():
    edges = np.array([0, 1, 2, 3, 4, 10.0])
    scores = np.array([5, 1, 5, 5, 2.0])  # runs [0,1] (width 1) and [2,4] (width 2)
    value, j = pick_best(edges, scores)
    assert value == 3.0 and scores[j] == 5


def _clip_model(rng, n_clips):
    """Each clip: value depends on how many of its cached values lie below t (a step function)."""
    cps = [np.sort(rng.random(rng.integers(0, 4))) for _ in range(n_clips)]
    table = [rng.normal(0, 5, c.size + 1) for c in cps]
    none = [rng.random(c.size + 1) < 0.2 for c in cps]

    def clip_value(t, i):
        k = int(np.searchsorted(cps[i], t, side="right"))  # compare with >= (keep if p >= t)
        return np.nan if none[i][k] else table[i][k]

    return cps, clip_value


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 30))
def test_sparse_equals_dense_equals_brute(seed, n_clips):
    rng = np.random.default_rng(seed)
    cps, clip_value = _clip_model(rng, n_clips)

    def dataset(t):
        v = np.array([clip_value(t, i) for i in range(n_clips)])
        ok = ~np.isnan(v)
        return v[ok].mean() if ok.any() else np.nan

    allcp = np.concatenate(cps) if cps else np.zeros(0)
    if np.isnan([dataset(t) for t in interval_grid(allcp, 0, 1)[1]]).all():
        return
    dense = sweep_dense(lambda ts: np.array([dataset(t) for t in ts]), allcp, 0.0, 1.0)
    pos = np.repeat(np.arange(n_clips), [c.size for c in cps])
    fixed = np.array([clip_value(0.5, i) for i in range(n_clips) if cps[i].size == 0])
    sparse = sweep_sparse(lambda ts, ids: np.array([clip_value(t, i) for t, i in zip(ts, ids)]),
                          pos, allcp, 0.0, 1.0, np.nansum(fixed), int((~np.isnan(fixed)).sum()))
    assert np.allclose(dense.scores_db, sparse.scores_db, equal_nan=True, atol=1e-12)
    assert dense.value == sparse.value
    brute = np.nanmax([dataset(t) for t in np.linspace(0, 1, 1001)])
    assert dense.score_db >= brute - 1e-12
    assert dataset(dense.value) == pytest.approx(dense.score_db, abs=1e-12)
    assert sparse.n_evaluations == sum(c.size + 1 for c in cps if c.size)


def test_sparse_with_base():
    # one moving clip (value 2 below 0.5, None above) plus fixed clips summing to 6 over 3
    res = sweep_sparse(lambda ts, ids: np.where(ts < 0.5, 2.0, np.nan), np.array([0]),
                       np.array([0.5]), 0.0, 1.0, base_sum_db=6.0, base_count=3)
    assert np.allclose(res.scores_db, [2.0, 2.0])
    res = sweep_sparse(lambda ts, ids: np.where(ts < 0.5, 10.0, np.nan), np.array([0]),
                       np.array([0.5]), 0.0, 1.0, base_sum_db=6.0, base_count=3)
    assert np.allclose(res.scores_db, [4.0, 2.0]) and res.value == 0.25
