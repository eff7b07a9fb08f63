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


def _reference_sparse_scores(values_fn, pos, val, lo, hi, base_sum, base_count, groups):
    """`sweep_sparse`'s scores by its first implementation (numpy, main 836d595; the change
    points it reads, `sweep.distinct_points`, are shared): the jitted passes must give the
    same numbers bit for bit (same sums in the same order)."""
    ids = np.unique(pos)
    edges, points = interval_grid(val, lo, hi)
    inner = edges[1:-1]
    n_int = points.shape[0]
    p2, v2 = sweep.distinct_points(pos, val, inner)
    first = np.searchsorted(p2, ids, side="left")
    m = np.searchsorted(p2, ids, side="right") - first
    n_local = m + 1
    group = np.repeat(np.arange(ids.shape[0]), n_local)
    k = np.arange(int(n_local.sum())) - np.repeat(np.cumsum(n_local) - n_local, n_local)
    last_k = k == m[group]
    li = np.clip(first[group] + k - 1, 0, max(v2.shape[0] - 1, 0))
    ri = np.clip(first[group] + k, 0, max(v2.shape[0] - 1, 0))
    v2_or = v2 if v2.size else np.zeros(1)
    left = np.where(k == 0, float(lo), v2_or[li])
    right = np.where(last_k, float(hi), v2_or[ri])
    thr = 0.5 * (left + right)
    start = np.where(k == 0, 0, np.searchsorted(inner, left) + 1)
    values = np.asarray(values_fn(thr, ids[group]), dtype=np.float64)
    okv = ~np.isnan(values)
    vs, vc = np.where(okv, values, 0.0), okv.astype(np.float64)
    prev_vs = np.where(k == 0, 0.0, np.roll(vs, 1))
    prev_vc = np.where(k == 0, 0.0, np.roll(vc, 1))
    if groups is None:
        g_of, n_g = np.zeros(start.shape[0], np.int64), 1
        base_s, base_c = np.array([base_sum], np.float64), np.array([base_count], np.float64)
    else:
        n_g = int(groups.max()) + 1
        g_of = groups[ids[group]]
        base_s = np.broadcast_to(np.asarray(base_sum, np.float64), (n_g,))
        base_c = np.broadcast_to(np.asarray(base_count, np.float64), (n_g,))
    key = g_of * n_int + start
    d_sum = np.bincount(key, weights=vs - prev_vs, minlength=n_g * n_int).reshape(n_g, n_int)
    d_cnt = np.bincount(key, weights=vc - prev_vc, minlength=n_g * n_int).reshape(n_g, n_int)
    g_total = base_s[:, None] + np.cumsum(d_sum, axis=1)
    g_count = base_c[:, None] + np.rint(np.cumsum(d_cnt, axis=1))
    total, count = g_total.sum(0), g_count.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(count > 0, total / np.maximum(count, 1), np.nan),
                np.where(g_count > 0, g_total / np.maximum(g_count, 1), np.nan))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40), st.booleans())
def test_sparse_sums_equal_the_numpy_reference(seed, n_clips, halves):
    rng = np.random.default_rng(seed)
    cps, clip_value = _clip_model(rng, n_clips)
    cps = [np.round(c, 2) for c in cps]  # ties between clips, and points that repeat
    pos = np.repeat(np.arange(n_clips), [c.size for c in cps])
    allcp = np.concatenate(cps + [rng.choice([-1.0, 0.0, 1.0, 2.0, np.inf], 3)]) \
        if pos.size else np.zeros(0)
    pos = np.concatenate([pos, rng.integers(0, n_clips, allcp.size - pos.size)])
    groups = rng.integers(0, 2, n_clips) if halves else None
    n_g = int(groups.max()) + 1 if halves else None
    base_sum = rng.normal(0, 20, n_g)
    base_count = rng.integers(0, 9, n_g).astype(np.float64)

    def values_fn(ts, ids):
        return np.array([clip_value(t, i) for t, i in zip(ts, ids)], np.float64)

    want, want_g = _reference_sparse_scores(values_fn, pos, allcp, 0.0, 1.0, base_sum,
                                            base_count, groups)
    if np.isnan(want).all():
        return
    got = sweep_sparse(values_fn, pos, allcp, 0.0, 1.0, base_sum, base_count, groups=groups)
    np.testing.assert_array_equal(got.scores_db, want)
    if halves:
        np.testing.assert_array_equal(got.group_scores_db, want_g)
