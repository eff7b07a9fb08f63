"""Grouped folds, the optional group columns of the cache, `--stage auto` (nested selection),
`--repeats`, `--test-split` and honest storages, on small synthetic caches."""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow.parquet as pq
import pytest

from casdri import schema as sc
from casdri.cache import load_cache
from casdri.errors import InputError
from casdri.synthetic import make_synthetic_cache
from search.folds import grouped_folds, groups_from_labels, groups_from_recordings
from search.result import start_shift_note, summarize
from search.run import run_search
from search.settings import SearchSettings


def _rewrite_soundscapes(cache_dir, split=None, room=None, recordings=None):
    """Rewrite the soundscapes parts of a cache with ``{id: value}`` splits, rooms, recordings
    (through `casdri.schema.soundscapes_table`, as a cache builder would)."""
    for f in sorted((cache_dir / "soundscapes").glob("part-*.parquet")):
        t = pq.read_table(f)
        ids = t.column(sc.SOUNDSCAPE).to_pylist()
        new = sc.soundscapes_table(
            ids, [split[i] for i in ids] if split else t.column(sc.SPLIT).to_pylist(),
            t.column(sc.REF_LABELS).to_pylist(), t.column(sc.SNR_MIX_DB).to_pylist(),
            t.column(sc.DURATION_S).to_pylist(),
            room=None if room is None else [room.get(i) for i in ids],
            recordings=None if recordings is None else [recordings.get(i) for i in ids])
        pq.write_table(new.replace_schema_metadata(t.schema.metadata), f)


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """90 soundscapes: recordings shared in chains of three (30 groups), rooms r0..r4, and a
    split: 60 dev, 30 eval."""
    path = make_synthetic_cache(tmp_path_factory.mktemp("g") / "cache", n_soundscapes=90,
                                seed=5, load=False)
    ids = list(load_cache(path).soundscape_ids)
    rec = {s: [f"rec{i // 3}", f"solo{i}"] for i, s in enumerate(ids)}
    room = {s: f"r{i % 5}" if i % 7 else None for i, s in enumerate(ids)}
    split = {s: "eval" if i % 3 == 2 else "dev" for i, s in enumerate(ids)}
    _rewrite_soundscapes(path, split=split, room=room, recordings=rec)
    return path


# ---------------------------------------------------------------- groups and folds

def test_union_find_joins_shared_recordings_transitively():
    g = groups_from_recordings([["a"], ["b"], ["a", "c"], ["c", "d"], None, [], ["d"]])
    assert g[0] == g[2] == g[3] == g[6] and len({g[1], g[4], g[5], g[0]}) == 4


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_grouped_folds_never_split_a_group_and_stay_balanced(seed, k):
    rng = np.random.default_rng(seed)
    S = 300
    groups = rng.integers(0, 70, S)
    strata = rng.integers(0, 4, S)
    f = grouped_folds(strata, groups, k, seed, "recording")
    for g in np.unique(groups):
        assert np.unique(f.fold_of[groups == g]).size == 1  # a group is never split
    sizes = np.bincount(f.fold_of, minlength=k)
    assert sizes.min() > 0 and sizes.max() - sizes.min() <= max(np.bincount(groups)) + 2
    assert np.array_equal(grouped_folds(strata, groups, k, seed).fold_of, f.fold_of)


def test_grouped_folds_of_singletons_balance_strata_like_stratified_folds():
    strata = np.repeat([0, 1, 2, 3], [40, 30, 20, 10])
    f = grouped_folds(strata, np.arange(100), 5, 0)
    for counts in f.summary().values():  # every fold: 8, 6, 4, 2 of the four strata
        assert counts == {0: 8, 1: 6, 2: 4, 3: 2}


def test_more_folds_than_groups_is_a_clear_error():
    with pytest.raises(InputError, match="1 <= k <= 3 .groups by room"):
        grouped_folds(np.zeros(9, np.int64), np.arange(9) % 3, 4, 0, "room")


def test_labels_group_equal_values_and_missing_ones_alone():
    assert groups_from_labels(["x", None, "x", float("nan")]).tolist() == [0, 1, 0, 2]


# ---------------------------------------------------------------- the cache's columns

def test_cache_exposes_rooms_and_recordings(grouped):
    dc = load_cache(grouped)
    i = int(np.flatnonzero(dc.soundscape_ids == dc.soundscape_ids[0])[0])
    assert dc.recordings[i] == ("rec0", "solo0") and dc.rooms[i] is None  # i % 7 == 0
    assert set(dc.splits) == {"dev", "eval"}


def test_old_caches_without_the_columns_load_with_none(tmp_path):
    dc = make_synthetic_cache(tmp_path / "c", n_soundscapes=8, seed=1)
    assert dc.rooms is None and dc.recordings is None


def test_search_groups_by_recording_by_default_and_by_room_on_request(grouped):
    r = run_search(grouped, stage="select", folds=3, n_boot=200, test_split="none")
    f = r.folds
    assert f.group_by == "recording" and f.n_groups == 30
    dc = load_cache(grouped)
    rec0 = np.array([x[0] for x in dc.recordings])
    for rec in np.unique(rec0):
        assert np.unique(f.fold_of[rec0 == rec]).size == 1
    r = run_search(grouped, stage="select", folds=3, n_boot=200, group_by="room",
                   test_split="none")
    assert r.folds.group_by == "room"
    assert run_search(grouped, stage="select", folds=3, n_boot=200, test_split="none",
                      group_by="none").folds.groups is None
    with pytest.raises(InputError, match="--group-by nope: .* has no column 'nope'"):
        run_search(grouped, stage="select", folds=3, group_by="nope")


# ---------------------------------------------------------------- --test-split

def test_test_split_tunes_on_dev_and_scores_eval_once(grouped):
    r = run_search(grouped, stage="gates", folds=3, trials=6, n_boot=300, test_split="eval")
    assert r.folds.n_soundscapes == 60 and r.test.split == "eval"
    assert r.test.gain.n_soundscapes == 30
    dc = load_cache(grouped)
    from search.casdri_problem import CasdriProblem

    p = CasdriProblem(dc)
    ev = np.flatnonzero(dc.split_mask("eval"))
    v = p.values(r.x_final[None, :], ev)[0]
    b = p.policy_values("baseline")[ev]
    assert r.test.gain.gain_db == pytest.approx(np.nanmean(v) - np.nanmean(b), abs=1e-12)
    with pytest.raises(InputError, match="no such split; it has dev .60., eval .30."):
        run_search(grouped, stage="gates", test_split="test")


def test_a_cache_with_an_eval_split_is_tested_on_it_by_default(grouped):
    """test_split "auto" (the default): the eval split is the test unless the user tunes on
    it; "none" tests on nothing and tunes on every soundscape."""
    auto = run_search(grouped, stage="select", folds=3, n_boot=100)
    assert auto.test.split == "eval" and auto.folds.n_soundscapes == 60
    explicit = run_search(grouped, stage="select", folds=3, n_boot=100, test_split="eval")
    assert explicit.test.gain.gain_db == auto.test.gain.gain_db
    on_eval = run_search(grouped, stage="select", folds=3, n_boot=100, split="eval")
    assert on_eval.test is None and on_eval.folds.n_soundscapes == 30
    none = run_search(grouped, stage="select", folds=3, n_boot=100, test_split="none")
    assert none.test is None and none.folds.n_soundscapes == 90


def test_a_gain_is_the_untuned_start_plus_tuning_held_out_and_on_the_test_split(grouped):
    """Gain over the baseline = the untuned start's + tuning's, held out and on the test split;
    each part equals means of replays made here, and lies inside its own CI."""
    from search.casdri_problem import CasdriProblem

    r = run_search(grouped, stage="gates", folds=3, trials=6, n_boot=300, test_split="eval")
    dc = load_cache(grouped)
    p = CasdriProblem(dc)
    dev, ev = (np.flatnonzero(dc.split_mask(s)) for s in ("dev", "eval"))
    base = p.policy_values("baseline")
    start = p.values(r.x_start[None, :])[0]
    tuned_ev = p.values(r.x_final[None, :], ev)[0]
    assert r.start_gain.gain_db == pytest.approx(
        np.nanmean(start[dev]) - np.nanmean(base[dev]), abs=1e-12)
    assert r.tuning_gain.gain_db == pytest.approx(
        np.nanmean(r.heldout_values) - np.nanmean(start[dev]), abs=1e-12)
    assert r.start_gain.gain_db + r.tuning_gain.gain_db == pytest.approx(r.heldout.gain_db,
                                                                         abs=1e-12)
    t = r.test
    assert t.start.gain_db == pytest.approx(np.nanmean(start[ev]) - np.nanmean(base[ev]),
                                            abs=1e-12)
    assert t.tuning.gain_db == pytest.approx(np.nanmean(tuned_ev) - np.nanmean(start[ev]),
                                             abs=1e-12)
    assert t.start.gain_db + t.tuning.gain_db == pytest.approx(t.gain.gain_db, abs=1e-12)
    for b in (r.start_gain, r.tuning_gain, t.start, t.tuning):
        assert b.gain_ci_db[0] <= b.gain_db <= b.gain_ci_db[1] and b.n_boot == 300
    lines = summarize(r)
    assert sum(line.startswith("  = untuned start ") for line in lines) == 2


def test_the_start_shift_note_follows_the_interval_of_the_difference(grouped):
    """The note appears when the interval of the start's gain difference between the tune
    soundscapes and the test split (each resampled on its own) excludes 0, and only then; it
    says whether the interval that resamples recordings holds 0."""
    r = run_search(grouped, stage="select", folds=3, n_boot=300, test_split="eval")
    d, ci, rec = r.test.start_shift
    assert rec is not None and ci[0] <= d <= ci[1]
    assert d == pytest.approx(r.start_gain.gain_db - r.test.start.gain_db, abs=1e-12)
    nan = float("nan")
    cases = [((-0.1, 0.3), (-0.5, 0.7), None), ((0.1, 0.3), (-0.5, 0.7), "consistent"),
             ((-0.4, -0.1), (-0.9, -0.05), "and"), ((0.1, 0.3), None, "plain"),
             ((nan, nan), (-0.5, 0.7), None), ((0.1, 0.3), (nan, nan), "plain")]
    for ci, rec, expect in cases:
        r.test = dataclasses.replace(r.test, start_shift=(0.2, ci, rec))
        note = start_shift_note(r)
        assert (note is None) == (expect is None), (ci, rec)
        if note is None:
            continue
        assert f"95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}] resampling soundscapes" in note
        assert ("consistent with the spread between recordings" in note) == (expect == "consistent")
        assert ("resampling the splits' recordings" in note) == (expect != "plain")
        assert f"{r.test.start.gain_db + 0.2:+.3f} dB on the tune soundscapes" in note
        assert "k-fold validation cannot detect this" in note
        assert "selection bias" in start_shift_note(r, from_file=True)
    r.test = dataclasses.replace(r.test, start_shift=None)
    assert start_shift_note(r) is None


def test_the_start_shift_note_needs_no_folds(grouped):
    """With --folds 1 (no held-out figures) the test split's start shift is still measured
    and noted."""
    r = run_search(grouped, stage="select", folds=1, n_boot=200, test_split="eval")
    assert r.start_gain is None and r.test.start_shift is not None
    r.test = dataclasses.replace(r.test, start_shift=(0.2, (0.1, 0.3), None))
    assert start_shift_note(r) is not None


def test_small_gains_keep_their_sign_in_print():
    from search.result import _db

    assert [_db(v) for v in (-0.000132, 0.0, -0.0, 0.1234, -0.0006)] == \
        ["-0.0001", "+0.000", "+0.000", "+0.123", "-0.001"]


def test_recording_cis_resample_recordings_and_keep_the_point_gains(grouped):
    """With recordings in the cache, each gain gets a second CI that resamples them; the point
    gains are the same figures, and a cache without recordings gets none."""
    r = run_search(grouped, stage="gates", folds=3, trials=6, n_boot=300, test_split="eval")
    for parts, plain in ((r.by_recording, (r.heldout, r.start_gain, r.tuning_gain)),
                         (r.test.by_recording, (r.test.gain, r.test.start, r.test.tuning))):
        for b, p in zip(parts, plain):
            assert b.gain_db == p.gain_db and b.gain_ci_db != p.gain_ci_db
            assert b.gain_ci_db[0] <= b.gain_db <= b.gain_ci_db[1]
    assert sum(line.startswith("  95% CIs resampling recordings: ") for line in summarize(r)) == 2
    import yaml

    from search.report import policy_document

    doc = yaml.safe_load(policy_document(r))["provenance"]
    assert doc["test"]["start_shift"]["difference_db"] == pytest.approx(r.test.start_shift[0],
                                                                        abs=1e-6)
    assert len(doc["test"]["start_shift"]["recording_ci95_db"]) == 2
    untested = run_search(grouped, stage="refine", folds=2, n_boot=100, test_split="none")
    feats = yaml.safe_load(policy_document(untested))["provenance"]["features"]
    assert feats["tagger silence"]["test_changed"] is None
    plain = make_synthetic_cache(grouped.parent / "plain", n_soundscapes=40, seed=2, load=False)
    r = run_search(plain, stage="select", folds=2, n_boot=100)
    assert r.by_recording is None and not any("resampling recordings" in x for x in summarize(r))


def test_feature_worth_is_each_fold_policy_against_its_ablation(grouped):
    """A decision feature's held-out worth equals, replayed here, the pooled held-out values of
    the fold policies minus those of the same policies with the feature's fields at their
    start values; on the test split, the final policy's."""
    from search.casdri_problem import CasdriProblem

    r = run_search(grouped, stage="refine", folds=3, repeats=2, n_boot=100, test_split="eval")
    dc = load_cache(grouped)
    p = CasdriProblem(dc)
    dev = np.flatnonzero(dc.split_mask("dev"))
    cols = np.concatenate([p.params[n].columns for n in ("tagger_silence_margin",
                                                         "tagger_silence_gate")])
    gains, changed = [], []
    for chains in r.repeat_chains():
        full, abl = np.full(dev.size, np.nan), np.full(dev.size, np.nan)
        for f in chains:
            y = f.x_end.copy()
            y[cols] = r.x_start[cols]
            full[f.heldout_idx], abl[f.heldout_idx] = p.values(np.stack([f.x_end, y]),
                                                               dev[f.heldout_idx])
        gains.append(np.nanmean(full) - np.nanmean(abl))
        changed.append((~((full == abl) | np.isnan(full) & np.isnan(abl))).sum())
    (feat,) = r.features
    assert feat.feature == "tagger silence" and len(gains) == 2
    assert feat.fields == ("tagger_silence_margin", "tagger_silence_gate")
    assert feat.gain_db == pytest.approx(np.mean(gains), abs=1e-12)
    assert feat.changed == int(round(np.mean(changed)))
    ev = np.flatnonzero(dc.split_mask("eval"))
    y = r.x_final.copy()
    y[cols] = r.x_start[cols]
    vf, va = p.values(np.stack([r.x_final, y]), ev)
    assert feat.test_gain_db == pytest.approx(np.nanmean(vf) - np.nanmean(va), abs=1e-12)
    (line,) = [x for x in summarize(r) if x.startswith("  tagger silence ")]
    assert line.endswith("HELD-OUT LOSS") == (feat.gain_db < 0)  # flagged as stages are
    r.features = [dataclasses.replace(feat, gain_db=-abs(feat.gain_db) - 1e-3)]
    assert [x for x in summarize(r) if x.startswith("  tagger silence ")][0].endswith(
        "HELD-OUT LOSS")


def test_a_start_from_policy_in_is_named_so_and_warned_about(grouped, tmp_path):
    """A start read from --policy-in may have been tuned on these soundscapes: its part is
    labelled as such, and a warning says it is not held out."""
    from casdri.policies import RefineParams

    y = tmp_path / "start.yaml"
    y.write_text(RefineParams(w=0.7).to_yaml(load_cache(grouped).label_set))
    r = run_search(grouped, stage="select", folds=3, n_boot=100, test_split="eval",
                   policy_in=y)
    lines = summarize(r)
    assert sum(line.startswith("  = start (--policy-in) ") for line in lines) == 2
    assert any(line.startswith("start policy (--policy-in):") for line in lines)
    assert any(line.startswith("held-out gain vs baseline:") and
               line.endswith("(the start is not held out)") for line in lines)
    assert any(w.startswith(f"WARNING: --policy-in {y}: every fold starts from that policy")
               and "if it was tuned on these soundscapes" in w for w in r.warnings)
    # a policy the search wrote for this cache says so in its provenance
    from search.report import policy_document

    y.write_text(policy_document(r))
    r2 = run_search(grouped, stage="select", folds=3, n_boot=100, test_split="eval",
                    policy_in=y)
    assert any("its provenance says it was tuned on this cache" in w for w in r2.warnings)
    plain = summarize(run_search(grouped, stage="select", folds=3, n_boot=100,
                                 test_split="eval"))
    assert not any("--policy-in" in line for line in plain)


def test_the_demo_eval_shift_is_in_the_untuned_start():
    """The bundled demo cache (README, "Search a cache"): the untuned start's gain over the
    baseline differs between dev and eval by more than resampling soundscapes explains, less
    than resampling recordings does, and the search says so."""
    r = run_search(None, stage="select", folds=2, n_boot=300)
    assert r.test.split == "eval"
    note = [w for w in r.warnings if w.startswith("NOTE: the start policy's gain over the")]
    assert len(note) == 1 and "consistent with the spread between recordings" in note[0]
    lo, hi = r.test.start_shift[1]
    assert lo > 0  # the demo's dev-to-eval start shift exceeds sampling soundscapes


# ---------------------------------------------------------------- --stage auto, --repeats

@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return make_synthetic_cache(tmp_path_factory.mktemp("p") / "cache", n_soundscapes=150,
                                seed=3, planted={"energy_gate_db": {"Cough": -20.0,
                                                                    "Speech": -12.0}},
                                load=False)


def test_auto_selects_inside_every_outer_fold_and_reports_why(planted):
    s = SearchSettings(stage="auto", folds=3, inner_folds=2, n_trials=8, n_boot=300,
                       auto_stages=("gates", "select"))
    r = run_search(planted, s)
    assert all(f.selection is not None for f in [*r.fold_results, r.final])
    for f in r.fold_results:  # the selection saw only the fold's tune set
        assert set(f.stages) <= {"gates", "select"}
    sel = r.final.selection
    assert r.stages == sel.stages and set(sel.alone_gain_db) == {"gates", "select"}
    assert all(g > 0 for g in sel.inner_gain_db.values())
    from search.result import summarize

    text = "\n".join(summarize(r))
    assert "--stage auto: chose" in text and "alone from the start" in text


def test_auto_keeps_nothing_when_no_stage_beats_noise(planted):
    s = SearchSettings(stage="auto", folds=2, inner_folds=2, n_trials=4, n_boot=200,
                       auto_stages=("select",), auto_min_se=1e9)
    r = run_search(planted, s)
    assert r.stages == () and np.array_equal(r.x_final, r.x_start)


def test_repeats_split_with_other_seeds_and_report_their_spread(planted):
    r = run_search(planted, stage="gates", folds=3, trials=6, repeats=3, n_boot=300)
    assert len(r.fold_results) == 9 and len(r.repeat_gains_db) == 3
    assert [f.fold for f in r.fold_results[3:6]] == ["r1.fold-0", "r1.fold-1", "r1.fold-2"]
    assert not np.array_equal(r.splits[0].fold_of, r.splits[1].fold_of)
    assert r.repeat_gains_db[0] != r.repeat_gains_db[1]  # other splits, other figures
    assert r.heldout.gain_db == pytest.approx(np.mean(r.repeat_gains_db), abs=1e-12)
    from search.result import summarize

    assert any("over 3 repeated splits" in line for line in summarize(r))


def test_bootstrap_of_repeats_averages_dataset_means():
    from casdri.stats import paired_bootstrap

    rng = np.random.default_rng(0)
    base = rng.normal(2, 1, 50)
    rows = base + rng.normal(0.3, 1, (3, 50))
    rows[0, :5] = np.nan  # a None clip under one repeat only
    one = paired_bootstrap(rows[1], base, 500, seed=2)
    assert paired_bootstrap(rows[1:2], base, 500, seed=2) == one  # (1, S) is (S,)
    r = paired_bootstrap(rows, base, 500, seed=2)
    means = [np.nanmean(x) - base.mean() for x in rows]
    assert r.gain_db == pytest.approx(np.mean(means), abs=1e-12)
    assert r.gain_ci_db[0] < r.gain_db < r.gain_ci_db[1]


# ---------------------------------------------------------------- storages

def test_same_seed_same_policy_in_memory_sqlite_and_journal(planted, tmp_path):
    kw = dict(stage="gates", folds=2, trials=8, n_boot=100, seed=4)
    mem = run_search(planted, **kw)
    sql = run_search(planted, storage=f"sqlite:///{tmp_path / 's.db'}", **kw)
    jou = run_search(planted, storage=str(tmp_path / "j.log"), **kw)
    assert np.array_equal(mem.x_final, sql.x_final) and np.array_equal(mem.x_final, jou.x_final)
    assert mem.heldout.gain_db == sql.heldout.gain_db == jou.heldout.gain_db


def test_a_second_run_on_the_same_storage_needs_resume(planted, tmp_path):
    kw = dict(stage="gates", folds=2, trials=4, n_boot=100, storage=str(tmp_path / "j.log"))
    run_search(planted, **kw)
    with pytest.raises(InputError, match="pass --resume to add trials to them"):
        run_search(planted, **kw)
    run_search(planted, resume=True, **kw)  # a worker joining on purpose


def test_settings_validate_names_the_flag():
    with pytest.raises(InputError, match=r"--resume adds trials to studies in a --storage"):
        SearchSettings(resume=True).validate()  # was a fresh search in memory, said nothing
    with pytest.raises(InputError, match="--seed must be an integer >= 0, got -1"):
        SearchSettings(seed=-1).validate()
    with pytest.raises(InputError, match="unknown search setting"):
        SearchSettings().with_(trails=3)


def test_report_of_auto_flags_losses_and_removes_stale_figures(planted, tmp_path):
    from search.report import write_outputs

    r = run_search(planted, stage="auto", folds=2, inner_folds=2, trials=4, n_boot=100,
                   auto_stages=("gates", "per-class"), auto_min_se=0.0)
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "threshold_old_param.png").write_bytes(b"old")
    written = write_outputs(r, out)
    assert [p.name for p in written["removed"]] == ["threshold_old_param.png"]
    assert not (out / "figures" / "threshold_old_param.png").exists()
    listed = (out / "report.md").read_text()
    for p in (out / "figures").glob("*.png"):
        assert f"figures/{p.name}" in listed  # every figure left is one the report shows
    assert "`--stage auto` (chose" in listed and "| chosen by auto |" in listed
    for _, row in r.stage_table().iterrows():
        if row.heldout_gain_db < 0:
            assert f"Stage `{row.stage}` loses" in listed
    written = write_outputs(r, out, figures=False)
    assert not list((out / "figures").glob("*.png"))  # --no-figures leaves no stale figure


@pytest.mark.parametrize("stage, sweeps", [("per-class", True), ("gates", False)])
def test_sweep_kernels_compile_under_the_status_line(planted, monkeypatch, stage, sweeps):
    """Where the sweep's kernels are not cached and the chain sweeps, the search says
    "compiling kernels" and compiles them then (not silently mid-search); a chain without a
    sweeping stage neither says it nor compiles them."""
    import search.run as R

    warmed = []
    monkeypatch.setattr(R.sweep, "kernels_cached", lambda: False)
    monkeypatch.setattr(R.sweep, "warm_up", lambda: warmed.append(1))
    lines = []
    run_search(planted, stage=stage, folds=1, trials=2, n_boot=50, on_status=lines.append)
    scoring = [line for line in lines if line.startswith("scoring baseline and oracle")]
    assert len(warmed) == int(sweeps)
    if sweeps:
        assert "compiling kernels" in scoring[0]


def test_status_lines_from_the_start_and_per_chain(planted):
    from casdri.policies import get_policy
    from search.run import search_kernels_cached

    lines, stages = [], []
    cached = search_kernels_cached(get_policy("refine"), ("gates",))
    run_search(planted, stage="gates", folds=2, trials=4, n_boot=100, on_status=lines.append,
               on_stage=stages.append)
    assert lines[0] == "loading the decision cache"
    scoring = [line for line in lines if line.startswith("scoring baseline and oracle")]
    assert len(scoring) == 1  # "compiling kernels" is said exactly when they are not cached
    assert ("compiling kernels" in scoring[0]) == (not cached)
    assert [line for line in lines if line.endswith(": tuning")] == [
        "fold-0: tuning", "fold-1: tuning", "final: tuning"]
    assert [(r.fold, r.stage) for r in stages] == [("fold-0", "gates"), ("fold-1", "gates"),
                                                   ("final", "gates")]


def test_auto_with_a_test_split_in_parallel_equals_serial(grouped):
    kw = dict(stage="auto", folds=2, inner_folds=2, trials=4, n_boot=100, test_split="eval",
              auto_stages=("gates", "select"), auto_min_se=0.0)
    a = run_search(grouped, jobs=1, **kw)
    b = run_search(grouped, jobs=2, **kw)
    assert np.array_equal(a.x_final, b.x_final) and a.stages == b.stages
    assert [f.stages for f in a.fold_results] == [f.stages for f in b.fold_results]
    assert a.heldout.gain_db == b.heldout.gain_db and a.test.gain == b.test.gain


def test_auto_grouping_falls_back_with_a_warning_when_groups_cannot_make_folds(tmp_path):
    """Generated caches from a small pool: every soundscape shares a recording (one group).
    ``--group-by auto`` then folds ungrouped and says so, and that the evidence rule's moves
    are still tested clustered by recording (not under ``--accept margin``); ``--group-by
    recording`` refuses."""
    path = make_synthetic_cache(tmp_path / "cache", n_soundscapes=30, seed=1, load=False)
    ids = list(load_cache(path).soundscape_ids)
    _rewrite_soundscapes(path, recordings={s: ["noise0", f"ev{i}"] for i, s in enumerate(ids)})
    r = run_search(path, stage="gates", folds=3, trials=2, n_boot=100)
    assert r.folds.group_by is None
    assert any("--group-by auto" in w and "not grouped" in w and
               "each move's evidence test is still clustered by recording" in w
               for w in r.warnings)
    m = run_search(path, stage="gates", folds=3, trials=2, n_boot=100, accept="margin")
    assert any("not grouped" in w and "clustered" not in w for w in m.warnings)
    with pytest.raises(InputError, match="groups by recording"):
        run_search(path, stage="gates", folds=3, trials=2, n_boot=100, group_by="recording")


def test_auto_never_reruns_a_stage_from_the_same_setting_in_the_same_inner_fold(planted,
                                                                                monkeypatch):
    # A stage's run is a function of (stage, inner fold, setting): an inner fold that the kept
    # stage left unchanged reuses the other stages' runs instead of repeating them.
    import search.nested as nested
    runs = []
    real = nested.run_stage

    def recording(stage, x, ctx):
        runs.append((stage, ctx.fold, x.tobytes()))
        return real(stage, x, ctx)

    monkeypatch.setattr(nested, "run_stage", recording)
    s = SearchSettings(stage="auto", folds=2, inner_folds=3, n_trials=6, n_boot=200)
    r = run_search(planted, s)
    assert runs and len(set(runs)) == len(runs)
    steps = len(r.final.selection.stages) + 1  # the steps the final chain's selection ran
    n_stages = len(s.auto_stages)
    full = sum(n_stages - t for t in range(min(steps, n_stages))) * s.inner_folds
    final = [k for k in runs if k[1].startswith("final.")]
    assert 0 < len(final) <= full


def test_compiling_is_said_from_the_kernels_the_stages_run(monkeypatch):
    """A search whose stages do not sweep (gates, fusion, ``--stage auto``'s default pool)
    never compiles the pairs driver or the trace: they do not decide "compiling kernels"."""
    from casdri.policies import get_policy
    from search import run

    asked = []
    monkeypatch.setattr(run, "kernels_cached",
                        lambda policy, uses=None: asked.append((policy, uses)) or True)
    refine = get_policy("refine")
    assert run.search_kernels_cached(refine, ("fusion", "gates"))
    assert asked == [("baseline", ("par",)), ("oracle", ("par",)), (refine, ("ser",))]
    asked.clear()
    monkeypatch.setattr(run.sweep, "kernels_cached", lambda: False)
    assert not run.search_kernels_cached(refine, ("gates", "refine"))
    assert asked[-1] == (refine, ("ser", "pairs_ser", "trace"))
