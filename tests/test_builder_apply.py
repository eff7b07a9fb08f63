"""cache_builder.apply: the live pipeline scores what the replay of the same policy on a cache
of the same models says, per soundscape within 1e-4 dB, and writes a valid submission."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from cache_builder import apply_policy, build_cache
from cache_builder.apply import LiveLookup
from cache_builder.runner import load_soundscape, resolve_folder, scan_soundscapes
from cache_builder.system import load_system
from casdri.cache import load_cache
from casdri.errors import CacheError, PolicyError
from casdri.folders import parse_stem_name
from casdri.labels import DCASE2026T4
from casdri.policies import BaselineParams, OracleParams, RefineParams, get_policy
from casdri.replay import replay
from tests.builder_models import write_soundscapes, write_system

TOL_LIVE_DB = 1e-4  # live (written float32 stems, casdri.CapiSdri) vs replay, per soundscape
N_SC = 6


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("apply")
    y = write_system(root / "sys", stages=1, seed=3)
    sdir, odir = write_soundscapes(root / "data", n=N_SC, seconds=1.0, seed=5)
    system = load_system(y, device="cpu")
    build_cache(system, sdir, root / "cache", oracle=odir, chunk_size=3, batch_size=4,
                jobs=0, threads=1)
    return dict(root=root, yaml=y, sdir=sdir, odir=odir, system=system,
                cache=load_cache(root / "cache"))


SETTINGS = [
    ("baseline", BaselineParams()),
    ("baseline", BaselineParams(tagger="1ch", separator=1, stage=1)),
    ("refine", RefineParams()),
    # thresholds inside the tiny models' ranges: drops, re-separation and every gate act
    ("refine", RefineParams(w=0.3, solo_keep_1ch=0.3, solo_keep_4ch=0.3, verify_thr=0.3,
                            drop_thr=0.42, select_separator=2, stage=1, energy_gate_db=-10.6,
                            prob_gate=0.25, silence_thr=0.00045)),
    ("refine", RefineParams(verify_mode="argmax", drop_thr=0.5, solo_keep_1ch=0.3,
                            solo_keep_4ch=0.3, select_separator=1)),
    ("oracle", OracleParams(select_separator=2, stage=1)),
]


@pytest.mark.parametrize("name, params", SETTINGS,
                         ids=[f"{n}{i}" for i, (n, _) in enumerate(SETTINGS)])
def test_live_equals_replay(env, tmp_path, name, params):
    policy = tmp_path / "policy.yaml"
    policy.write_text(params.to_yaml(DCASE2026T4))
    out = tmp_path / "stems"
    rep = apply_policy(env["system"], policy, env["sdir"], out, oracle=env["odir"],
                       zip_name="sub.zip", threads=1)
    live = rep.score.per_soundscape.set_index("soundscape")
    cache = env["cache"]
    rp = replay(cache, name, params, per_soundscape=True).per_soundscape.set_index("soundscape")
    assert list(live.index) == list(rp.index)
    a, b = live["capi_sdri"].to_numpy(float), rp["capi_sdri"].to_numpy(float)
    assert (np.isnan(a) == np.isnan(b)).all()
    np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], atol=TOL_LIVE_DB, rtol=0)
    for sc in live.index:
        assert list(live.loc[sc, "est_labels"]) == list(rp.loc[sc, "est_labels"]), sc
    assert rep.capi_sdri == pytest.approx(float(np.nanmean(b)), abs=TOL_LIVE_DB)
    # only what the policy needs is separated: per soundscape, its lookups once each
    mod = get_policy(name)
    n_lookups = 0
    for s in range(cache.n_soundscapes):
        seen = set()
        dec = mod.decide(cache.inputs(s), params, _recording(cache.lookup(s), seen))
        n_lookups += len(seen)
        assert dec is not None
    assert rep.passes.get("separator", 0) == n_lookups
    assert rep.zip_path.exists() and rep.n_stems > 0


def _recording(lookup, seen):
    def f(query, separator, stage):
        seen.add((tuple(sorted(query)), separator))
        return lookup(query, separator, stage)
    return f


def test_refine_settings_exercise_gates_selection_and_reseparation(env):
    """The settings above reach every branch (else live == replay proves less)."""
    cache = env["cache"]

    def decisions(params):
        return [get_policy("refine").decide(cache.inputs(s), params, cache.lookup(s))
                for s in range(cache.n_soundscapes)]
    gated = [k for d in decisions(SETTINGS[3][1]) for k in d.keep]
    assert any(gated) and not all(gated)
    assert {sep for d in decisions(SETTINGS[3][1]) for sep in d.separators} == {0, 1}
    assert any(len(d.queries) == 2 for d in decisions(SETTINGS[4][1]))


def test_eval_set_submission(env, tmp_path):
    params = RefineParams(select_separator=2)
    policy = tmp_path / "p.yaml"
    policy.write_text(params.to_yaml(DCASE2026T4))
    out = tmp_path / "eval" / "stems"
    rep = apply_policy(env["yaml"], policy, env["sdir"], out, zip_name="submission",
                       jobs=1, threads=1, device="cpu")
    assert rep.capi_sdri is None and rep.n_soundscapes == N_SC
    files = sorted(p.name for p in out.glob("*.wav"))
    assert len(files) == rep.n_stems > 0
    with zipfile.ZipFile(tmp_path / "eval" / "submission.zip") as z:
        assert sorted(z.namelist()) == files
    names = {f"soundscape_{k:04d}" for k in range(N_SC)}
    for f in files:
        sc, i, label = parse_stem_name(f, names)
        info = sf.info(out / f)
        assert (info.channels, info.samplerate, info.frames, info.subtype) == \
            (1, 32000, 32000, "FLOAT")
    by_sc = pd.Series([parse_stem_name(f, names)[0] for f in files]).value_counts()
    for sc, n in by_sc.items():
        idx = sorted(parse_stem_name(f, names)[1] for f in files if f.startswith(sc + "_"))
        assert idx == list(range(n))
    # a second run refuses the non-empty folder unless told to overwrite
    with pytest.raises(CacheError, match="already holds .* --overwrite"):
        apply_policy(env["system"], policy, env["sdir"], out, threads=1)
    again = apply_policy(env["system"], policy, env["sdir"], out, overwrite=True, threads=1)
    assert sorted(p.name for p in out.glob("*.wav")) == files and again.n_stems == rep.n_stems


def test_bad_policy_yaml(env, tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("policy: nonsense\nparams: {}\n")
    with pytest.raises(PolicyError, match=r"p\.yaml: unknown policy 'nonsense'"):
        apply_policy(env["system"], p, env["sdir"], tmp_path / "o", threads=1)
    with pytest.raises(PolicyError, match="does not exist"):
        apply_policy(env["system"], tmp_path / "none.yaml", env["sdir"], tmp_path / "o")


def test_live_lookup_uses_the_canonical_order_of_the_cache(env):
    """The live pipeline sorts a query before separating it (slot i ↔ query[i], classes
    ascending), as the cache was built: any order of the same multiset gives the cached
    stems, and one separation serves every order and stage."""
    cache, system = env["cache"], env["system"]
    files = scan_soundscapes(env["sdir"], env["odir"], system.spec)
    checked = 0
    for s, f in enumerate(files):
        sc = load_soundscape(f)
        live = LiveLookup(system, sc.name, sc.mixture, sc.oracle)
        want = cache.lookup(s)
        for j in range(cache.key_offsets[s], cache.key_offsets[s + 1]):
            q = tuple(int(c) for c in cache.key_labels[j, :cache.key_len[j]])
            if len(set(q)) < 2:
                continue
            for sep in (0, 1):
                for stage in (0, 1):
                    got = live(tuple(reversed(q)), sep, stage)
                    ref = want(q, sep, stage)
                    assert [x.label for x in got] == list(q) == sorted(q)
                    np.testing.assert_allclose([x.energy_db for x in got],
                                               [x.energy_db for x in ref], atol=1e-4)
                    for a, b in zip(got, ref):
                        np.testing.assert_allclose(a.retag_max, b.retag_max, atol=1e-5)
            checked += 1
            break
    assert checked >= 3
    assert live.n_separations == 2  # one per separator; stages and orders come from memo


def test_apply_on_a_split_folder_finds_the_oracle(env, tmp_path):
    layout = resolve_folder(env["sdir"].parent)
    assert layout.soundscapes == env["sdir"] and layout.oracle == env["odir"]
    policy = tmp_path / "p.yaml"
    policy.write_text(BaselineParams().to_yaml(DCASE2026T4))
    rep = apply_policy(env["system"], policy, env["sdir"].parent, tmp_path / "o", threads=1)
    assert rep.capi_sdri is not None and rep.n_soundscapes == N_SC
    rep = apply_policy(env["system"], policy, env["sdir"].parent, tmp_path / "o2", threads=1,
                       oracle=False)
    assert rep.capi_sdri is None


# ----------------------------------------------------------------------------- issue 13: bad input


def _policy(tmp_path, params=None, provenance=None, name="p.yaml"):
    import yaml
    doc = yaml.safe_load((params or RefineParams()).to_yaml(DCASE2026T4))
    if provenance is not None:
        doc["provenance"] = provenance
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


@pytest.mark.parametrize("zip_name, match", [
    ("x.tar.gz", r"--zip 'x.tar.gz': a submission is a .zip file \(got '.tar.gz'\); name it "
                 r"e.g. x.zip"),
    ("sub.7z", r"a submission is a .zip file \(got '.7z'\)"),
    ("", r"give a file name such as submission.zip"),
    ("{ro}/sub.zip", r"cannot write into .*(ro|/proc); choose a writable folder"),
    ("{dir}", r"is a folder; give a file name"),
    ("{file}/sub.zip", r"cannot write into .*a-file; choose a writable folder"),
    ("{old}", r"old\.zip: exists \(an earlier submission\?\); pass --overwrite to replace it"),
])
def test_bad_zip_target_is_refused_before_any_work(tmp_path, zip_name, match):
    """Checked first: the system below does not even exist. Root may write into a 0o500
    folder (and os.access says so), so there the unwritable folder is /proc, which root
    cannot write either: its zip was refused only after the whole run."""
    import os
    ro, d, f, old = tmp_path / "ro", tmp_path / "d.zip", tmp_path / "a-file", tmp_path / "old.zip"
    ro.mkdir()
    d.mkdir()
    f.write_text("")
    old.write_bytes(b"PK")
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK) and "{ro}" in zip_name:
            if not Path("/proc").is_dir():
                pytest.skip("running as a user who can write anywhere, and no /proc")
            ro = Path("/proc")
        with pytest.raises(CacheError, match=match):
            apply_policy(tmp_path / "no-system.yaml", tmp_path / "no-policy.yaml", tmp_path,
                         tmp_path / "out", zip_name=zip_name.format(ro=ro, dir=d, file=f,
                                                                    old=old))
    finally:
        os.chmod(tmp_path / "ro", 0o700)
    assert not (tmp_path / "out").exists() and old.read_bytes() == b"PK"


# what the search refuses (casdri.policies strict PolicyParams): apply refuses the same,
# before loading a model
BAD_POLICIES = [
    ("select_separator: 5", {"select_separator": 5}, r"select_separator"),
    ("verify_mode: maybe", {"verify_mode": "maybe"}, r"verify_mode"),
    ("stage: 0.5", {"stage": 0.5}, r"stage"),
    ("stage: 2 of a 2-stage system", {"stage": 2}, r"stage"),
    ("energy_gate_db: .nan", {"energy_gate_db": float("nan")}, r"energy_gate_db|NaN"),
    ("prob_gate: 5", {"prob_gate": 5}, r"prob_gate"),
    ("silence_thr: -1", {"silence_thr": -1}, r"silence_thr"),
    ("unknown key", {"w_typo": 0.3}, r"unknown parameters \['w_typo'\]"),
]


def _bad_policy(tmp_path, change):
    import yaml
    doc = yaml.safe_load(RefineParams().to_yaml(DCASE2026T4))
    doc["params"].update(change)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def _search_refuses(path, meta) -> bool:
    """What the search and the replay refuse: `load_policy_yaml`, then the encoding of the
    parameters against the cache (here: the metadata a cache of the test system has)."""
    from casdri.policies import load_policy_yaml
    try:
        _, params = load_policy_yaml(path, DCASE2026T4)
        params.encode(meta)
    except PolicyError:
        return True
    return False


@pytest.mark.parametrize("case, change, match", BAD_POLICIES, ids=[c for c, _, _ in BAD_POLICIES])
def test_apply_validates_the_policy_exactly_as_the_search(env, tmp_path, case, change, match):
    p = _bad_policy(tmp_path, change)
    assert _search_refuses(p, env["cache"].meta), f"{case}: the search accepts it"
    with pytest.raises(PolicyError, match=rf"bad.yaml: .*{match}"):
        # a system YAML, not a loaded System: the policy is refused before any model loads
        apply_policy(env["yaml"], p, env["sdir"], tmp_path / "o", zip_name="s.zip")
    assert not (tmp_path / "o").exists() and not (tmp_path / "s.zip").exists()


def test_apply_and_search_agree_on_every_bad_policy(env, tmp_path, monkeypatch):
    """Whatever casdri.policies refuses, apply refuses, and what it accepts apply runs:
    apply has no validation of its own that could drift."""
    import cache_builder.apply as ap
    monkeypatch.setattr(ap, "load_system", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("models would load now")))
    for case, change, _ in BAD_POLICIES:
        p = _bad_policy(tmp_path, change)
        want = _search_refuses(p, env["cache"].meta)
        with pytest.raises(PolicyError if want else RuntimeError):
            apply_policy(env["yaml"], p, env["sdir"], tmp_path / "o", oracle=False)


def _models(system):
    return dict(system.sha256)


def test_policy_tuned_on_other_checkpoints_is_refused(env, tmp_path):
    models = _models(env["system"])
    other = dict(models, **{"separator/small": "ab" * 32})
    p = _policy(tmp_path, provenance={"models": other, "cache_id": "x"})
    with pytest.raises(PolicyError, match=r"p.yaml: the policy was tuned with other models "
                       r"than the system \(separator/small: tuned with checkpoint sha256 "
                       r"abababababab\.\.\., the system has .*--force"):
        apply_policy(env["system"], p, env["sdir"], tmp_path / "o", threads=1)
    assert not (tmp_path / "o").exists()
    with pytest.warns(UserWarning, match=r"APPLYING A POLICY TUNED ON OTHER MODELS \(--force\): "
                      r"separator/small"):
        rep = apply_policy(env["system"], p, env["sdir"], tmp_path / "o", threads=1,
                           oracle=False, force=True)
    assert rep.n_soundscapes == N_SC


def test_policy_provenance_through_its_cache_metadata(env, tmp_path):
    """An older policy names its cache only: the cache's model hashes are compared."""
    import json
    import shutil
    import warnings
    cache = tmp_path / "cache"
    shutil.copytree(env["root"] / "cache", cache)
    meta = json.loads((cache / "_casdri_cache.json").read_text())
    prov = {"cache_path": str(cache), "cache_id": meta["cache_id"]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the models match: not a word
        apply_policy(env["system"], _policy(tmp_path, provenance=prov), env["sdir"],
                     tmp_path / "o", threads=1, oracle=False)
    meta["extra"]["models"]["taggers"]["4ch"]["sha256"] = "cd" * 32
    (cache / "_casdri_cache.json").write_text(json.dumps(meta))
    with pytest.raises(PolicyError, match=r"tagger/4ch: tuned with checkpoint sha256 cdcd"):
        apply_policy(env["system"], _policy(tmp_path, provenance=prov), env["sdir"],
                     tmp_path / "o2", threads=1, oracle=False)


def test_policy_without_provenance_warns(env, tmp_path):
    with pytest.warns(UserWarning, match=r"no model provenance"):
        apply_policy(env["system"], _policy(tmp_path), env["sdir"], tmp_path / "o",
                     threads=1, oracle=False)


def test_overwrite_zips_only_what_this_run_wrote(env, tmp_path):
    out = tmp_path / "stems"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    sf.write(out / "elsewhere_0_Speech.wav", np.zeros(10, np.float32), 32000)  # not ours
    rep = apply_policy(env["system"], _policy(tmp_path, RefineParams(select_separator=2)),
                       env["sdir"], out, zip_name="sub.zip", overwrite=True, threads=1,
                       oracle=False)
    mine = sorted(p.name for p in out.glob("soundscape_*.wav"))
    with zipfile.ZipFile(rep.zip_path) as z:
        assert sorted(z.namelist()) == mine and len(mine) == rep.n_stems
    assert (out / "notes.txt").exists() and (out / "elsewhere_0_Speech.wav").exists()
    assert not list(tmp_path.glob(".stems.tmp-*"))


def test_killed_apply_leaves_nothing_that_looks_finished(env, tmp_path, monkeypatch):
    import cache_builder.apply as ap
    calls = []

    def dying_write(*a, **k):
        calls.append(a[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return sf.write(*a, **k)
    monkeypatch.setattr(ap.sf, "write", dying_write)
    stale = tmp_path / ".stems.tmp-999999-deadbeef"  # a SIGKILLed run's temp folder
    stale.mkdir()
    (stale / "soundscape_0000_0_Speech.wav").write_bytes(b"half")
    with pytest.raises(KeyboardInterrupt):
        apply_policy(env["system"], _policy(tmp_path, RefineParams(select_separator=2)),
                     env["sdir"], tmp_path / "stems", zip_name="sub.zip", threads=1,
                     oracle=False)
    assert all(".stems.tmp-" in str(c) for c in calls)  # never written in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]  # stale one gone too


def test_interrupted_move_is_marked_and_refused(env, tmp_path):
    from cache_builder.apply import INCOMPLETE_MARKER
    out = tmp_path / "stems"
    out.mkdir()
    (out / INCOMPLETE_MARKER).write_text("killed")
    with pytest.raises(CacheError, match=r"an earlier apply was killed .*--overwrite"):
        apply_policy(env["system"], _policy(tmp_path), env["sdir"], out, threads=1)


def test_oracle_policy_without_oracle_labels_is_refused(env, tmp_path):
    """The oracle policy decides from the oracle labels; without an oracle folder it wrote no
    stem at all and exited 0 (a silently empty submission)."""
    policy = tmp_path / "oracle.yaml"
    policy.write_text(OracleParams().to_yaml(DCASE2026T4))
    with pytest.warns(UserWarning, match="no model provenance"):
        with pytest.raises(PolicyError, match=r"oracle\.yaml: the oracle policy picks the "
                                              r"stems of the oracle labels; give --oracle"):
            apply_policy(env["yaml"], policy, env["sdir"], tmp_path / "out", oracle=False)
    assert not any((tmp_path / "out").glob("*.wav"))
    rep = apply_policy(env["system"], policy, env["sdir"], tmp_path / "out2", oracle=env["odir"],
                       threads=1)
    assert rep.n_stems > 0  # with the oracle folder it runs as before
