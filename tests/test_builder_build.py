"""cache_builder.build: cache contents, forward-pass counts, closure completeness, resume after
a kill, shards, validation and the errors of a build. Real recordings on disk, tiny models."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from cache_builder import build_cache, cache_info, validate_cache
from cache_builder.closure import query_closure
from cache_builder.runner import energy_db, separate_items
from cache_builder.system import ModelOutputError, load_system
from casdri import snr_db
from casdri.cache import load_cache
from casdri.errors import AudioFileError, CacheError, CacheKeyError, FolderLayoutError
from casdri.policies import RefineParams, required_keys
from casdri.policies import refine as refine_policy
from casdri.replay import replay
from cache_builder.system import sha256_file
from tests.builder_models import (one_torch_thread,  # noqa: F401 - autouse fixture
                                  write_metadata, write_soundscapes, write_system)

ROOT = Path(__file__).parents[1]
N_SC = 6
KW = dict(chunk_size=2, batch_size=4, device="cpu", jobs=0, threads=1)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    y = write_system(root / "sys", stages=1)
    sdir, odir = write_soundscapes(root / "data", n=N_SC, seconds=1.0)
    system = load_system(y, device="cpu")
    ref = root / "ref"
    report = build_cache(system, sdir, ref, oracle=odir, **KW)
    return dict(root=root, yaml=y, sdir=sdir, odir=odir, system=system, ref=ref,
                report=report, cache=load_cache(ref))


def _arrays(cache):
    return {f.name: getattr(cache, f.name) for f in dataclasses.fields(cache)
            if isinstance(getattr(cache, f.name), np.ndarray)}


def assert_same_cache(a, b, rtol=0.0):
    """Equal DecisionCaches (float columns within ``rtol`` when batches differed)."""
    xa, xb = _arrays(a), _arrays(b)
    assert xa.keys() == xb.keys()
    for k in xa:
        u, v = xa[k], xb[k]
        assert u.shape == v.shape, k
        if u.dtype.kind == "f" and rtol:
            np.testing.assert_allclose(u, v, rtol=rtol, atol=1e-6, err_msg=k)
        else:
            np.testing.assert_array_equal(u, v, err_msg=k)


# ----------------------------------------------------------------------------- contents


def test_cache_holds_the_models_outputs(env):
    cache, system = env["cache"], env["system"]
    assert list(cache.soundscape_ids) == [f"soundscape_{k:04d}" for k in range(N_SC)]
    assert cache.taggers == ("1ch", "4ch") and cache.separators == ("small", "large")
    assert cache.n_stages == 2 and validate_cache(env["ref"]) == []
    # one key recomputed directly: same stems → same energy, SNR and retag
    s = 2
    mix, _ = sf.read(env["sdir"] / f"{cache.soundscape_ids[s]}.wav", dtype="float32")
    mix = np.ascontiguousarray(mix.T)
    refs = np.stack([sf.read(p, dtype="float32")[0] for p in
                     sorted(env["odir"].glob(f"{cache.soundscape_ids[s]}_*.wav"))])
    j = cache.key_offsets[s] + 3
    q = tuple(int(c) for c in cache.key_labels[j, :cache.key_len[j]])
    info = separate_items(system, "large", [mix], [q], [refs], keep_waveforms=True)[0]
    for st in range(2):
        row = cache.key_stem[j, 1, st]
        n = len(q)
        np.testing.assert_allclose(cache.stem_energy_db[row:row + n], info[st].energy_db,
                                   rtol=1e-6)
        np.testing.assert_allclose(energy_db(info[st].waveforms, mix[0]), info[st].energy_db)
        snr = cache.stem_snr_db[cache.stem_snr_offsets[row]:cache.stem_snr_offsets[row + n]]
        np.testing.assert_allclose(snr.reshape(n, -1), snr_db(info[st].waveforms, refs),
                                   atol=1e-5)
        np.testing.assert_allclose(cache.stem_retag_max[row:row + n],
                                   info[st].retag[:, :, :-1].max(axis=1), atol=1e-6)
    r0, r1 = cache.ref_offsets[s], cache.ref_offsets[s + 1]
    np.testing.assert_allclose(cache.snr_mix_db[r0:r1], snr_db(mix[0], refs)[0])


def test_forward_passes_no_key_twice(env):
    rep, cache = env["report"], env["cache"]
    n_keys = int(len(cache.key_codes))
    n_stems = int(cache.key_len.sum())
    assert rep.passes["tagger"] == N_SC * 2
    assert rep.passes["separator"] == n_keys * 2  # each (soundscape, key) once per separator
    assert rep.passes["stage"] == n_keys * 2
    # every stem of every separator and stage is re-tagged, bit-identical stems once
    # (test_builder_system.py::test_retag_runs_once_per_distinct_stem)
    assert 0 < rep.passes["retag"] <= n_stems * 2 * 2
    assert (cache.key_stem >= 0).all()
    per = rep.per_soundscape()
    assert per["separator"] == pytest.approx(2 * n_keys / N_SC)


def test_closure_covers_every_refine_setting(env):
    cache = env["cache"]
    # direct check against the policy's own enumeration
    for sc, keys in required_keys(cache, "refine").items():
        s = cache.index_of(sc)
        assert all(cache.find_key(s, q) >= 0 for q in keys), sc
    # random refine settings, plain-Python decide on cache lookups and the jitted replay
    rng = np.random.default_rng(0)
    space = RefineParams.search_space(cache)
    X = []
    for _ in range(60):
        x = RefineParams().encode(cache)
        for r in space:
            if r.choices:
                x[r.columns] = rng.choice(r.choices)
            else:
                x[r.columns] = rng.uniform(r.low, r.high, size=len(r.columns))
        X.append(x)
        params = RefineParams.decode(x, cache)
        for s in range(cache.n_soundscapes):
            refine_policy.decide(cache.inputs(s), params, cache.lookup(s))  # no CacheKeyError
    res = replay(cache, "refine", np.array(X))
    assert np.isfinite(res.capi_sdri).all()


def test_closure_matches_independent_enumeration(env):
    cache = env["cache"]
    for s in range(cache.n_soundscapes):
        probs = {t: cache.tagger_probs[i, s] for i, t in enumerate(cache.taggers)}
        r0, r1 = cache.ref_offsets[s], cache.ref_offsets[s + 1]
        want = query_closure(probs, 1, 3, list(cache.ref_labels[r0:r1]), 3)
        k0, k1 = cache.key_offsets[s], cache.key_offsets[s + 1]
        got = {tuple(int(c) for c in cache.key_labels[j, :cache.key_len[j]])
               for j in range(k0, k1)}
        assert got == set(want)


def test_missing_key_raises_cache_key_error(env):
    cache = env["cache"]
    q = next((c, c, c) for c in range(18) if cache.find_key(0, (c, c, c)) < 0)
    with pytest.raises(CacheKeyError, match="not in the cache"):
        cache.lookup(0)(q, 0, 0)


# ----------------------------------------------------------------------------- resume, shards


def _manifest_done(path: Path) -> dict:
    try:
        return json.loads(path.read_text())["done"]
    except (OSError, ValueError, KeyError):
        return {}


@pytest.mark.slow
def test_sigkill_mid_chunk_then_same_command_resumes(env, tmp_path):
    """A real SIGKILL of the build process while a chunk is being separated; the same command
    then finishes the chunk in flight from its batch journal (separating again only what was
    not journaled), and the finished parts are left untouched."""
    y = env["yaml"].parent / "slow.yaml"
    data = yaml.safe_load(env["yaml"].read_text())
    for spec in data["separators"].values():  # same weights and outputs, 0.15 s per forward
        spec.update({"class": "SlowSeparator", "args": {**spec["args"], "delay_s": 0.15}})
    y.write_text(yaml.safe_dump(data, sort_keys=False))  # separator order is part of the cache
    out = tmp_path / "cache"
    manifest = out / "_build" / "dev.shard-000of001.json"
    cmd = [sys.executable, "-m", "cache_builder.cli", "build", "--system", str(y),
           "--soundscapes", str(env["sdir"]), "--oracle", str(env["odir"]), "--out", str(out),
           "--chunk-size", "2", "--batch-size", "4", "--device", "cpu", "--jobs", "1",
           "--no-progress", "--threads", "1"]
    envv = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=envv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    journal = out / "_build" / "journal"

    def journaled():  # finished batches of the chunk in flight: {file: (soundscapes, queries)}
        got = {}
        done = _manifest_done(manifest)  # a finished chunk's journal may not be cleared yet
        for f in journal.glob("*/*.npz"):
            if f.parent.name in done:
                continue
            with np.load(f) as z:
                got[f] = (list(z["names"]), int(z["q_len"].size))
        return got

    deadline = time.monotonic() + 240
    while (not (_manifest_done(manifest) and journaled()) and proc.poll() is None
           and time.monotonic() < deadline):
        time.sleep(0.02)
    assert proc.poll() is None, f"build ended before the kill: {proc.communicate()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    done = _manifest_done(manifest)
    assert 1 <= len(done) < 3  # killed with a chunk in flight
    saved = journaled()
    assert saved and all(f.parent.name not in done for f in saved)  # the chunk in flight's
    tables = ("soundscapes", "tagger", "separations")
    on_disk = {f.name[len("part-"):-len(".parquet")] for t in tables
               for f in (out / t).glob("part-*.parquet")}
    assert set(done) <= on_disk and len(on_disk - set(done)) <= 1  # at most the one in flight
    kept = {f: (f.stat().st_ino, f.stat().st_mtime_ns) for t in tables for part in done
            for f in [out / t / f"part-{part}.parquet"]}
    r = subprocess.run(cmd, cwd=ROOT, env=envv, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    n_done = sum(len(v) for v in done.values())
    assert f"built {N_SC - n_done}, skipped {n_done} of {N_SC} soundscapes" in r.stdout
    assert {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in kept} == kept
    assert not [f for f in out.rglob("*") if "tmp" in f.name]
    # the restart's passes (recorded per part) are those of the soundscapes not yet done
    ref = env["cache"]
    redo = {str(x) for x in ref.soundscape_ids} - {n for v in done.values() for n in v}
    keys_left = sum(1 for j in range(len(ref.key_codes))
                    if str(ref.soundscape_ids[ref.key_sc[j]]) in redo)
    passes = json.loads(manifest.read_text())["passes"]
    new_parts = set(passes) - set(done)
    # every batch journaled before the kill was read back, not separated again
    assert sum(passes[p]["separator"] for p in new_parts) == \
        2 * keys_left - sum(n for _, n in saved.values())
    assert not journal.exists() or not any(journal.iterdir())  # cleared with its part
    assert sum(passes[p]["tagger"] for p in new_parts) == 2 * len(redo)
    assert_same_cache(load_cache(out), ref)
    assert validate_cache(out) == []


class _Killed(BaseException):
    """Stands for a kill: not an Exception, so no handler of the build catches it."""


def test_resume_after_kill_redoes_only_the_chunk_in_flight(env, tmp_path, monkeypatch):
    import cache_builder.build as b
    out = tmp_path / "cache"

    def killed(self):  # the process dies right after the first chunk entered the manifest
        raise _Killed
    monkeypatch.setattr(b.BatchJournal, "clear", killed)
    with pytest.raises(_Killed):
        build_cache(env["yaml"], env["sdir"], out, oracle=env["odir"], **KW)
    monkeypatch.undo()
    parts = sorted(p.name for p in (out / "soundscapes").glob("*.parquet"))
    assert parts == ["part-dev-000of001-00000.parquet"]
    assert not list(out.rglob(".*tmp*"))  # no half-written file left
    # a kill between two tables of the next chunk: orphan files that resume must replace
    shutil.copy(out / "separations" / "part-dev-000of001-00000.parquet",
                out / "separations" / "part-dev-000of001-00001.parquet")
    # and the temp file of a write a kill interrupted (never read; resume removes it)
    stale = out / "tagger" / ".part-dev-000of001-00001.parquet.tmp-99999-abcdef01"
    stale.write_bytes(b"PAR1 half a file")
    other = out / "tagger" / ".part-dev-001of002-00000.parquet.tmp-99999-abcdef01"
    other.write_bytes(b"another shard's write in progress")
    report = build_cache(env["yaml"], env["sdir"], out, oracle=env["odir"], **KW)
    assert not stale.exists() and other.exists()  # only this shard's leftovers
    other.unlink()
    assert (report.n_skipped, report.n_built) == (2, N_SC - 2)
    ref = env["cache"]
    done = {str(x) for x in ref.soundscape_ids[:2]}
    keys_left = sum(1 for j in range(len(ref.key_codes))
                    if str(ref.soundscape_ids[ref.key_sc[j]]) not in done)
    assert report.passes["separator"] == 2 * keys_left  # finished parts not recomputed
    assert report.passes["tagger"] == 2 * (N_SC - 2)
    assert_same_cache(load_cache(out), ref)
    assert validate_cache(out) == []
    # a second restart has nothing left to do
    again = build_cache(env["yaml"], env["sdir"], out, oracle=env["odir"], **KW)
    assert again.n_built == 0 and again.passes.get("separator", 0) == 0


def test_shards_into_one_folder_equal_single_run(env, tmp_path):
    out = tmp_path / "sharded"
    for i in range(2):
        build_cache(env["system"], env["sdir"], out, oracle=env["odir"], shard=(i, 2), **KW)
    assert validate_cache(out) == []
    a, b = load_cache(out), env["cache"]
    np.testing.assert_array_equal(a.tagger_probs, b.tagger_probs)  # tag_batch_size=1: exact
    assert_same_cache(a, b, rtol=1e-5)  # separator batches differ: last float32 bits


def test_shards_in_separate_folders_merge(env, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build_cache(env["system"], env["sdir"], a, oracle=env["odir"], shard=(0, 2), **KW)
    problems = validate_cache(a)
    assert any("split 'dev': 3 soundscapes in the parts, the build listed 6: missing shards "
               "or chunks; build shard(s) 1/2 (--shard) into it" in p for p in problems), problems
    build_cache(env["system"], env["sdir"], b, oracle=env["odir"], shard=(1, 2), **KW)
    for table in ("soundscapes", "tagger", "separations"):
        for f in (b / table).glob("*.parquet"):
            shutil.copy(f, a / table / f.name)
    assert validate_cache(a) == []
    shutil.copy(b / "_build" / "dev.shard-001of002.json", a / "_build")
    assert validate_cache(a) == []
    assert load_cache(a).n_soundscapes == N_SC


def test_validate_reports_problems(env, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(env["ref"], bad)
    meta = json.loads((bad / "_casdri_cache.json").read_text())
    meta["closure"]["proposal_top_n"] = 2
    (bad / "_casdri_cache.json").write_text(json.dumps(meta))
    assert any("closure query" in p and "missing" in p for p in validate_cache(bad))
    shutil.rmtree(bad)
    shutil.copytree(env["ref"], bad)
    (bad / "separations" / "part-dev-000of001-00001.parquet").unlink()
    problems = validate_cache(bad)
    assert any("has no separations file" in p for p in problems)
    prog = bad / "_build" / "dev.shard-000of001.json"
    p = json.loads(prog.read_text())
    p["done"].pop("dev-000of001-00002")
    prog.write_text(json.dumps(p))
    assert any("split 'dev' shard 0/1 is unfinished (4 of 6" in p for p in validate_cache(bad))
    prog.unlink()
    assert any("split 'dev' has no build manifest" in p for p in validate_cache(bad))


def test_info(env):
    info = cache_info(env["ref"])
    assert info["n_soundscapes"] == N_SC and info["n_parts"] == 3
    assert info["n_queries"] == len(env["cache"].key_codes)
    assert info["separators"]["small"]["sha256"] and info["size_mb"] > 0
    assert info["splits"] == {"dev": N_SC}
    # forward passes per soundscape, from the build manifest: the build report's figures
    assert info["passes"] == env["report"].passes
    per = env["report"].per_soundscape()
    assert info["passes_per_soundscape"] == {k: round(v, 3) for k, v in per.items()}
    assert set(per) == {"tagger", "separator", "stage", "retag"}


def test_checkpoint_sha256_in_cache_metadata(env):
    meta = env["cache"].meta
    weights = env["yaml"].parent / "weights"
    assert meta.separator_sha256 == tuple(sha256_file(weights / f"separators_{s}.pt")
                                          for s in ("small", "large"))
    models = meta.extra["models"]
    for t in ("1ch", "4ch"):
        assert models["taggers"][t]["sha256"] == sha256_file(weights / f"taggers_{t}.pt")
    assert models["stages"][0]["sha256"] == sha256_file(weights / "stages_refine1.pt")
    assert meta.extra["amp"] is False  # float32 unless --amp


def test_separator_batches_span_soundscapes(env):
    """Items are (soundscape, query) pairs of a chunk cut into batch_size batches (all clips
    have one length here), not one batch per soundscape."""
    cache, rep = env["cache"], env["report"]
    n_keys = np.diff(cache.key_offsets)
    chunks = [n_keys[i:i + KW["chunk_size"]].sum() for i in range(0, N_SC, KW["chunk_size"])]
    bs = KW["batch_size"]
    assert rep.calls["separator"] == 2 * sum(-(-int(n) // bs) for n in chunks)
    per_soundscape_batches = 2 * sum(-(-int(n) // bs) for n in n_keys)
    assert rep.calls["separator"] < per_soundscape_batches
    assert rep.calls["tagger"] == 2 * N_SC  # tag_batch_size 1: one forward per clip


def test_validate_flags_a_soundscape_twice(env, tmp_path):
    bad = tmp_path / "dup"
    shutil.copytree(env["ref"], bad)
    for table in ("soundscapes", "tagger", "separations"):
        shutil.copy(bad / table / "part-dev-000of001-00000.parquet",
                    bad / table / "part-dev-000of001-00009.parquet")
    problems = validate_cache(bad)
    assert any("'soundscape_0000' appears twice" in p and "00009" in p for p in problems), problems


def test_split_folder_layout_and_split_tag_from_metadata(env, tmp_path):
    """The generator's split folder: soundscape/, oracle_target/ and metadata.parquet whose
    split column becomes the cache's split tag; the oracle targets are found by themselves."""
    root = env["sdir"].parent
    data = tmp_path / "fold2"
    shutil.copytree(root / "soundscape", data / "soundscape")
    shutil.copytree(root / "oracle_target", data / "oracle_target")
    write_metadata(data, "fold2")
    rep = build_cache(env["system"], data, tmp_path / "c", **KW)
    assert rep.split == "fold2" and rep.oracle == data / "oracle_target"
    cache = load_cache(tmp_path / "c")
    assert set(np.asarray(cache.splits).astype(str)) == {"fold2"}
    assert cache.meta.closure["oracle"] is True
    assert_same_cache(cache, env["cache"].__class__(**{
        **{f.name: getattr(env["cache"], f.name) for f in dataclasses.fields(env["cache"])},
        "splits": cache.splits}))
    assert validate_cache(tmp_path / "c") == [] and cache_info(tmp_path / "c")["splits"] == {
        "fold2": N_SC}
    # --no-oracle on the same folder; an explicit split wins over the metadata
    rep = build_cache(env["system"], data, tmp_path / "e", oracle=False, split="evalset", **KW)
    assert rep.oracle is None and load_cache(tmp_path / "e").meta.closure["oracle"] is False
    # csv metadata with a fold column, given the soundscape/ folder directly
    (data / "metadata.parquet").unlink()
    write_metadata(data, "f3", fmt="csv", column="fold")
    rep = build_cache(env["system"], data / "soundscape", tmp_path / "f", **KW)
    assert rep.split == "f3" and rep.oracle is None  # --oracle not given: none
    # a folder whose metadata mixes tags must be split first
    import pandas as pd
    df = pd.read_csv(data / "metadata.csv")
    df.loc[df["soundscape"] == "soundscape_0001", "fold"] = "f4"
    df.to_csv(data / "metadata.csv", index=False)
    with pytest.raises(FolderLayoutError, match=r"metadata\.csv: the soundscapes of .* have 2 "
                       r"split tags \['f3', 'f4'\]"):
        build_cache(env["system"], data, tmp_path / "g", **KW)


# ----------------------------------------------------------------------------- errors


def test_folder_with_another_cache_is_refused(env):
    with pytest.raises(CacheError, match=r"already holds a different cache \(closure\."
                       r"proposal_top_n: 1 \(on disk\) vs 2 \(this build\)"):
        build_cache(env["system"], env["sdir"], env["ref"], oracle=env["odir"], top_n=2, **KW)


def test_other_chunk_size_on_resume_is_refused(env):
    with pytest.raises(CacheError, match="started with chunk_size 2; resume with --chunk-size 2"):
        build_cache(env["system"], env["sdir"], env["ref"], oracle=env["odir"],
                    **{**KW, "chunk_size": 3})


def test_non_empty_folder_without_cache_is_refused(env, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CacheError, match="not empty and holds no cache"):
        build_cache(env["system"], env["sdir"], tmp_path, **KW)


@pytest.mark.parametrize("channels, rate, match", [
    (2, 32000, r"bad\.wav: 2 channels, the system expects 4"),
    (4, 16000, r"bad\.wav: sample rate 16000 Hz, the system expects 32000 Hz"),
    (4, 0, r"bad\.wav: the soundscape holds 0 samples"),
])
def test_bad_soundscape_audio(env, tmp_path, channels, rate, match):
    sdir = tmp_path / "sc"
    shutil.copytree(env["sdir"], sdir)
    sf.write(sdir / "bad.wav", np.zeros((rate, channels), np.float32), rate or 32000,
             subtype="FLOAT")
    with pytest.raises(AudioFileError, match=match):
        build_cache(env["system"], sdir, tmp_path / "out", **KW)
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_a_build_that_fails_before_any_part_leaves_no_empty_cache(env, tmp_path):
    """A NaN found while reading a soundscape failed the build after its folder, metadata and
    progress files were made; that empty cache then refused the corrected build of another
    system with a 2,000-character list of differing fields."""
    sdir = tmp_path / "sc"
    shutil.copytree(env["sdir"], sdir)
    first = sorted(sdir.glob("*.wav"))[0]
    audio, fs = sf.read(first, dtype="float32")
    audio[100, 0] = np.nan
    sf.write(first, audio, fs, subtype="FLOAT")
    with pytest.raises(AudioFileError, match=rf"{first.name}: channel 0 holds nan"):
        build_cache(env["system"], sdir, tmp_path / "out", **KW)
    assert not (tmp_path / "out").exists()
    from cache_builder.build import _nothing_but
    out = tmp_path / "shared"  # what the cleanup may remove: nothing another run depends on
    ours = out / "_build" / "dev.shard-000of002.json"
    ours.parent.mkdir(parents=True)
    ours.write_text("{}")
    assert _nothing_but(out, ours)
    for other in ("_build/dev.shard-001of002.json", "_build/journal/dev-000/b0.npz",
                  "tagger/part-dev-001of002-00000.parquet"):
        (out / other).parent.mkdir(parents=True, exist_ok=True)
        (out / other).write_text("x")
        assert not _nothing_but(out, ours), other  # another shard, resumable work, a part
        (out / other).unlink()
    from cache_builder._cachewrite import _diff
    sep = {"name": "large", "module": "m" * 300, "sha256": "e" * 64}
    lines = _diff({"extra": {"models": {"large": sep, "small": sep}}},
                  {"extra": {"models": {"large": {**sep, "sha256": "f" * 64}}}})
    assert len(lines) == 2 and lines[0].startswith("extra.models.large.sha256: 'eeee")
    assert lines[1].startswith("extra.models.small: {'name': 'large'")  # a model dropped
    assert all(len(line) < 140 for line in lines)  # a model's whole dict was printed


@pytest.mark.parametrize("cls, match", [
    ("NaNSeparator", r"separator 'small' on soundscape_0000.*NaN/Inf"),
    ("WrongShapeSeparator", r"separator 'small' on soundscape_0000.*expected \(4, 3, 1, 32000\)"),
])
def test_bad_separator_output(env, tmp_path, cls, match):
    data = yaml.safe_load(env["yaml"].read_text())
    data["separators"]["small"]["class"] = cls
    y = env["yaml"].parent / f"bad_{cls}.yaml"
    y.write_text(yaml.safe_dump(data))
    with pytest.raises(ModelOutputError, match=match):
        build_cache(y, env["sdir"], tmp_path / "out", oracle=env["odir"], **KW)


def test_two_splits_in_one_cache(env, tmp_path):
    out = tmp_path / "multi"
    shutil.copytree(env["ref"], out)
    sdir, odir = write_soundscapes(tmp_path / "test", n=2, seconds=1.0, seed=4, prefix="t")
    build_cache(env["system"], sdir, out, oracle=odir, split="test", **KW)
    assert validate_cache(out) == []
    assert cache_info(out)["splits"] == {"dev": N_SC, "test": 2}
    with pytest.raises(CacheError, match=r"already in split 'dev' of this cache"):
        build_cache(env["system"], env["sdir"], out, oracle=env["odir"], split="again", **KW)
    with pytest.raises(CacheError, match=r"split 'test' was built from another soundscape"):
        build_cache(env["system"], env["sdir"], out, oracle=env["odir"], split="test", **KW)
    with pytest.raises(CacheError, match=r"split name 'a/b'"):
        build_cache(env["system"], sdir, out, split="a/b", **KW)


def test_eval_set_without_oracle(env, tmp_path):
    out = tmp_path / "eval"
    rep = build_cache(env["system"], env["sdir"], out, **{**KW, "chunk_size": 6})
    cache = load_cache(out)
    assert cache.meta.closure["oracle"] is False and (cache.n_ref == 0).all()
    assert len(cache.stem_snr_db) == 0 and validate_cache(out) == []
    assert rep.n_queries <= len(env["cache"].key_codes)


def test_amp_is_explicit_and_recorded(env, tmp_path):
    sdir, odir = write_soundscapes(tmp_path / "d", n=2, seconds=0.5, seed=9)
    kw = {**KW, "chunk_size": 2}
    build_cache(env["yaml"], sdir, tmp_path / "fp32", oracle=odir, **kw)
    build_cache(env["yaml"], sdir, tmp_path / "amp", oracle=odir, amp=True, **kw)
    a, b = load_cache(tmp_path / "fp32"), load_cache(tmp_path / "amp")
    assert a.meta.extra["amp"] is False and b.meta.extra["amp"] is True
    assert a.meta.cache_id != b.meta.cache_id
    with pytest.raises(CacheError, match=r"extra\.amp: True \(on disk\) vs False"):
        build_cache(env["yaml"], sdir, tmp_path / "amp", oracle=odir, **kw)


def test_batch_journal_round_trip_and_mismatch(tmp_path):
    from cache_builder._journal import BatchJournal
    from cache_builder.runner import StemInfo
    rng = np.random.default_rng(0)
    queries = [(1, 4), (7,)]
    names = ["a", "b"]

    def info(n, n_ref):
        return StemInfo(tuple(range(n)), rng.normal(size=n), rng.random((n, 3, 19), np.float32),
                        None if n_ref is None else rng.normal(size=(n, n_ref)))
    infos = [[info(2, 3), info(2, 3)], [info(1, None), info(1, None)]]  # 2 stages
    j = BatchJournal(tmp_path / "journal" / "part-x")
    assert j.load(0, 0, names, queries) is None  # nothing journaled yet
    j.save(0, 0, names, queries, infos)
    back = j.load(0, 0, names, queries)
    for item, item_back in zip(infos, back):
        for a, b in zip(item, item_back):
            np.testing.assert_array_equal(a.energy_db, b.energy_db)
            np.testing.assert_array_equal(a.retag, b.retag)
            if a.snr_db is None:
                assert b.snr_db is None
            else:
                np.testing.assert_array_equal(a.snr_db, b.snr_db)
    assert j.load(0, 0, ["a", "c"], queries) is None      # other soundscapes
    assert j.load(0, 0, names, [(1, 5), (7,)]) is None    # other queries
    assert j.load(1, 0, names, queries) is None           # other separator
    assert not list(j.folder.glob(".*tmp"))
    j.clear()
    assert not j.folder.exists()


# ----------------------------------------------------------------------------- issue 13


def _built_one_chunk(env, out, **kw):
    """``out`` with the first chunk built and the rest left to a resume."""
    import cache_builder.build as b
    real = b.BatchJournal.clear

    def killed(self):
        raise _Killed
    b.BatchJournal.clear = killed
    try:
        with pytest.raises(_Killed):
            build_cache(env["yaml"], env["sdir"], out, oracle=env["odir"], **{**KW, **kw})
    finally:
        b.BatchJournal.clear = real


@pytest.mark.parametrize("change, match", [
    ({"batch_size": 3}, r"started with --batch-size 4 and is resumed with --batch-size 3; "
                        r"these change the separator outputs"),
    ({"threads": 2}, r"started with --threads 1 and is resumed with --threads 2"),
    ({"tag_batch_size": 2}, r"--tag-batch-size 1 and is resumed with --tag-batch-size 2"),
])
def test_resume_with_other_run_settings_is_refused(env, tmp_path, change, match):
    out = tmp_path / "cache"
    _built_one_chunk(env, out)
    settings = json.loads((out / "_build" / "dev.shard-000of001.json").read_text())["settings"]
    assert settings == {"device": "cpu", "threads": 1, "batch_size": 4, "tag_batch_size": 1}
    try:
        with pytest.raises(CacheError, match=match):
            build_cache(env["yaml"], env["sdir"], out, oracle=env["odir"], **{**KW, **change})
    finally:
        torch.set_num_threads(1)


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]"])
def test_corrupt_manifest_names_the_file_and_the_remedy(env, tmp_path, content):
    out = tmp_path / "cache"
    _built_one_chunk(env, out)
    manifest = out / "_build" / "dev.shard-000of001.json"
    manifest.write_bytes(content)
    with pytest.raises(CacheError, match=r"dev.shard-000of001.json: unreadable build manifest "
                       r".*delete it and rerun the same command"):
        build_cache(env["yaml"], env["sdir"], out, oracle=env["odir"], **KW)
    manifest.unlink()  # the remedy works
    report = build_cache(env["yaml"], env["sdir"], out, oracle=env["odir"], **KW)
    assert report.n_built == N_SC and validate_cache(out) == []


@pytest.mark.parametrize("content", [b"PK\x03\x04 truncated", b"", b"garbage"])
def test_corrupt_journal_entry_is_recomputed_with_a_warning(tmp_path, content):
    from cache_builder._journal import BatchJournal
    j = BatchJournal(tmp_path / "j")
    j.folder.mkdir()
    bad = j.folder / "0-00000.npz"
    bad.write_bytes(content)
    with pytest.warns(RuntimeWarning, match=r"0-00000.npz: unreadable batch journal entry.*"
                      r"separated again"):
        assert j.load(0, 0, ["a"], [(1,)]) is None
    assert not bad.exists()


def test_disk_full_is_named(env, tmp_path, monkeypatch):
    import errno as _errno

    import cache_builder._cachewrite as cw

    def full(*a, **k):
        raise OSError(_errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(cw, "write_chunk", full)
    with pytest.raises(CacheError, match=r"cache: no space left on the device while writing "
                       r"part 'dev-000of001-00000'; free space .*rerun the same command"):
        build_cache(env["system"], env["sdir"], tmp_path / "cache", oracle=env["odir"], **KW)


@pytest.mark.parametrize("device, match", [
    ("banana", r"--device 'banana': not a torch device; use cpu, cuda, cuda:N or mps"),
    ("cuda:N", r"--device 'cuda:\d+': this machine has (no CUDA device|\d+ CUDA device)"),
])
def test_bad_device_is_a_clear_error(device, match):
    from cache_builder.system import SystemConfigError, pick_device
    if device == "cuda:N":  # one past the last device: missing on every machine
        device = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(SystemConfigError, match=match):
        pick_device(device)


def test_default_batch_size_from_the_device():
    from cache_builder.system import CPU_BATCH_SIZE, default_batch_size
    assert default_batch_size("cpu") == CPU_BATCH_SIZE == 48


def test_missing_separations_part_is_an_interrupted_write_not_a_closure_problem(env, tmp_path):
    out = tmp_path / "cache"
    shutil.copytree(env["ref"], out)
    (out / "separations" / "part-dev-000of001-00001.parquet").unlink()
    problems = validate_cache(out)
    assert problems == ["part part-dev-000of001-00001.parquet has no separations file (an "
                        "interrupted write): delete its files and rerun the build"]


@pytest.mark.parametrize("side, name, match", [
    ("soundscapes", "soundscape_0009.WAV", r"'soundscape_0009.WAV' \(rename it to end in "
                                            r"lower-case '.wav'"),
    ("oracle", "soundscape_0000_9_Speech.WAV", r"'soundscape_0000_9_Speech.WAV' \(rename"),
])
def test_build_refuses_what_it_would_skip(env, tmp_path, side, name, match):
    folders = {"soundscapes": tmp_path / "sc", "oracle": tmp_path / "orc"}
    shutil.copytree(env["sdir"], folders["soundscapes"])
    shutil.copytree(env["odir"], folders["oracle"])
    (folders[side] / name).write_bytes(b"")
    with pytest.raises(FolderLayoutError, match=match):
        build_cache(env["system"], folders["soundscapes"], tmp_path / "out",
                    oracle=folders["oracle"], **KW)


def test_no_test_hook_in_the_build_loop():
    src = (ROOT / "cache_builder" / "build.py").read_text()
    assert "os._exit" not in src and "environ" not in src
