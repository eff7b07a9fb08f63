"""The ``staged`` policy (issue 15): refine plus the stage chosen per class, re-classification
by any stage's classifier and frame-level SED gates.

Exactness: its defaults decide as ``refine`` bit for bit (synthetic caches and the demo
cache); its plain-Python decision equals the jitted replay (stem rows and labels) on random
settings that do change decisions; the replay of mixed-stage combos equals the metric on the
stems the plain decision picks; its change points are exact (per-soundscape values are
constant between them). Search: a planted per-class minimum SED duration is found by the
``per-class`` stage and kept by the evidence rule, and one shared duration is not.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import casdri
from casdri.cache import load_cache
from casdri.errors import PolicyError
from casdri.metric import capi_sdri_from_snr
from casdri.policies import POLICIES, RefineParams, StagedParams, get_policy
from casdri.policies.staged import STAGED_FIELDS
from casdri.replay import decisions, replay_matrix, scored_mean
from casdri.sed import SED_LEVELS_PCT, activity_summary
from casdri.synthetic import SED_HOP_S, make_synthetic_cache, random_settings
from tests.test_policies import _check_decide

PLANTED = "Speech"


@pytest.fixture(scope="module")
def staged_cache(tmp_path_factory):
    """Three stages, two separators, SED on every soundscape."""
    return make_synthetic_cache(tmp_path_factory.mktemp("st"), n_soundscapes=40, seed=11,
                                n_stages=3, sed_frames=24, n_parts=2)


def _with_refine(cache, X_refine):
    """Staged settings: the refine columns of ``X_refine``, every staged field at its default."""
    tail = StagedParams().encode(cache)[X_refine.shape[1]:]
    return np.concatenate([X_refine, np.tile(tail, (X_refine.shape[0], 1))], axis=1)


def test_encoded_layout_extends_refine(staged_cache):
    lr, ls = RefineParams.layout(staged_cache), StagedParams.layout(staged_cache)
    assert all(np.array_equal(lr[k], ls[k]) for k in lr)  # refine's columns, unchanged
    assert list(ls)[len(lr):] == list(STAGED_FIELDS)
    assert POLICIES["staged"] is get_policy("staged")


def test_defaults_decide_as_refine(staged_cache):
    rng = np.random.default_rng(0)
    Xr = random_settings(staged_cache, "refine", 24, rng)
    a = replay_matrix(staged_cache, "refine", Xr, counts=True)
    b = replay_matrix(staged_cache, "staged", _with_refine(staged_cache, Xr), counts=True)
    assert np.array_equal(a.values, b.values, equal_nan=True)
    assert np.array_equal(a.labels, b.labels)


def test_demo_cache_golden_number_unchanged():
    demo = load_cache(Path(casdri.__file__).parent / "data" / "demo_cache")
    a = replay_matrix(demo, "refine", POLICIES["refine"].START)
    b = replay_matrix(demo, "staged", POLICIES["staged"].START)
    assert np.array_equal(a.values, b.values, equal_nan=True) and a.fp[0] == b.fp[0]


@pytest.mark.parametrize("seed,n_stages,separators,quantize", [
    (1, 3, ("sepA", "sepB"), False), (2, 2, ("sepA",), True), (3, 1, ("sepA", "sepB"), True)])
def test_decide_equals_kernel(tmp_path, seed, n_stages, separators, quantize):
    c = make_synthetic_cache(tmp_path / "c", n_soundscapes=14, seed=seed, n_stages=n_stages,
                             separators=separators, quantize=quantize, sed_frames=16,
                             n_parts=1)
    rng = np.random.default_rng(seed)
    X = random_settings(c, "staged", 6, rng, grid=0.125 if quantize else None)
    lay = StagedParams.layout(c)
    X[:3, lay["stage_by_class"]] = rng.integers(-1, n_stages, (3, c.n_classes))
    X[3:, lay["sed_min_dur_s"]] = rng.uniform(0, 16 * SED_HOP_S, (3, c.n_classes))
    _check_decide(c, "staged", X)
    # the staged fields did change decisions (else this test could not fail)
    Xr = X[:, :RefineParams.n_params(c)]
    a = replay_matrix(c, "refine", Xr, counts=True)
    b = replay_matrix(c, "staged", X, counts=True)
    assert not np.array_equal(a.labels, b.labels)
    if n_stages > 1:
        assert not np.array_equal(a.values, b.values, equal_nan=True)


def test_mixed_stages_equal_the_metric(staged_cache):
    """Per-class stages pick stems of several stages in one query: the replay equals the
    metric on the stems the plain-Python decision picks (exactly)."""
    c = staged_cache
    mod = get_policy("staged")
    rng = np.random.default_rng(5)
    for k in range(4):
        p = StagedParams(stage=int(rng.integers(3)), select_separator=int(rng.integers(3)),
                         stage_by_class=list(rng.integers(-1, 3, c.n_classes).astype(float)),
                         reclass_stage=k - 1, reclass_silence_thr=0.6)
        got = replay_matrix(c, "staged", p).values[0]
        n_mixed = 0
        for s in range(c.n_soundscapes):
            d = mod.decide(c.inputs(s), p, c.lookup(s))
            r0, r1 = c.ref_offsets[s], c.ref_offsets[s + 1]
            rows = [st.ref for st in d.stems]
            n_mixed += len({int(c.stem_stage[r]) for r in rows}) > 1
            snr = np.array([c.stem_snr_db[c.stem_snr_offsets[r]:c.stem_snr_offsets[r] + r1 - r0]
                            for r in rows]).reshape(len(rows), r1 - r0)
            v = capi_sdri_from_snr(d.est_labels(c.label_set),
                                   [c.meta.classes[x] for x in c.ref_labels[r0:r1]], snr,
                                   c.snr_mix_db[r0:r1])
            assert (np.isnan(got[s]) if v is None else got[s] == v), (s, p)
        assert n_mixed > 0


def test_one_stage_for_every_class_is_that_stage(staged_cache):
    """``stage_by_class = k`` for every class takes stage k's stems: with refine's gates off
    it scores as refine at ``stage = k`` (mixed combos against uniform ones)."""
    for sel in (0, 1, 2):
        for k in (1, 2):
            a = replay_matrix(staged_cache, "refine", RefineParams(stage=k, select_separator=sel))
            b = replay_matrix(staged_cache, "staged",
                              StagedParams(stage=0, select_separator=sel, stage_by_class=k))
            assert np.array_equal(a.values, b.values, equal_nan=True), (sel, k)
    d = decisions(staged_cache, "staged", StagedParams(stage_by_class={PLANTED: 2, "default": 1}))
    got = d.stage.to_numpy()
    planted_slots = np.array([q[i] == staged_cache.label_set.index(PLANTED)
                              for q, i in zip(d["query"], d.slot)])
    assert planted_slots.any() and (~planted_slots).any()
    assert (got[planted_slots] == 2).all() and (got[~planted_slots] == 1).all()


@pytest.mark.parametrize("name", ["sed_min_dur_s", "sed_max_gate", "sed_agree_gap",
                                  "reclass_silence_thr", "silence_thr", "verify_thr"])
def test_change_points_are_exact(staged_cache, name):
    """Between two consecutive change points of a threshold, no soundscape's value changes."""
    from search.casdri_problem import CasdriProblem

    c = staged_cache
    problem = CasdriProblem(c, "staged")
    p = StagedParams(stage_by_class={PLANTED: 2, "default": -1}, reclass_stage=1,
                     sed_level=SED_LEVELS_PCT[0], drop_thr=1.0)
    x = p.encode(c)
    cls = int(np.argmax(np.bincount(c.key_labels[c.key_labels >= 0], minlength=c.n_classes)))
    idx = np.arange(c.n_soundscapes)
    pos, vals = problem.change_points(name, cls, x, idx)
    par = problem.params[name]
    lo, hi = (par.low, par.high)
    grid = np.unique(np.concatenate([np.linspace(lo, hi, 97), vals[(vals > lo) & (vals < hi)]]))
    X = np.tile(x, (len(grid), 1))
    X[:, par.columns[cls]] = grid
    V = replay_matrix(c, "staged", X).values
    cps = np.sort(vals)
    for a in range(len(grid) - 1):
        # values are constant on an open interval between change points (the sweep scores
        # midpoints; a gate flips just after or at its change point)
        between = (cps >= grid[a]) & (cps <= grid[a + 1])
        if not between.any():
            assert np.array_equal(V[a], V[a + 1], equal_nan=True), (name, grid[a])
    assert not np.array_equal(V[0], V[-1], equal_nan=True)  # the threshold does act


def test_validation_and_yaml(staged_cache):
    c = staged_cache
    with pytest.raises(PolicyError, match="stage_by_class.*whole number"):
        StagedParams(stage_by_class=0.5)
    with pytest.raises(PolicyError, match="reclass_stage"):
        StagedParams(reclass_stage=1).check(make_synthetic_cache(n_soundscapes=2, seed=0))
    with pytest.raises(PolicyError, match="sed_level"):
        StagedParams(sed_level=40)
    p = StagedParams(stage_by_class={PLANTED: 2, "default": -1}, reclass_other=1,
                     sed_min_dur_s={PLANTED: 1.5, "default": 0.0}, sed_agree_gap=0.5)
    q = StagedParams.from_yaml(p.to_yaml(c.label_set), c.label_set)
    assert np.array_equal(q.encode(c), p.encode(c))


def test_sed_summary_reads_the_cached_float16(staged_cache):
    c = staged_cache
    s = 3
    a, b = c.sed.offsets[s], c.sed.offsets[s + 1]
    want = activity_summary(c.sed.probs[a:b], c.sed.frame_hop_s[0, s])
    assert np.array_equal(c.inputs(s).sed_summary, want)
    p = c.sed.probs[a:b].astype(np.float64)
    assert want[0, 2] == SED_HOP_S * float((p[:, 0] >= SED_LEVELS_PCT[0] / 100).sum())
    assert make_synthetic_cache(n_soundscapes=2, seed=0).inputs(0).sed_summary is None


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_sed_duration_rule_is_found(tmp_path, seed):
    """A per-class minimum SED duration that separates the true from the false detections of
    one class is found by the ``per-class`` stage and kept by the evidence rule; one shared
    minimum duration is not kept (it would silence other classes' true detections)."""
    from search.casdri_problem import CasdriProblem
    from search.moves import best_move
    from search.objective import Objective
    from search.settings import SearchSettings
    from search.stages import StageContext, run_stage

    t = 2.0
    cache = make_synthetic_cache(tmp_path / "p", n_soundscapes=600, seed=seed, noise=True,
                                 sed_frames=32, planted={"sed_min_duration_s": {PLANTED: t}})
    problem = CasdriProblem(cache, "staged")
    obj = Objective(problem, np.ones(problem.n_soundscapes, bool))
    x = problem.start_vector()
    par = problem.params["sed_min_dur_s"]
    c = problem.class_names.index(PLANTED)
    y = x.copy()
    y[par.columns[c]] = t
    assert obj.score(y) > obj.score(x)  # the planted effect exists
    ctx = StageContext(obj, SearchSettings(seed=seed))
    g = best_move(obj, x, par, None, obj.score(x), accept=ctx.acceptance())
    assert not g.kept, g.evidence
    rec = run_stage("per-class", x, ctx)
    k = int(np.floor(t / SED_HOP_S))  # true events last >= (k + 2) hops, false ones <= k - 1
    assert 0.0 < rec.x_end[par.columns[c]] <= (k + 2) * SED_HOP_S
    assert (np.delete(rec.x_end[par.columns], c) == 0.0).all()
    kept = [m for m in rec.moves if m.kept]
    assert [(m.param, m.cls) for m in kept] == [("sed_min_dur_s", c)], kept
    assert kept[0].evidence.accepted and kept[0].evidence.honest_gain_db > 0
    # the tuned setting silences false detections of the class only
    d0 = replay_matrix(cache, "staged", x[None], counts=True)
    d1 = replay_matrix(cache, "staged", rec.x_end[None], counts=True)
    assert d1.tp[0] == d0.tp[0] and d1.fp[0] < d0.fp[0]
    assert scored_mean(d1.values)[0] > scored_mean(d0.values)[0]


def test_readme_example_prints_what_the_readme_shows(tmp_path, monkeypatch):
    import contextlib
    import io
    import re

    from tests.test_readme import _section

    section = _section("Multi-stage and SED decisions")
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    shown = re.findall(r"\n\n```\n(.*?)\n```", section, re.S)[0]
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    assert out.getvalue().splitlines() == shown.splitlines()


def test_cli_searches_staged_and_finds_the_planted_rule(tmp_path):
    """``casdri-search --policy staged --stage per-class`` end to end: the written policy is a
    staged policy whose only SED duration is the planted class's, within the planted gap."""
    import subprocess
    import sys

    import yaml

    from casdri.policies import load_policy_yaml

    t = 2.0
    path = make_synthetic_cache(tmp_path / "c", n_soundscapes=600, seed=2, noise=True,
                                sed_frames=32, planted={"sed_min_duration_s": {PLANTED: t}},
                                load=False)
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "search.cli", "--cache", str(path), "--policy",
                        "staged", "--stage", "per-class", "--folds", "2", "--seed", "0",
                        "--out", str(out)], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1], timeout=600)
    assert p.returncode == 0, p.stderr
    mod, params = load_policy_yaml((out / "policy.yaml").read_text())
    assert mod.NAME == "staged"
    k = int(np.floor(t / SED_HOP_S))
    dur = params.per_class("sed_min_dur_s", load_cache(path).label_set)
    c = load_cache(path).label_set.index(PLANTED)
    assert 0.0 < dur[c] <= (k + 2) * SED_HOP_S and (np.delete(dur, c) == 0.0).all(), dur
    # the planted rule's worth is reported held out under its feature, and only there
    feats = yaml.safe_load((out / "policy.yaml").read_text())["provenance"]["features"]
    assert feats["SED gates"]["heldout_gain_db"] > 0 and feats["SED gates"]["heldout_changed"] > 0
    assert all(v["heldout_changed"] == 0 for k, v in feats.items() if k != "SED gates"), feats
    assert "  SED gates " in p.stdout
    assert yaml.safe_load((out / "policy.yaml").read_text())["policy"] == "staged"


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_per_class_stage_is_found(tmp_path, seed):
    """One class gains from the refinement stage and every other class loses: the
    ``per-class`` stage moves that class's ``stage_by_class`` to the last stage (kept by the
    evidence rule) and leaves every other class, and the global stage, alone."""
    from search.casdri_problem import CasdriProblem
    from search.objective import Objective
    from search.settings import SearchSettings
    from search.stages import StageContext, run_stage

    cache = make_synthetic_cache(tmp_path / "p", n_soundscapes=600, seed=seed, n_stages=2,
                                 noise=True, planted={"stage_gain_db": {PLANTED: 1.5}})
    problem = CasdriProblem(cache, "staged")
    obj = Objective(problem, np.ones(problem.n_soundscapes, bool))
    x = problem.start_vector()
    v = scored_mean(replay_matrix(cache, "staged", [
        StagedParams(stage=0), StagedParams(stage=1),
        StagedParams(stage_by_class={PLANTED: 1, "default": -1})]).values)
    assert v[2] > v[0] > v[1]  # the planted effect: per class beats either global stage
    rec = run_stage("per-class", x, StageContext(obj, SearchSettings(seed=seed)))
    c = problem.class_names.index(PLANTED)
    kept = [(m.param, m.cls, m.value) for m in rec.moves if m.kept]
    assert kept == [("stage_by_class", c, 1.0)], kept
    assert rec.moves[[m.param for m in rec.moves].index("stage_by_class")].cls is None


def test_gap_explains_a_mixed_stage_decision(staged_cache):
    """`casdri.explain` reads the decided stems of the policy's own (mixed-stage) tables: its
    system state reproduces the replay (it raises otherwise) and its parts sum to the gap."""
    from casdri.gap import explain

    p = StagedParams(stage_by_class={PLANTED: 2, "default": 0}, sed_max_gate=0.6)
    g = explain(staged_cache, "staged", p)
    assert g.system_db == pytest.approx(
        scored_mean(replay_matrix(staged_cache, "staged", p).values)[0], abs=1e-12)
    assert float(g.parts.gap_db.sum()) == pytest.approx(g.gap_db, abs=1e-9)
