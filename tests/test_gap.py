"""`casdri.explain`: the parts sum to the gap (overall, per class, per scene type) on the demo
cache, synthetic caches and golden folders; a planted error shows up in its own part only."""
from __future__ import annotations

import dataclasses
import itertools
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import casdri
from casdri import _gap_states as G
from casdri.gap import cache_clips, decompose, explain, explain_folders
from casdri.policies import OracleParams, RefineParams
from casdri.synthetic import make_synthetic_cache, random_settings
from casdri.whatif import what_if

from .conftest import TOL_REPLAY_DB

SUM_TOL_DB = 1e-9  # the bound: parts against the gap
ZERO_TOL_DB = 1e-12  # a part a planted error must not touch
DEMO = Path(str(resources.files("casdri").joinpath("data", "demo_cache")))
#: a refine setting like the one `casdri-search --stage gates` finds on the demo cache
TUNED = RefineParams(energy_gate_db=-48.27654084178817, prob_gate=0.024667105760254937,
                     silence_thr=0.09501990392592095)


def assert_sums(e):
    parts = e.parts.set_index("part")["gap_db"]
    assert abs(parts.sum() - e.gap_db) < SUM_TOL_DB
    for table in (e.per_class, e.per_scene, e.per_soundscape):
        for p in G.PARTS:
            assert abs(table[p].sum() - parts[p]) < SUM_TOL_DB, (p, table[p].sum(), parts[p])
        assert np.allclose(table[list(G.PARTS)].sum(axis=1), table["total"], atol=1e-12)
    assert e.per_scene.n_soundscapes.sum() == len(e.per_soundscape)


def oracle_bound(cache, mask=None) -> float:
    space = OracleParams.search_space(cache)
    X = np.array(list(itertools.product(*[r.choices for r in space])), np.float64)
    return float(np.nanmax(casdri.replay(cache, "oracle", X, mask=mask).capi_sdri))


@pytest.fixture(scope="module")
def demo():
    return casdri.load_cache(DEMO)


@pytest.mark.parametrize("policy, params", [("refine", TUNED), ("baseline", None),
                                            ("refine", RefineParams())])
def test_demo_cache_parts_sum_to_the_gap(demo, policy, params):
    e = explain(demo, policy, params)
    assert_sums(e)
    r = casdri.replay(demo, policy, params if params is not None else
                      casdri.BaselineParams())
    assert abs(e.system_db - r.capi_sdri[0]) < TOL_REPLAY_DB
    assert abs(e.oracle_db - oracle_bound(demo)) < TOL_REPLAY_DB
    assert e.gap_db > 0
    zero = e.per_scene.set_index("scene").loc["0 targets"]
    assert abs(zero[list(G.PARTS[1:])]).max() < ZERO_TOL_DB  # only FP0 on zero-target clips
    others = e.per_scene[e.per_scene.scene != "0 targets"]
    assert abs(others["fp_zero_target"]).max() < ZERO_TOL_DB


@pytest.mark.parametrize("seed, quantize", [(0, False), (1, True), (2, False)])
def test_synthetic_caches_parts_sum_to_the_gap(seed, quantize):
    c = make_synthetic_cache(n_soundscapes=90, seed=seed, quantize=quantize, duplicate=0.3,
                             n_stages=2)
    rng = np.random.default_rng(seed)
    for policy in ("baseline", "refine"):
        for x in random_settings(c, policy, 2, rng):
            e = explain(c, policy, x)
            assert_sums(e)
            assert abs(e.system_db - casdri.replay(c, policy, x).capi_sdri[0]) < TOL_REPLAY_DB
    mask = np.arange(0, 90, 2)
    e = explain(c, "baseline", mask=mask)
    assert_sums(e)
    assert len(e.per_soundscape) == 45
    assert abs(e.oracle_db - oracle_bound(c, mask)) < TOL_REPLAY_DB


def test_explain_takes_a_path_and_the_oracle_explains_nothing(demo):
    o = casdri.gap.best_oracle_params(demo)
    e = explain(DEMO, "oracle", o, oracle=o)
    assert e.gap_db == 0.0
    assert abs(e.parts.gap_db).max() < ZERO_TOL_DB


# ----------------------------------------------------------------------------- planted errors


@pytest.fixture(scope="module")
def perfect():
    """Clips whose system stems are the oracle stems (every part 0), and the cache."""
    c = make_synthetic_cache(n_soundscapes=80, seed=5, duplicate=0.3)
    o = OracleParams()
    clips, _, _ = cache_clips(c, "oracle", o, o)
    return c, clips


def _pick(clips, n_ref, nth=0, duplicate=False):
    found = [(i, k) for i, k in enumerate(clips)
             if len(k.ref_labels) == n_ref and (len(set(k.ref_labels)) < n_ref) == duplicate]
    assert len(found) > nth, "no such soundscape in the synthetic cache"
    return found[nth]


def _plant(clips, i, labels, snr):
    out = list(clips)
    out[i] = dataclasses.replace(clips[i], est_labels=tuple(labels),
                                 est_snr_db=np.asarray(snr, np.float64).reshape(len(labels), -1),
                                 est_ids=())
    return out


def _absent(clip, n=1):
    return [c for c in casdri.DCASE2026T4.classes if c not in clip.ref_labels][:n]


def _planted_cases(clips):
    """``{part: (soundscape row, est labels, est SNR, classes involved)}``, each on its own
    soundscape of a system whose stems are the oracle stems."""
    out = {}
    i, z = _pick(clips, 0)
    out["fp_zero_target"] = (i, ["Speech"], np.zeros((1, 0)), {"Speech"})
    i, one = _pick(clips, 1, 0)
    (x,), o = _absent(one), np.asarray(one.oracle_snr_db)
    out["fp_other"] = (i, [*one.oracle_labels, x], np.vstack([o, o - 3.0]), {x})
    i, one = _pick(clips, 1, 1)
    o = np.asarray(one.oracle_snr_db)
    out["count"] = (i, [*one.oracle_labels] * 2, np.vstack([o, o - 4.0]), set(one.ref_labels))
    i, dup = _pick(clips, 2, 0, duplicate=True)
    out["count_deficit"] = (i, [dup.oracle_labels[0]], np.asarray(dup.oracle_snr_db)[:1],
                            set(dup.ref_labels))
    i, one = _pick(clips, 1, 2)
    out["separation"] = (i, list(one.oracle_labels), np.asarray(one.oracle_snr_db) - 2.5,
                         set(one.ref_labels))
    i, two = _pick(clips, 2, 0)
    o, miss = np.asarray(two.oracle_snr_db), two.oracle_labels[1]
    out["missed"] = (i, [two.oracle_labels[0]], o[:1], {miss})
    i, two = _pick(clips, 2, 1)
    (y,), o, miss = _absent(two), np.asarray(two.oracle_snr_db), two.oracle_labels[1]
    out["wrong_class"] = (i, [two.oracle_labels[0], y], o, {miss, y})
    return out


def test_perfect_system_has_no_gap(perfect):
    _, clips = perfect
    e = decompose(clips)
    assert abs(e.gap_db) < ZERO_TOL_DB and abs(e.parts.gap_db).max() < ZERO_TOL_DB


@pytest.mark.parametrize("case", [*G.PARTS, "count_deficit"])
def test_a_planted_error_shows_up_in_its_own_part_only(perfect, case):
    _, clips = perfect
    i, labels, snr, classes = _planted_cases(clips)[case]
    kind = case.split("_deficit")[0]
    e = decompose(_plant(clips, i, labels, snr))
    assert_sums(e)
    parts = e.parts.set_index("part")
    assert abs(parts.loc[kind, "gap_db"]) > 1e-4, parts
    assert parts.loc[kind, "events"] >= 1
    for p in G.PARTS:
        if p != kind:
            assert abs(parts.loc[p, "gap_db"]) < ZERO_TOL_DB, (kind, p, parts.loc[p, "gap_db"])
            if p != "separation":  # the true positives elsewhere are counted there
                assert parts.loc[p, "events"] == 0
    # per class: only the classes the error involves; per scene: only its scene type
    pc = e.per_class.set_index("class")
    touched = set(pc.index[abs(pc[kind]) > ZERO_TOL_DB])
    assert touched == classes, (kind, touched, classes)
    assert abs(pc.drop(columns=[kind, "total"])).to_numpy().max() < ZERO_TOL_DB
    sc = e.per_scene.set_index("scene")
    scene = G.scene_type(clips[i].ref_labels)
    assert abs(sc[kind].drop(index=scene)).max() < ZERO_TOL_DB
    ps = e.per_soundscape.set_index("soundscape")
    assert abs(ps[kind].drop(index=clips[i].soundscape)).max() < ZERO_TOL_DB


def test_planted_errors_at_once_each_in_its_part(perfect):
    """All six errors at once, on six soundscapes: each part is carried by its soundscape only
    and every error costs (a positive part)."""
    _, clips = perfect
    cases = _planted_cases(clips)
    c = list(clips)
    for i, labels, snr, _ in cases.values():
        c = _plant(c, i, labels, snr)
    e = decompose(c)
    assert_sums(e)
    ps = e.per_soundscape.set_index("soundscape")
    for kind in G.PARTS:
        own = [clips[i].soundscape for case, (i, *_r) in cases.items()
               if case.split("_deficit")[0] == kind]
        assert e.parts.set_index("part").loc[kind, "gap_db"] > 1e-4, kind
        assert abs(ps[kind].drop(index=own)).max() < ZERO_TOL_DB, kind
        assert (ps.loc[own, kind] != 0).all(), kind


def test_zero_target_false_positive_changes_the_scored_set(perfect):
    _, clips = perfect
    i0, _ = _pick(clips, 0)
    e0 = decompose(clips)
    e = decompose(_plant(clips, i0, ["Speech"], np.zeros((1, 0))))
    assert np.isnan(e0.per_soundscape.system_db[i0]) and e.per_soundscape.system_db[i0] == 0.0
    n = int((~np.isnan(e.per_soundscape.system_db)).sum())
    assert abs(e.gap_db - e.oracle_db / n) < 1e-12  # one 0 among n clips: mean * (1 - (n-1)/n)


def test_oracle_labels_must_match_references(perfect):
    _, clips = perfect
    i1, one = _pick(clips, 1)
    bad = list(clips)
    bad[i1] = dataclasses.replace(one, oracle_labels=tuple(_absent(one)))
    with pytest.raises(casdri.InputError, match="oracle stems are labelled"):
        decompose(bad)


# ----------------------------------------------------------------------------- what-if, folders


def test_what_if_on_the_demo_cache(demo):
    e = explain(demo, "refine", TUNED)
    t = what_if(demo, "refine", TUNED, explanation=e).set_index("scenario")
    fp0 = t.loc["zero-target soundscapes made perfect (silent)", "gain_db"]
    assert abs(fp0 - e.parts.set_index("part").loc["fp_zero_target", "gap_db"]) < 1e-12
    assert abs(t.loc["every label error fixed (true-positive stems kept)", "capi_sdri_db"]
               - e.parts.state_db.iloc[-2]) < 1e-12
    assert t.loc["best separator per slot (labels kept)", "gain_db"] >= -1e-12
    assert (t.gain_db[[i for i in t.index if i.endswith("oracle-labelled")]] > -1e-12).all()


def _oracle_estimate_folder(golden_dir, tmp_path) -> Path:
    out = tmp_path / "oracle_estimate"
    out.mkdir()
    rng = np.random.default_rng(0)
    for f in sorted((golden_dir / "dirs" / "oracle_target").glob("*.wav")):
        x, sr = sf.read(f, dtype="float32")
        sf.write(out / f.name, x + 0.05 * rng.standard_normal(x.shape).astype(np.float32), sr,
                 subtype="FLOAT")
    return out


def test_golden_folders_parts_sum_to_the_gap(golden_dir, tmp_path):
    d = golden_dir / "dirs"
    ora = _oracle_estimate_folder(golden_dir, tmp_path)
    e = explain_folders(d / "soundscape", d / "oracle_target", d / "estimate", ora)
    assert_sums(e)
    scored = casdri.score_folders(d / "soundscape", d / "oracle_target", d / "estimate", jobs=1)
    assert abs(e.system_db - scored.capi_sdri) < TOL_REPLAY_DB
    bound = casdri.score_folders(d / "soundscape", d / "oracle_target", ora, jobs=1)
    assert abs(e.oracle_db - bound.capi_sdri) < TOL_REPLAY_DB
    ps = e.per_soundscape.set_index("soundscape")
    want = scored.per_soundscape.set_index("soundscape")["capi_sdri"]
    assert np.allclose(ps.system_db, want.loc[ps.index], atol=TOL_REPLAY_DB, equal_nan=True)
    assert e.parts.set_index("part").loc["fp_zero_target", "events"] >= 1  # soundscape_0003
