"""Issue 15 in the builder: a system YAML with a frame-level SED model, SED-guided separators
and stages, a refinement stage run for 2 iterations (each a cache stage) whose stems a stage
retagger of its own re-tags. The cache holds the SED and every iteration, its closure is
complete over the iterations, and live ``casdri-cache apply`` of the ``staged`` policy (SED
gates, per-class stage choice, re-classification) equals its replay on the cache."""
from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from cache_builder import apply_policy, build_cache
from cache_builder._cachewrite import info, validate
from cache_builder.apply import LiveLookup
from cache_builder.runner import load_soundscape, resolve_folder, scan_soundscapes
from cache_builder.system import SystemConfigError, SystemSpec, load_system
from casdri import schema as sc
from casdri.cache import load_cache
from casdri.labels import DCASE2026T4
from casdri.policies import StagedParams
from casdri.replay import decisions, replay, replay_matrix
from casdri.sed import F_DUR0, F_MAX, activity_summary, summary_of_cache
from tests.builder_models import one_torch_thread, write_soundscapes, write_system  # noqa: F401

TOL_LIVE_DB = 1e-4
N_SC = 6


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("sed")
    y = write_system(root / "sys", stages=1, separators=("small",), seed=4, sed=True,
                     iterations=2, stage_retagger=True)
    sdir, odir = write_soundscapes(root / "data", n=N_SC, seconds=1.0, seed=7)
    system = load_system(y, device="cpu")
    build_cache(system, sdir, root / "cache", oracle=odir, chunk_size=3, batch_size=4,
                jobs=0, threads=1)
    return dict(root=root, yaml=y, sdir=sdir, odir=odir, system=system,
                cache=load_cache(root / "cache"))


def test_cache_holds_sed_and_every_iteration(env):
    c = env["cache"]
    assert c.meta.n_stages == 3
    assert c.meta.extra["stage_names"] == ["sep", "refine1#1", "refine1#2"]
    assert c.meta.model_sha256()["sed/sed"] is not None
    assert c.sed is not None and c.sed.models == ("sed",)
    assert np.all(c.sed.frame_hop_s == 0.1) and np.all(np.diff(c.sed.offsets) == 9)
    assert np.isfinite(summary_of_cache(c)).all()
    assert validate(env["root"] / "cache") == []
    d = info(env["root"] / "cache")
    assert d["sed"]["models"] == ["sed"] and d["sed"]["n_with_sed"] == N_SC
    assert d["sed"]["model"]["frame_hop_s"] == 0.1 and d["passes"]["sed"] == N_SC
    # each iteration refines the previous one's stems: every stage's stems differ
    j = int(np.argmax(c.key_len))
    rows = c.key_stem[j, 0]
    e = [c.stem_energy_db[r] for r in rows]
    assert len(set(e)) == 3, e


def test_sed_is_the_models_output_rounded_to_float16(env):
    system, c = env["system"], env["cache"]
    layout = resolve_folder(env["sdir"], env["odir"])
    f = scan_soundscapes(layout.soundscapes, layout.oracle, system.spec)[2]
    s = load_soundscape(f)
    probs = system.detect(torch.from_numpy(s.mixture[None]))[0]
    i = c.index_of(s.name)
    a, b = c.sed.offsets[i], c.sed.offsets[i + 1]
    assert probs.dtype == np.float16 and np.array_equal(c.sed.probs[a:b], probs)
    assert np.array_equal(c.inputs(i).sed_summary, activity_summary(probs, 0.1))


def test_stage_stems_are_retagged_by_the_stage_retagger(env):
    """Stage 0 stems by the system's retagger (1ch), stages 1 and 2 by their own ("stage")
    (close, not bit-equal: the build re-tags many stems per forward, this test one query's)."""
    system, c = env["system"], env["cache"]
    layout = resolve_folder(env["sdir"], env["odir"])
    f = scan_soundscapes(layout.soundscapes, layout.oracle, system.spec)[0]
    s = load_soundscape(f)
    i = c.index_of(s.name)
    sed = system.detect(torch.from_numpy(s.mixture[None]))[0]
    lk = LiveLookup(system, s.name, s.mixture, s.oracle, sed)
    j = c.key_offsets[i]
    q = tuple(int(x) for x in c.key_labels[j, :c.key_len[j]])
    for st, tagger in ((0, "1ch"), (1, "stage"), (2, "stage")):
        stems = lk(q, 0, st)
        x = torch.from_numpy(np.stack([st_.ref for st_ in stems])[:, None])
        row = c.key_stem[j, 0, st]
        got = c.stem_retag_max[row:row + len(q)]
        for t in ("1ch", "stage"):
            want = system.retag(x, tagger=t).astype(np.float32)[:, :, :-1].max(axis=1)
            assert np.allclose(got, want, rtol=0, atol=1e-5) == (t == tagger), (st, t)
    assert system.stage_retagger(0) == "1ch" and system.stage_retagger(2) == "stage"


def test_closure_completeness_covers_every_iteration(env, tmp_path):
    import shutil

    path = tmp_path / "c"
    shutil.copytree(env["root"] / "cache", path)
    f = sorted((path / "separations").glob("part-*.parquet"))[0]
    t = pq.read_table(f)
    pq.write_table(t.filter(pc.not_equal(t[sc.STAGE], 2)), f)
    problems = validate(path)
    assert any("stage 2" in p for p in problems), problems


def _policies(c):
    """Staged settings whose SED gates, per-class stages and re-classification act on this
    cache (thresholds from its own values)."""
    sed = summary_of_cache(c)
    classes = sorted({int(x) for x in c.key_labels[c.key_labels >= 0]})
    names = [c.meta.classes[k] for k in classes]
    smax = {n: float(np.median(sed[:, k, F_MAX])) for n, k in zip(names, classes)}
    dur = {n: float(np.median(sed[:, k, F_DUR0 + 1])) for n, k in zip(names, classes)}
    by = {n: (i % 3) - 1 for i, n in enumerate(names)}
    sil = float(np.quantile(c.stem_retag_silence_min, 0.75))
    tag = c.tagger_probs[:, :, :, :-1].max(axis=(0, 2))
    ok = c.key_labels >= 0  # the gap of each cached slot's (soundscape, class)
    slot_sc = np.broadcast_to(c.key_sc[:, None], c.key_labels.shape)[ok]
    gap = float(np.median((tag - sed[:, :, F_MAX])[slot_sc, c.key_labels[ok]]))
    return [
        StagedParams(sed_max_gate={**smax, "default": 0.0}),
        StagedParams(sed_min_dur_s={**dur, "default": 0.0}, stage_by_class={**by, "default": 2},
                     select_separator=0),
        StagedParams(stage=1, stage_by_class={**by, "default": -1}, reclass_stage=0,
                     reclass_silence_thr=sil, sed_agree_gap=gap),
    ]


def test_staged_settings_act(env):
    """Each setting keeps some stems and silences others, and the per-class stage settings
    take one query's stems from several stages."""
    c = env["cache"]
    base = replay_matrix(c, "staged", StagedParams(), counts=True)
    for k, p in enumerate(_policies(c)):
        r = replay_matrix(c, "staged", p, counts=True)
        assert not (np.array_equal(r.values, base.values, equal_nan=True)
                    and np.array_equal(r.labels, base.labels)), p
        d = decisions(c, "staged", p)
        assert (d.label != "silence").any() and (d.label == "silence").any(), k
        if k > 0:
            assert (d.groupby("soundscape").stage.nunique() > 1).any(), k


@pytest.mark.parametrize("k", [0, 1, 2])
def test_live_apply_equals_replay(env, tmp_path, k):
    c = env["cache"]
    params = _policies(c)[k]
    policy = tmp_path / "policy.yaml"
    policy.write_text(params.to_yaml(DCASE2026T4))
    rep = apply_policy(env["system"], policy, env["sdir"], tmp_path / "stems",
                       oracle=env["odir"], threads=1)
    live = rep.score.per_soundscape.set_index("soundscape")
    rp = replay(c, "staged", params, per_soundscape=True).per_soundscape.set_index("soundscape")
    assert list(live.index) == list(rp.index)
    a, b = live["capi_sdri"].to_numpy(float), rp["capi_sdri"].to_numpy(float)
    assert (np.isnan(a) == np.isnan(b)).all()
    np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], atol=TOL_LIVE_DB, rtol=0)
    for name in live.index:
        assert list(live.loc[name, "est_labels"]) == list(rp.loc[name, "est_labels"]), name
    assert rep.passes.get("sed", 0) == N_SC


def test_spec_refuses_bad_sed_entries(tmp_path):
    base = {"taggers": {"1ch": {"module": "m", "class": "T"}},
            "separators": {"s": {"module": "m", "class": "S", "sed_guided": True}},
            "retagger": "1ch"}
    with pytest.raises(SystemConfigError, match="sed_guided but the system has no 'sed'"):
        SystemSpec.from_dict(base, tmp_path)
    with pytest.raises(SystemConfigError, match="frame_hop_s"):
        SystemSpec.from_dict({**base, "sed": {"module": "m", "class": "D"}}, tmp_path)
    with pytest.raises(SystemConfigError, match="'iterations' is for stage entries only"):
        SystemSpec.from_dict({**base, "separators": {"s": {"module": "m", "class": "S",
                                                           "iterations": 2}}}, tmp_path)
    with pytest.raises(SystemConfigError, match="retagger 'x' is not one of the taggers"):
        SystemSpec.from_dict({**base, "separators": {"s": {"module": "m", "class": "S"}},
                              "stages": [{"module": "m", "class": "R", "retagger": "x"}]},
                             tmp_path)
    spec = SystemSpec.from_dict({**base, "sed": {"module": "m", "class": "D", "frame_hop_s": 0.2},
                                 "stages": [{"name": "r", "module": "m", "class": "R",
                                             "iterations": 3}]}, tmp_path)
    assert [n for n, _ in spec.stage_runs()] == ["r#1", "r#2", "r#3"] and spec.n_stages == 4


class _BadSED(torch.nn.Module):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, batch):
        b = batch["waveform"].shape[0]
        return self.out(b)


@pytest.mark.parametrize("out, match", [
    (lambda b: {"probabilities": torch.full((b, 5, 18), 2.0)}, r"in \[0, 1\]"),
    (lambda b: {"probabilities": torch.zeros((b, 5, 17))}, r"\(B, n_frames, 18\)"),
    (lambda b: {"logits": torch.zeros((b, 5, 18))}, "expected"),
    (lambda b: {"probabilities": torch.full((b, 5, 18), float("nan"))}, r"in \[0, 1\]"),
])
def test_bad_sed_output_is_named(env, out, match):
    from cache_builder.system import ModelOutputError

    system = env["system"]
    good = system.sed
    system.sed = _BadSED(out)
    try:
        with pytest.raises(ModelOutputError, match=match):
            system.detect(torch.zeros((1, 4, 32000)), where=" on x")
    finally:
        system.sed = good


def test_stage_retagger_must_take_mono_stems(tmp_path):
    data = {"taggers": {"1ch": {"module": "m", "class": "T"},
                        "4ch": {"module": "m", "class": "T", "channels": 4}},
            "separators": {"s": {"module": "m", "class": "S"}}, "retagger": "1ch",
            "stages": [{"module": "m", "class": "R", "retagger": "4ch"}]}
    with pytest.raises(SystemConfigError, match="retagger '4ch' is fed mono stems"):
        SystemSpec.from_dict(data, tmp_path)
