"""The evidence rule (`search.acceptance`): its pieces, the grouped exact sweep it reads, global
moves, and the rule on synthetic caches with a planted per-class effect (kept) and with pure
noise (nothing per-class kept). The 20-seed version is `benchmarks/bench_acceptance.py`."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from casdri.errors import InputError
from casdri.synthetic import QUIET_GATE_DB, make_synthetic_cache
from search.acceptance import (Acceptance, cluster_links, clustered_t_pvalue, halves,
                               linearised_gains, one_sided_t_pvalue, part_scores)
from search.casdri_problem import CasdriProblem
from search.moves import best_move, threshold_ends
from search.objective import Objective
from search.settings import SearchSettings
from search.stages import StageContext, run_stage
from casdri.stats import dataset_mean
from tests.test_search_toy import ToyProblem

PLANTED = "Cough"


# ----------------------------------------------------------------------------- pieces
def test_halves_balanced_seeded_and_per_chain():
    h = halves(101, 3, "fold-0")
    assert h.dtype == np.int8 and set(np.unique(h)) == {0, 1} and h.sum() == 50
    assert np.array_equal(h, halves(101, 3, "fold-0"))
    assert not np.array_equal(h, halves(101, 3, "fold-1"))
    assert not np.array_equal(h, halves(101, 4, "fold-0"))


@pytest.mark.parametrize("seed", range(5))
def test_linearised_gains_sum_to_the_change_of_the_mean(seed):
    rng = np.random.default_rng(seed)
    v0 = rng.normal(3, 4, 50)
    v1 = v0 + np.where(rng.random(50) < 0.2, rng.normal(0, 3, 50), 0.0)
    v0[rng.random(50) < 0.2] = np.nan   # None clips on either side, some only on one
    v1[rng.random(50) < 0.2] = np.nan
    psi = linearised_gains(v0, v1)
    n1 = int((~np.isnan(v1)).sum())
    assert psi.sum() / n1 == pytest.approx(dataset_mean(v1) - dataset_mean(v0), abs=1e-12)


def test_part_scores_are_dataset_means_per_part():
    V = np.array([[1.0, np.nan, 3.0, 5.0], [np.nan, np.nan, 2.0, 2.0]])
    parts = np.array([0, 0, 1, 1])
    got = part_scores(V, parts)
    assert np.allclose(got, [[1.0, np.nan], [4.0, 2.0]], equal_nan=True)


def _acc(n, **kw):
    return Acceptance(parts=halves(n, 0, "t"), **kw)


def test_judge_keeps_consistent_gain_and_drops_noise():
    n = 1000
    rng = np.random.default_rng(0)
    v0 = rng.normal(4, 3, n)
    acc = _acc(n)
    good = v0.copy()
    hit = rng.choice(n, 30, replace=False)
    good[hit] += 3.0                       # 30 soundscapes gain, on both halves
    ev = acc.judge(dataset_mean(good) - dataset_mean(v0), v0, good)
    assert ev.accepted and ev.n_changed == 30 and ev.p_value < 1e-6, ev
    bad = v0.copy()
    bad[hit] += rng.choice([-3.0, 3.0], 30)  # same size, random signs
    ev = acc.judge(0.01, v0, bad)
    assert not ev.accepted, ev


def test_judge_needs_both_halves_and_enough_soundscapes():
    n = 400
    v0 = np.zeros(n)
    acc = _acc(n)
    one_half = v0.copy()
    one_half[np.flatnonzero(acc.parts == 0)[:40]] = 5.0  # all the gain sits on half 0
    ev = acc.judge(0.5, v0, one_half)
    assert not ev.accepted and "halves disagree" in ev.reason
    few = v0.copy()
    few[[np.flatnonzero(acc.parts == g)[0] for g in (0, 1)]] = 5.0
    ev = _acc(n, min_changed=3).judge(0.02, v0, few)
    assert not ev.accepted and "fewer than 3" in ev.reason
    assert not acc.judge(0.3, v0, None).accepted  # neither half found a gain


def test_margin_rule_is_the_old_rule():
    acc = Acceptance("margin", margin_db=0.05)
    assert acc.judge(0.051).accepted and not acc.judge(0.05).accepted
    assert acc.judge(np.inf).accepted  # the current score is undefined


@pytest.mark.parametrize("kw, match", [
    (dict(rule="vote"), "expected one of evidence, margin"),
    (dict(alpha=0.0), "alpha must be in"),
    (dict(min_changed=-1), "min_changed"),
    (dict(margin_db=-0.1), "margin must be"),
])
def test_bad_rule_settings(kw, match):
    with pytest.raises(InputError, match=match):
        Acceptance(**kw)


# ----------------------------------------------------------------------------- grouped sweep
def test_sweep_part_scores_equal_direct_replay():
    """The exact sweep's score of every interval on each half equals a direct replay there."""
    toy = ToyProblem(n_soundscapes=90, seed=4)
    obj = Objective(toy, np.arange(90) % 5 != 0)
    acc = Acceptance(parts=halves(obj.idx.shape[0], 1, "x"))
    x = toy.start
    p = toy.params["prob_gate"]
    for cls in (None, 0, 2):
        m = best_move(obj, x, p, cls, obj.score(x), accept=acc)
        from search.moves import _sparse  # the grouped sweep the move read
        v0 = obj.values(x[None])[0]
        res = _sparse(obj, x, p, cls, toy.change_points("prob_gate", cls, x, obj.idx),
                      acc.parts, v0)
        cols = p.columns if cls is None else p.columns[[cls]]
        X = np.repeat(x[None], res.points.size, 0)
        X[:, cols] = res.points[:, None]
        direct = part_scores(obj.values(X), acc.parts)
        assert np.allclose(direct, res.group_scores_db, atol=1e-9, equal_nan=True), cls
        assert np.allclose(res.scores_db, m.scores_db, atol=1e-12, equal_nan=True)


# ----------------------------------------------------------------------------- synthetic caches
@pytest.fixture(scope="module")
def noise_cache(tmp_path_factory):
    return make_synthetic_cache(tmp_path_factory.mktemp("noise") / "c", n_soundscapes=300,
                                seed=7, noise=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_noise_accepts_no_per_class_change(noise_cache, seed):
    problem = CasdriProblem(noise_cache)
    obj = Objective(problem, np.ones(problem.n_soundscapes, bool))
    for stage in ("per-class", "refine"):
        rec = run_stage(stage, problem.start_vector(), StageContext(obj, SearchSettings(seed=seed)))
        kept = [(m.param, m.cls, m.evidence.reason) for m in rec.moves
                if m.kept and m.cls is not None]
        assert kept == [], (stage, kept)
        assert rec.end_score_db >= rec.start_score_db


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_per_class_gate_is_accepted(tmp_path, seed):
    cache = make_synthetic_cache(tmp_path / "p", n_soundscapes=600, seed=seed, noise=True,
                                 planted={"quiet_false_positives": {PLANTED: 1.0}})
    problem = CasdriProblem(cache)
    obj = Objective(problem, np.ones(problem.n_soundscapes, bool))
    x = problem.start_vector()
    col = problem.params["energy_gate_db"].columns
    c = problem.class_names.index(PLANTED)
    y = x.copy()
    y[col[c]] = QUIET_GATE_DB
    assert obj.score(y) > obj.score(x)  # the planted effect exists
    ctx = StageContext(obj, SearchSettings(seed=seed))
    m = best_move(obj, x, problem.params["energy_gate_db"], c, obj.score(x),
                  accept=ctx.acceptance())
    # kept; the one-SE rule may stop short of the best run, but only quiet false positives
    # (energy < -50 dB) of the class lie below -40 dB
    assert m.kept and -70.0 < m.value <= -40.0, m.evidence
    g = best_move(obj, x, problem.params["energy_gate_db"], None, obj.score(x),
                  accept=ctx.acceptance())
    assert not g.kept  # one shared gate would silence the other classes' quiet targets
    rec = run_stage("refine", x, ctx)
    assert -70.0 < rec.x_end[col[c]] <= -40.0
    assert (np.delete(rec.x_end[col], c) < -70.0).all()


def test_a_planted_gate_is_kept_when_its_soundscapes_span_recordings_not_when_they_share_one(
        tmp_path):
    """The planted per-class gate of the test above, in a search that knows recordings
    (``CasdriProblem(cache, recordings=...)``, as for a cache without the column). Its
    soundscapes spread over 30 recordings: kept. The same soundscapes all of one recording
    (the gain is that recording's): the move's clustered test drops it, and ``--group-by
    none`` (no clusters) keeps it again."""
    cache = make_synthetic_cache(tmp_path / "p", n_soundscapes=600, seed=0, noise=True,
                                 planted={"quiet_false_positives": {PLANTED: 1.0}})
    plain = CasdriProblem(cache)
    x = plain.start_vector()
    col = plain.params["energy_gate_db"].columns
    c = plain.class_names.index(PLANTED)
    y = x.copy()
    y[col[c]] = QUIET_GATE_DB
    full = Objective(plain, np.ones(plain.n_soundscapes, bool))
    v0, v1 = full.values(x[None])[0], full.values(y[None])[0]
    moved = ~((v0 == v1) | (np.isnan(v0) & np.isnan(v1)))
    assert moved.sum() >= 20  # the planted effect: soundscapes the gate changes
    rng = np.random.default_rng(0)
    spread = [tuple(f"r{r}" for r in rng.choice(30, rng.integers(1, 4), replace=False))
              for _ in range(plain.n_soundscapes)]
    one = [("r0",) if m else tuple(r for r in rec if r != "r0") for m, rec in zip(moved, spread)]

    def move(recordings, group_by="auto"):
        problem = CasdriProblem(cache, recordings=recordings)
        obj = Objective(problem, np.ones(problem.n_soundscapes, bool))
        acc = StageContext(obj, SearchSettings(seed=0, group_by=group_by)).acceptance()
        return best_move(obj, x, problem.params["energy_gate_db"], c, obj.score(x), accept=acc)

    kept = move(spread)
    assert kept.kept and -70.0 < kept.value <= -40.0, kept.evidence
    dropped = move(one)
    assert not dropped.kept and "clustered by recording" in dropped.evidence.reason, \
        dropped.evidence
    assert move(one, group_by="none").kept
    with pytest.raises(InputError, match=r"recordings: expected one entry per soundscape "
                                         r"\(600\), got 3"):
        CasdriProblem(cache, recordings=one[:3])


def test_global_move_switches_a_gate_off(noise_cache):
    """A global move offers the threshold's ends (gate off / gate all) beside its sweep:
    from a harmful probability gate on every class it is kept, scoring at least "off", and the
    value it writes is one the policy's validation accepts (the tuned policy loads)."""
    problem = CasdriProblem(noise_cache)
    obj = Objective(problem, np.ones(problem.n_soundscapes, bool))
    p = problem.params["prob_gate"]
    x = problem.start_vector()
    x[p.columns] = 0.9
    ctx = StageContext(obj)
    m = best_move(obj, x, p, None, obj.score(x), accept=ctx.acceptance())
    assert m.kept and m.evidence.accepted and m.best_score_db > obj.score(x)
    best = best_move(obj, x, p, None, obj.score(x), margin=0.0)  # the plain best, no 1-SE
    off = x.copy()
    off[p.columns] = threshold_ends(p)[0]  # prob_gate = 0 gates nothing
    assert best.best_score_db >= obj.score(off) - 1e-12 > obj.score(x)
    x[p.columns] = m.value
    assert obj.score(x) == pytest.approx(m.best_score_db, abs=1e-9)
    problem.Params.decode(x, noise_cache)  # raises PolicyError for a value apply would refuse


def test_global_move_ends_are_values_the_policy_allows(noise_cache):
    problem = CasdriProblem(noise_cache)
    for name in ("energy_gate_db", "silence_thr", "prob_gate", "verify_thr"):
        p = problem.params[name]
        ends = threshold_ends(p)
        assert all(p.low <= e <= p.high or e == p.off for e in ends)
    assert -np.inf in threshold_ends(problem.params["energy_gate_db"])
    assert np.inf in threshold_ends(problem.params["silence_thr"])


def test_joint_stage_records_its_evidence(noise_cache):
    problem = CasdriProblem(noise_cache)
    obj = Objective(problem, np.ones(problem.n_soundscapes, bool))
    x = problem.start_vector()
    rec = run_stage("gates", x, StageContext(obj, SearchSettings(n_trials=12, seed=2)))
    assert rec.evidence is not None and rec.end_score_db >= rec.start_score_db
    if not rec.evidence.accepted:
        assert np.array_equal(rec.x_end, x) and rec.gain_db == 0.0


def test_global_move_from_unequal_columns_is_replayed(recwarn):
    """A global move whose shared value equals only the first class's current value is still
    a change: it is replayed (no false "no change", no change-point warning)."""
    toy = ToyProblem(n_soundscapes=90, seed=4)
    obj = Objective(toy, np.ones(90, bool))
    p = toy.params["prob_gate"]
    m1 = best_move(obj, toy.start, p, None, obj.score(toy.start), margin=0.0)
    x = toy.start.copy()
    x[p.columns] = m1.best_value
    x[p.columns[2]] = 0.99  # other classes differ
    m2 = best_move(obj, x, p, None, obj.score(x), margin=0.0)
    assert m2.best_value == m1.best_value == x[p.columns[0]]
    assert m2.best_score_db == pytest.approx(m1.best_score_db, abs=1e-12)
    assert not [w for w in recwarn if "change points" in str(w.message)]


def test_one_sided_t_pvalue_equals_scipy_stats_ttest_1samp():
    rng = np.random.default_rng(0)
    for i in range(300):
        n = int(rng.integers(2, 300))
        x = rng.normal(rng.normal(0, 0.3), 1, n) * 10 ** rng.uniform(-4, 1)
        if i % 5 == 0:
            x = np.where(rng.random(n) < 0.9, 0.0, x)   # mostly unchanged soundscapes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = stats.ttest_1samp(x, 0.0, alternative="greater").pvalue
        np.testing.assert_allclose(one_sided_t_pvalue(x), want, rtol=1e-12, atol=0)
    assert one_sided_t_pvalue([1.0, 1.0, 1.0]) == 0.0
    assert one_sided_t_pvalue([-1.0, -1.0]) == 1.0
    assert np.isnan(one_sided_t_pvalue([0.0, 0.0, 0.0]))


# ----------------------------------------------------------------------------- clustered test
def _recordings(rng, n, n_rec=30, most=3):
    """Per soundscape 1..most of ``n_rec`` recordings, a tenth of them none (zero-target)."""
    return [() if rng.random() < 0.1 else tuple(rng.choice(n_rec, rng.integers(1, most + 1),
                                                            replace=False))
            for _ in range(n)]


def test_clustered_t_pvalue_is_the_plain_test_when_no_soundscapes_share_a_recording():
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(3, 200))
        x = rng.normal(rng.normal(0, 0.3), 1, n)
        links, g = cluster_links([None] * n)  # every soundscape a cluster of its own
        assert g == n and links.nnz == n
        np.testing.assert_allclose(clustered_t_pvalue(x, links, g), one_sided_t_pvalue(x),
                                   rtol=1e-10)


def test_clustered_variance_sums_every_pair_that_shares_a_recording():
    rng = np.random.default_rng(2)
    for _ in range(20):
        n = int(rng.integers(5, 60))
        recs = _recordings(rng, n, n_rec=8)
        x = rng.normal(0.2, 1, n)
        links, g = cluster_links(recs)
        share = np.array([[s == t or bool(set(recs[s]) & set(recs[t])) for t in range(n)]
                          for s in range(n)])
        assert np.array_equal(links.toarray() == 1.0, share)
        assert g == len({r for rs in recs for r in rs}) + sum(len(rs) == 0 for rs in recs)
        e = x - x.mean()
        v = sum(e[s] * e[t] for s in range(n) for t in range(n) if share[s, t]) * g / (g - 1)
        if v > 0:
            want = stats.t.sf(x.sum() / np.sqrt(v), g - 1)
            np.testing.assert_allclose(clustered_t_pvalue(x, links, g), want, rtol=1e-9)
        else:
            assert np.isnan(clustered_t_pvalue(x, links, g))


def test_a_gain_carried_by_one_recording_is_not_evidence():
    """Planted: +2 dB on every soundscape of recording 0 and nowhere else. The plain paired
    test keeps it (p < 1e-9: 40-odd soundscapes agree), but they are one recording's: on
    soundscapes of other recordings the change gains nothing. Clustered, a move with it is
    dropped and the reason says why; the same gain spread over soundscapes of every recording
    is still kept. A joint stage's result is tested unclustered (`search.acceptance`, rule 5)."""
    rng = np.random.default_rng(3)
    n = 1000
    recs = _recordings(rng, n)
    v0 = rng.normal(4, 3, n)
    one = v0 + np.array([2.0 if 0 in r else 0.0 for r in recs])
    links, g = cluster_links(recs)
    plain, clustered = _acc(n), _acc(n, links=links, n_clusters=g)
    gain = dataset_mean(one) - dataset_mean(v0)
    assert plain.judge(gain, v0, one).accepted
    ev = clustered.judge(gain, v0, one)
    assert not ev.accepted and "clustered by recording" in ev.reason and ev.p_value > 0.01, ev
    assert clustered.judge(gain, v0, one, stage=True).accepted  # a joint stage: unclustered
    spread = v0.copy()
    spread[rng.choice(n, int((one != v0).sum()), replace=False)] += 2.0
    ev = clustered.judge(dataset_mean(spread) - dataset_mean(v0), v0, spread)
    assert ev.accepted and ev.p_value < 1e-6, ev


def test_recording_effects_pass_the_plain_test_far_above_its_level_and_the_clustered_near_it():
    """Pure noise between recordings: each of 30 recordings carries a random effect of the
    change (mean 0: on soundscapes of new recordings it gains nothing). Over 200 draws at
    alpha = 0.05 the plain paired test accepts far more often than 5 %; the clustered test
    about at its level."""
    plain = clustered = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        n = 600
        recs = _recordings(rng, n)
        effect = rng.normal(0.0, 1.0, 30)
        psi = np.array([effect[list(r)].mean() if r else 0.0 for r in recs])
        psi += rng.normal(0.0, 1.0, n) * (rng.random(n) < 0.5)
        links, g = cluster_links(recs)
        plain += one_sided_t_pvalue(psi) < 0.05
        clustered += max(one_sided_t_pvalue(psi), clustered_t_pvalue(psi, links, g)) < 0.05
    assert plain >= 45, plain          # 22.5 % or more (59 here): the plain test is fooled
    assert clustered <= 20, clustered  # nominal 10 of 200 (12 here)


def test_the_search_clusters_its_acceptance_by_the_caches_recordings():
    """On the demo cache (soundscapes list their recordings) every chain's rule is clustered
    over its own tune soundscapes; ``--group-by room`` clusters by room; ``--group-by none``
    turns it off; ``--accept margin`` needs no links."""
    from search.casdri_problem import demo_cache_path, open_cache
    from search.run import SubProblem

    _, dc = open_cache(demo_cache_path(), False)
    dev = np.flatnonzero(dc.split_mask("dev"))
    problem = SubProblem(CasdriProblem(dc), dev)  # the tune split, as run_search makes it
    mask = np.zeros(dev.size, bool)
    mask[::3] = True
    obj = Objective(problem, mask)
    acc = StageContext(obj, SearchSettings(), "fold-0").acceptance()
    recs = [dc.recordings[dev[i]] for i in np.flatnonzero(mask)]
    links, g = cluster_links(recs)
    assert acc.n_clusters == g and (acc.links != links).nnz == 0
    assert acc.links.shape == (mask.sum(),) * 2 and acc.cluster_name == "recording"
    rooms = StageContext(obj, SearchSettings(group_by="room"), "fold-0").acceptance()
    tuned = dev[np.flatnonzero(mask)]
    assert rooms.cluster_name == "room" and rooms.n_clusters == len(set(dc.rooms[tuned]))
    assert StageContext(obj, SearchSettings(group_by="none"), "fold-0").acceptance().links is None
    assert StageContext(obj, SearchSettings(accept="margin"), "fold-0").acceptance().links is None


@pytest.mark.parametrize("rule", ["evidence", "margin"])
def test_a_sweep_without_gain_ends_as_the_full_path_would(noise_cache, monkeypatch, rule):
    """A sweep whose exact prediction gains nothing is decided without its halves
    (`search.moves.NO_GAIN_DB`); every move of a per-class and a refine stage ends with the
    value, score, verdict and evidence of the full path (the shortcut off), also when every
    move tries the shortcut first (those that gain fall back to the full path)."""
    import search.moves as M

    problem = CasdriProblem(noise_cache)
    mask = np.arange(problem.n_soundscapes) % 4 != 0
    halves_picked = []
    pick = M._pick_sweep
    monkeypatch.setattr(M, "_pick_sweep", lambda *a: halves_picked.append(1) or pick(*a))

    def moves(no_gain_db):
        monkeypatch.setattr(M, "NO_GAIN_DB", no_gain_db)
        halves_picked.clear()
        obj = Objective(problem, mask)
        ctx = StageContext(obj, SearchSettings(seed=2, accept=rule))
        x, out = problem.start_vector(), []
        for stage in ("per-class", "refine"):
            rec = run_stage(stage, x, ctx)
            x = rec.x_end
            out += rec.moves
        return out, len(halves_picked)

    full, n_full = moves(-np.inf)
    for no_gain_db in (M.TIE_DB / 2, np.inf):
        fast, n_fast = moves(no_gain_db)
        assert len(fast) == len(full)
        for a, b in zip(fast, full):
            assert (a.param, a.cls, a.best_value, a.kept) == (b.param, b.cls, b.best_value,
                                                              b.kept)
            assert a.best_score_db == b.best_score_db  # bit for bit
            assert (a.evidence.accepted, a.evidence.reason, a.evidence.tune_gain_db) == (
                b.evidence.accepted, b.evidence.reason, b.evidence.tune_gain_db)
        if rule == "evidence":
            assert n_fast < n_full - 10  # the shortcut served moves: fewer halves picked


class _MissingPoints(ToyProblem):
    """A toy whose change points leave out the even soundscapes (a bug)."""

    def change_points(self, name, cls, x, idx):
        pos, vals = super().change_points(name, cls, x, idx)
        drop = np.asarray(idx)[pos] % 2 == 0
        return pos[~drop], vals[~drop]


@pytest.mark.parametrize("accept, n, seed, cls", [("margin", 90, 4, None),
                                                   ("evidence", 200, 5, 0)])
def test_a_kept_move_is_checked_on_a_full_replay(accept, n, seed, cls):
    """A sweep scores its candidates on the soundscapes its change points name; a move it
    keeps is replayed on every tune soundscape too. With change points that miss soundscapes
    the two differ: the search says so and decides the move on full replays, so the score it
    records is the full replay's."""
    toy = _MissingPoints(n_soundscapes=n, seed=seed)
    obj = Objective(toy, np.ones(n, bool))
    acc = Acceptance("margin", margin_db=0.0) if accept == "margin" else \
        Acceptance(parts=halves(n, 1, "x"), min_changed=1, alpha=0.5)
    p = toy.params["prob_gate"]
    with pytest.warns(RuntimeWarning, match="full replay .please report"):
        m = best_move(obj, toy.start, p, cls, obj.score(toy.start), accept=acc)
    assert m.kept
    x = toy.start.copy()
    x[p.columns if cls is None else p.columns[[cls]]] = m.best_value
    assert m.best_score_db == obj.score(x)  # the full replay, bit for bit
