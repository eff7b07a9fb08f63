"""Folds (disjoint, covering, stratified, seeded) and the paired bootstrap (None clips)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casdri.errors import InputError
from search.folds import stratified_folds
from casdri.stats import (cluster_weights, dataset_mean, gain_difference, paired_bootstrap,
                          paired_bootstrap_parts)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=2, max_size=200), st.integers(1, 7), st.integers(0, 9))
def test_folds_disjoint_cover_stratified(strata, k, seed):
    strata = np.array(strata)
    k = min(k, strata.size)
    f = stratified_folds(strata, k, seed)
    held = [np.flatnonzero(f.held_out(i)) for i in range(k)]
    if k > 1:
        allh = np.concatenate(held)
        assert np.array_equal(np.sort(allh), np.arange(strata.size))  # disjoint and covering
        for i in range(k):
            assert not (f.tune(i) & f.held_out(i)).any()
            assert (f.tune(i) | f.held_out(i)).all()
    sizes = np.bincount(f.fold_of, minlength=k)
    assert sizes.max() - sizes.min() <= 1
    for v in np.unique(strata):  # every stratum split as evenly as it can be
        per = np.bincount(f.fold_of[strata == v], minlength=k)
        assert per.max() - per.min() <= 1
    assert np.array_equal(stratified_folds(strata, k, seed).fold_of, f.fold_of)


def test_folds_seed_changes_split():
    strata = np.repeat([0, 1, 2, 3], 50)
    a, b = stratified_folds(strata, 5, 0), stratified_folds(strata, 5, 1)
    assert not np.array_equal(a.fold_of, b.fold_of)


@pytest.mark.parametrize("strata, k, match", [
    (np.array([0.5, 1.0]), 2, "non-negative integers"),
    (np.array([0, -1]), 2, "non-negative integers"),
    (np.array([0, 1]), 3, "1 <= k <= 2"),
    (np.array([0, 1]), 0, "1 <= k"),
])
def test_folds_bad_input(strata, k, match):
    with pytest.raises(InputError, match=match):
        stratified_folds(strata, k)


def test_dataset_mean_ignores_none():
    assert dataset_mean(np.array([np.nan, 2.0, 4.0])) == 3.0
    assert np.isnan(dataset_mean(np.array([np.nan])))


def test_paired_bootstrap_recomputes_means_with_none():
    rng = np.random.default_rng(0)
    base = rng.normal(5, 3, 400)
    tuned = base + 0.5 + rng.normal(0, 0.2, 400)
    base[:50] = np.nan     # None under baseline, scored (0 dB: a false positive) when tuned
    tuned[:50] = 0.0
    r = paired_bootstrap(tuned, base, n_boot=2000, seed=1)
    assert r.gain_db == pytest.approx(dataset_mean(tuned) - dataset_mean(base))
    lo, hi = r.gain_ci_db
    assert lo < r.gain_db < hi
    assert r.tuned_ci_db[0] < r.tuned_db < r.tuned_ci_db[1]
    # same seed, same interval; a gain far from zero excludes it
    assert paired_bootstrap(tuned, base, n_boot=2000, seed=1).gain_ci_db == r.gain_ci_db
    big = paired_bootstrap(base + 3.0, base, n_boot=500)
    assert not big.ci_includes_zero and big.gain_ci_db[0] == pytest.approx(3.0)


def test_paired_bootstrap_brute_force_small():
    """Against a plain loop over the same resampling draws."""
    a = np.array([1.0, np.nan, 3.0, 7.0, 2.0])
    b = np.array([0.5, 1.0, np.nan, 6.0, 2.5])
    r = paired_bootstrap(a, b, n_boot=300, seed=4)
    rng = np.random.default_rng(4)
    idx = rng.integers(0, 5, size=(300, 5))
    gains = []
    for row in idx:
        ma, mb = dataset_mean(a[row]), dataset_mean(b[row])
        if np.isfinite(ma) and np.isfinite(mb):
            gains.append(ma - mb)
    assert r.gain_ci_db == pytest.approx(tuple(np.percentile(gains, [2.5, 97.5])))


def test_paired_bootstrap_includes_zero_flag():
    rng = np.random.default_rng(2)
    base = rng.normal(5, 3, 200)
    r = paired_bootstrap(base + rng.normal(0, 1, 200), base, n_boot=500)
    assert r.ci_includes_zero


@pytest.mark.parametrize("repeats", [1, 3])
def test_paired_bootstrap_parts_equal_the_three_pairs_and_add_up(repeats):
    """One set of resamples for a gain and its two parts: each part equals `paired_bootstrap`
    of its pair with the same seed, bit for bit; the point gains add up."""
    rng = np.random.default_rng(7)
    S = 240
    base = rng.normal(1.0, 2.0, S)
    base[rng.random(S) < 0.2] = np.nan  # None clips: each policy has its own
    start = base + rng.normal(0.3, 1.0, S)
    start[rng.random(S) < 0.2] = np.nan
    tuned = start + rng.normal(0.1, 1.0, (repeats, S))
    tuned = tuned[0] if repeats == 1 else tuned
    total, st, tun = paired_bootstrap_parts(tuned, start, base, n_boot=700, seed=3)
    assert total == paired_bootstrap(tuned, base, n_boot=700, seed=3)
    assert st == paired_bootstrap(start, base, n_boot=700, seed=3)
    assert tun == paired_bootstrap(tuned, start, n_boot=700, seed=3)
    assert st.gain_db + tun.gain_db == pytest.approx(total.gain_db, abs=1e-12)
    recs = [[f"r{i % 37}", f"r{(i * 7) % 37}"] for i in range(S)]
    by_rec = paired_bootstrap_parts(tuned, start, base, n_boot=300, seed=3, clusters=recs)
    assert by_rec[1] == paired_bootstrap(start, base, n_boot=300, seed=3, clusters=recs)
    assert by_rec[2] == paired_bootstrap(tuned, start, n_boot=300, seed=3, clusters=recs)
    assert total.gain_db != st.gain_db  # the parts are not the same figure
    with pytest.raises(InputError, match="start: expected one value per soundscape"):
        paired_bootstrap_parts(tuned, np.stack([start, start]), base)
    with pytest.raises(InputError, match="same length"):
        paired_bootstrap_parts(tuned, start[:-1], base)


def test_cluster_weights_keep_a_recordings_soundscapes_together():
    """A soundscape's weight is the product of its recordings' Poisson(1) counts; soundscapes
    in no cluster are clusters of their own (independent, mean 1)."""
    w = cluster_weights([["a"], ["a", "b"], ["b", "b"], None, []], 20_000, seed=3)
    assert w.shape == (20_000, 5)
    assert np.array_equal(w[:, 1], w[:, 0] * w[:, 2])  # a repeated id counts once
    assert np.all(w[w[:, 0] == 0, 1] == 0)
    assert np.abs(w[:, [0, 2, 3, 4]].mean(0) - 1).max() < 0.03
    assert abs(np.corrcoef(w[:, 3], w[:, 4])[0, 1]) < 0.03
    assert abs(np.corrcoef(w[:, 0], w[:, 3])[0, 1]) < 0.03
    for clusters in ([["a"], ["b"], ["c"]], [["a", "b"], ["b", "c"]], [None, None]):
        w = cluster_weights(clusters, 4000, seed=1)  # no padding: every cluster is drawn
        assert (w.std(axis=0) > 0.5).all(), (clusters, w.std(axis=0))
    with pytest.raises(InputError, match="one entry per soundscape"):
        paired_bootstrap(np.zeros(3), np.zeros(3), clusters=[["a"]])


@pytest.mark.parametrize("width", ["two", "one to five"])
def test_a_cluster_bootstrap_covers_the_gain_on_new_recordings(width):
    """Planted: each soundscape mixes 2 (or 1 to 5) of 30 recordings, and its gain is the mean
    of their (random) effects plus noise, so the gain on soundscapes of new recordings is 0.
    Over 40 draws the CI that resamples recordings holds 0 at about its nominal rate without
    being much wider than the spread of the gain itself; the one that resamples soundscapes,
    too narrow for new recordings, holds it much less often."""
    hits = {"recordings": 0, "soundscapes": 0}
    widths, gains = [], []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        effect = rng.normal(0.0, 1.0, 30)
        m = [2] * 300 if width == "two" else rng.integers(1, 6, 300)
        recs = [rng.choice(30, k, replace=False) for k in m]
        base = rng.normal(2.0, 1.0, 300)
        tuned = base + np.array([effect[r].mean() for r in recs]) + rng.normal(0, 0.5, 300)
        gains.append(np.mean(tuned - base))
        for name, cl in (("recordings", [list(r) for r in recs]), ("soundscapes", None)):
            lo, hi = paired_bootstrap(tuned, base, n_boot=400, seed=seed, clusters=cl).gain_ci_db
            hits[name] += lo <= 0.0 <= hi
            if cl is not None:
                widths.append(hi - lo)
    assert hits["recordings"] >= 33, hits  # nominal 38 of 40
    assert hits["soundscapes"] <= 26, hits
    # an honest width: about 2 x 1.96 sd of the gain over draws, not an everything-interval
    assert np.median(widths) < 1.6 * 2 * 1.96 * np.std(gains), (np.median(widths),
                                                                 np.std(gains))


def test_a_gain_difference_between_two_samples_flags_shifts_not_noise():
    """Two independent samples, each resampled on its own: the difference of their gains has
    an interval that excludes 0 about 5 % of the time on pure noise, and nearly always for a
    planted 0.5 dB shift of the same size as the demo's start shift."""
    fires = {0.0: 0, 0.5: 0}
    for shift in fires:
        for seed in range(40):
            rng = np.random.default_rng(seed)
            b1, b2 = rng.normal(1, 2, 300), rng.normal(1, 2, 200)
            a1 = b1 + rng.normal(0.3, 1.5, 300)
            a2 = b2 + rng.normal(0.3 - shift, 1.5, 200)
            d, (lo, hi) = gain_difference(a1, b1, a2, b2, n_boot=400, seed=seed)
            assert d == pytest.approx((a1.mean() - b1.mean()) - (a2.mean() - b2.mean()))
            fires[shift] += not lo <= 0.0 <= hi
    assert fires[0.0] <= 5 and fires[0.5] >= 36, fires
    # each sample resampled on its own: the same sample twice gives a difference sqrt(2) as
    # wide as the gain's own interval (one shared stream would give a zero-width interval)
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 1, 300), rng.normal(0.8, 1, 300)
    lo, hi = gain_difference(a, b, a, b, n_boot=4000)[1]
    g_lo, g_hi = paired_bootstrap(a, b, n_boot=4000).gain_ci_db
    assert (hi - lo) / (g_hi - g_lo) == pytest.approx(np.sqrt(2), rel=0.1)
    # clusters: one draw over the union, so a cluster both samples share moves both
    recs = [[f"r{i % 20}"] for i in range(300)]
    assert gain_difference(a, b, a, b, n_boot=500, clusters_1=recs, clusters_2=recs) == \
        (0.0, (0.0, 0.0))
    other = [[f"q{i % 20}"] for i in range(300)]
    lo, hi = gain_difference(a, b, a, b, n_boot=500, clusters_1=recs, clusters_2=other)[1]
    assert lo < -0.05 and hi > 0.05
    with pytest.raises(InputError, match="both samples or for neither"):
        gain_difference(a, b, a, b, clusters_1=recs)
    with pytest.raises(InputError, match="non-empty samples"):
        gain_difference(a, b, a[:0], b[:0])


@pytest.mark.parametrize("a, b, kw, match", [
    (np.zeros(3), np.zeros(4), {}, "same length"),
    (np.array([np.inf]), np.zeros(1), {}, "Inf"),
    (np.zeros(3), np.zeros(3), {"confidence": 1.5}, "confidence"),
    (np.zeros(3), np.zeros(3), {"n_boot": 0}, "n_boot"),
])
def test_paired_bootstrap_bad_input(a, b, kw, match):
    with pytest.raises(InputError, match=match):
        paired_bootstrap(a, b, **kw)


def test_cluster_weights_take_a_string_as_one_id_and_refuse_a_bad_n_boot():
    """``["rec1", "rec2"]`` names one recording per soundscape (it was split into characters:
    every id shares ``r``, ``e``, ``c``); a negative, fractional or bool ``n_boot`` is refused."""
    from casdri.errors import InputError
    from casdri.stats import cluster_weights
    ids = ["rec1", "rec2", "rec3", "rec4"]
    w = cluster_weights(ids, 2000, seed=0)
    assert np.array_equal(w, cluster_weights([[i] for i in ids], 2000, seed=0))
    assert abs(np.corrcoef(w[:, 0], w[:, 1])[0, 1]) < 0.1  # independent recordings
    for bad in (-1, 0, 2.5, True):
        with pytest.raises(InputError, match="n_boot must be an int >= 1"):
            cluster_weights(ids, bad)


def test_jobs_auto_uses_the_cores_only_for_chains_of_several_stages():
    """``--jobs auto`` (the CLI's default): a worker's start-up costs more than a one-stage
    chain, so one process then; the usable cores, at most one per chain, otherwise."""
    from search.settings import SearchSettings
    s = SearchSettings(jobs="auto").validate()
    assert s.auto_jobs(cores=2) == 2 and s.auto_jobs(cores=64) == 6  # 5 folds + final
    assert s.with_(repeats=3).auto_jobs(cores=64) == 16
    assert s.with_(stage="auto").auto_jobs(cores=2) == 2
    assert s.auto_jobs(cores=1) == 1
    assert s.with_(stage="gates").auto_jobs(cores=16) == 1
    assert s.with_(jobs=3).auto_jobs(cores=1) == 3  # an integer stays as given
    assert s.with_(folds=1).auto_jobs(cores=8) == 1  # only the final chain
    assert s.with_(stage="auto", auto_stages=("gates",)).auto_jobs(cores=2) == 2  # (inner CV)
    assert 1 <= s.auto_jobs() <= 6  # the usable cores, at most 8 (casdri.scoring)
    # the workers beside this process (the CLI's prestart and the benchmark use it)
    assert s.n_workers(cores=2) == 1 and s.n_workers(cores=64) == 5
    assert s.with_(folds=1, jobs=4).n_workers() == 0  # one chain: none
    assert s.with_(stage="gates").n_workers(cores=16) == 0
    with pytest.raises(InputError, match=r"--jobs must be an integer >= 1 or auto, got 'two'"):
        s.with_(jobs="two").validate()
    with pytest.raises(InputError, match=r"--jobs must be an integer >= 1, got 0"):
        s.with_(jobs=0).validate()
