"""The DCASE-format soundscape generator (cache_builder.soundscapes and its helpers).

Real files are written to tmp folders and read back with soundfile. The pool is the licensed
subset ``tests/data/bed_subset`` (10 classes x 3 recordings, 6 interference, 5 noise).
"""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import pyroomacoustics  # noqa: E402,F401  (the builder extra; a missing install must fail, not skip)

from casdri.errors import AudioFileError, InputError  # noqa: E402
from casdri.labels import DCASE2026T4  # noqa: E402
from cache_builder.soundscapes import pool as _pool, rooms as _rooms  # noqa: E402
from cache_builder.soundscapes import (  # noqa: E402
    METADATA_COLUMNS, SoundscapeConfig, generate_soundscapes, sample_soundscape,
    soundscape_seeds)

POOL = Path(__file__).parent / "data" / "bed_subset"
REPO = Path(__file__).resolve().parent.parent
FS = 32000
DURATION_S = 2.0
COUNTS = {"train": 8, "dev": 4, "test": 4}
STEM_NAME = re.compile(r"^(soundscape_\d{5})_(\d+)_([A-Za-z]+)\.wav$")
#: float32 files of peak <= 1: mixture vs. the sum of its float32 stems
TOL_SUM = 1e-6


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    table = generate_soundscapes(POOL, out, COUNTS, seed=7, duration_s=DURATION_S,
                                 write_stems=True, progress=False)
    return out, table


@pytest.fixture(scope="module")
def pool():
    return _pool.load_pool(POOL, DCASE2026T4, FS)


def _read(path: Path) -> np.ndarray:
    data, fs = sf.read(path, dtype="float64", always_2d=True)
    assert fs == FS
    return data.T


def test_layout_formats_and_names(generated):
    out, table = generated
    n = int(DURATION_S * FS)
    assert tuple(table.columns) == METADATA_COLUMNS
    for split, count in COUNTS.items():
        rows = table[table["split"] == split]
        names = sorted(rows["soundscape"].unique())
        assert names == [f"soundscape_{i:05d}" for i in range(count)]
        for name in names:
            info = sf.info(out / split / "soundscape" / f"{name}.wav")
            assert (info.channels, info.samplerate, info.frames, info.subtype) == \
                (4, FS, n, "FLOAT")
        oracle_files = sorted(p.name for p in (out / split / "oracle_target").iterdir())
        assert oracle_files == sorted(rows.loc[rows["role"] == "target", "oracle_file"])
        for fname in oracle_files:
            m = STEM_NAME.match(fname)
            assert m and m.group(3) in DCASE2026T4.classes, fname
            info = sf.info(out / split / "oracle_target" / fname)
            assert (info.channels, info.samplerate, info.frames, info.subtype) == \
                (1, FS, n, "FLOAT")
        for name, g in rows.groupby("soundscape"):
            targets = g[g["role"] == "target"]
            assert list(targets["event"]) == list(range(len(targets)))  # targets first
            if targets.empty:
                assert not list((out / split / "oracle_target").glob(f"{name}_*"))
        saved = pd.read_parquet(out / split / "metadata.parquet")
        pd.testing.assert_frame_equal(saved, rows.reset_index(drop=True))
        assert (out / split / "metadata.csv").is_file()


def test_mixture_is_sum_of_components_and_holds_oracles(generated):
    out, table = generated
    for (split, name), g in table.groupby(["split", "soundscape"]):
        mix = _read(out / split / "soundscape" / f"{name}.wav")
        stems = [_read(out / split / "stems" / f"{name}_{r.event}_{r.label}.wav")
                 for r in g.itertuples()]
        assert np.max(np.abs(mix - sum(stems))) < TOL_SUM
        oracles = [_read(out / split / "oracle_target" / f)[0] for f in g["oracle_file"] if f]
        for r, oracle in zip(g[g["role"] == "target"].itertuples(), oracles):
            rest = stems[r.event][0] - oracle  # reverberant part of the event's W image
            assert 0 < np.sum(oracle ** 2) and 0 < np.sum(rest ** 2)
        if oracles:
            ref = sum(oracles)
            snr = 10 * math.log10(np.sum(ref ** 2) / np.sum((mix[0] - ref) ** 2))
            assert -45.0 < snr < 30.0


def test_oracle_is_direct_path_with_propagation_delay(generated, pool):
    from scipy import signal
    out, table = generated
    targets = table[table["role"] == "target"].head(6)
    assert len(targets) >= 3
    for r in targets.itertuples():
        oracle = _read(out / r.split / "oracle_target" / r.oracle_file)[0]
        clip = _pool.read_clip(POOL, next(c for cs in pool.splits[r.split].targets.values()
                                          for c in cs if c.path == r.source_file))
        start, n_ev = round(r.source_offset_s * FS), round(r.duration_s * FS)
        x = clip[start:start + n_ev]
        onset = round(r.onset_s * FS)
        seg = oracle[onset:onset + n_ev + 400]
        xc = signal.correlate(seg, x, mode="full", method="fft")[n_ev - 1:]  # lags 0..
        lag = int(np.argmax(np.abs(xc)))
        expected = 40 + r.distance_m / _rooms.SPEED_OF_SOUND_M_S * FS  # fractional-delay offset
        assert abs(lag - expected) <= 2.0, (r.oracle_file, lag, expected)
        assert np.all(oracle[:onset] == 0.0)


def test_official_style_oracle_window(tmp_path):
    def run(name, window):
        generate_soundscapes(POOL, tmp_path / name, {"dev": 3}, seed=5, duration_s=1.5,
                             config=SoundscapeConfig(oracle_window_ms=window), progress=False)
        root = tmp_path / name / "dev"
        return ({p.name: p.read_bytes() for p in (root / "soundscape").iterdir()},
                {p.name: _read(p)[0] for p in (root / "oracle_target").iterdir()})

    (mix_a, oracle_a), (mix_b, oracle_b) = run("direct", None), run("window", (6.0, 50.0))
    assert mix_a == mix_b and oracle_a.keys() == oracle_b.keys() and oracle_a
    for name in oracle_a:  # early reflections add energy to the direct path
        assert np.sum(oracle_b[name] ** 2) > np.sum(oracle_a[name] ** 2)


@pytest.mark.parametrize("az, el", [(0, 0), (90, 0), (-90, 20), (180, -10), (45, 30)])
def test_direct_path_foa_directivity(az, el):
    from scipy import signal
    room = _rooms.RoomSpec((5.0, 4.0, 2.8), 0.4, (2.5, 2.0, 1.5))
    pos = _rooms.position_from_direction(room.mic_m, az, el, 1.5)
    rir = _rooms.simulate_foa_rirs(room, pos[None], FS, np.random.default_rng(0))[0]
    low = signal.sosfilt(signal.butter(4, 500, fs=FS, output="sos"),
                         np.pad(rir.direct, ((0, 0), (0, 4000))), axis=1)
    gains = np.sum(low * low[0], axis=1) / np.sum(low[0] ** 2)  # projection on W
    a, e = math.radians(az), math.radians(el)
    want = [1.0, math.sin(a) * math.cos(e), math.sin(e), math.cos(a) * math.cos(e)]
    np.testing.assert_allclose(gains, want, atol=0.06)


@pytest.mark.parametrize("rt60", [0.2, 0.8])
def test_hybrid_rir_has_nominal_rt60(rt60):
    import pyroomacoustics as pra
    room = _rooms.RoomSpec((6.0, 5.0, 3.0), rt60, (3.0, 2.5, 1.5))
    pos = _rooms.position_from_direction(room.mic_m, 30.0, 10.0, 2.0)
    rir = _rooms.simulate_foa_rirs(room, pos[None], FS, np.random.default_rng(1))[0]
    assert rir.full.shape[0] == 4
    assert abs(pra.experimental.measure_rt60(rir.full[0], FS) - rt60) < 0.1 * rt60


def test_same_seed_same_bytes_any_jobs_other_seed_differs(tmp_path):
    def run(name, seed, jobs):
        generate_soundscapes(POOL, tmp_path / name, {"dev": 3}, seed=seed, duration_s=1.0,
                             n_jobs=jobs, progress=False)
        root = tmp_path / name / "dev"
        return {p.relative_to(root).as_posix(): p.read_bytes()
                for p in sorted(root.rglob("*")) if p.suffix in (".wav", ".csv")}

    a, b, c = run("a", 3, 1), run("b", 3, 2), run("c", 4, 1)
    assert a == b
    assert a.keys() != c.keys() or any(a[k] != c[k] for k in a)


def test_soundscape_does_not_depend_on_count():
    assert soundscape_seeds(0, "dev", 5)[:3] == soundscape_seeds(0, "dev", 3)
    assert soundscape_seeds(0, "dev", 3) != soundscape_seeds(0, "test", 3)


def test_splits_share_no_recording(generated, pool):
    _, table = generated
    used = {s: set(table.loc[table["split"] == s, "source_file"]) for s in COUNTS}
    assert not (used["train"] & used["dev"] or used["train"] & used["test"]
                or used["dev"] & used["test"])
    parts = [pool.recordings(s) for s in _pool.SPLITS]
    assert sum(map(len, parts)) == len(set().union(*parts)) == 41
    for s in _pool.SPLITS:  # every class of the subset has a recording in every split
        assert len(pool.splits[s].targets) == 10


def test_clips_of_one_original_recording_stay_together(tmp_path):
    root = _tiny_pool(tmp_path / "p", n_per_class=4)
    rows = [(p.relative_to(root).as_posix(), p.parts[-3] if "sound_event" in p.parts else
             p.parts[-2]) for p in sorted(root.rglob("*.flac"))]
    table = pd.DataFrame({"path": [p for p, _ in rows],
                          "category": [p.split("/")[0] for p, _ in rows],
                          "original_file": ["orig_a;orig_b" if p.endswith("Cough/c0.flac")
                                            else "orig_b" if p.endswith("Cough/c1.flac")
                                            else "orig_c;orig_a" if p.endswith("Cough/c2.flac")
                                            else p for p, _ in rows]})
    table.to_csv(root / "manifest.csv", index=False)
    loaded = _pool.load_pool(root, DCASE2026T4, FS)
    where = {c.path: s for s in _pool.SPLITS for cs in loaded.splits[s].targets.values()
             for c in cs}
    assert len({where[f"sound_event/Cough/c{i}.flac"] for i in range(3)}) == 1


def test_zero_target_fraction_and_duplicate_separation(pool):
    cfg = SoundscapeConfig()
    specs = [sample_soundscape("s", pool.splits["train"], s, 3 * FS, FS, cfg)
             for s in soundscape_seeds(11, "train", 400)]
    zero = np.mean([not sp.targets for sp in specs])
    assert 0.13 < zero < 0.27  # 20 % ± 3.5 binomial standard deviations (n = 400)
    assert {len(sp.targets) for sp in specs} == {0, 1, 2, 3}
    n_pairs = 0
    for sp in specs:
        for i, a in enumerate(sp.targets):
            for b in sp.targets[i + 1:]:
                if a.label == b.label:
                    n_pairs += 1
                    gap = abs((a.azimuth_deg - b.azimuth_deg + 180.0) % 360.0 - 180.0)
                    assert gap >= 60.0
    assert n_pairs >= 10  # the constraint was exercised


def test_events_fit_and_ranges(generated):
    _, table = generated
    ev = table[table["role"] != "noise"]
    assert (ev["onset_s"] >= 0).all()
    assert (ev["onset_s"] + ev["duration_s"] <= DURATION_S + 1e-9).all()
    tg, it = ev[ev["role"] == "target"], ev[ev["role"] == "interference"]
    assert tg["snr_db"].between(5, 20).all() and it["snr_db"].between(0, 15).all()
    assert table["rt60_s"].between(0.2, 0.8).all()
    assert ev["distance_m"].between(0.75, 2.5).all()
    assert (table.groupby(["split", "soundscape"])["role"].apply(
        lambda r: (r == "interference").sum()) <= 2).all()
    assert (table.groupby(["split", "soundscape"])["role"].apply(
        lambda r: (r == "noise").sum()) == 1).all()


# ------------------------------------------------------------------------------ errors


def _tone(n: int, fs: int = FS, channels: int = 1) -> np.ndarray:
    x = 0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / fs)
    return x if channels == 1 else np.stack([x] * channels, axis=1)


def _tiny_pool(root: Path, n_per_class: int = 3) -> Path:
    for cls in ("Cough", "Speech"):
        (root / "sound_event" / cls).mkdir(parents=True)
        for i in range(n_per_class):
            sf.write(root / "sound_event" / cls / f"c{i}.flac", _tone(FS // 2), FS)
    for cat in ("interference", "noise"):
        (root / cat).mkdir(parents=True)
        for i in range(3):
            sf.write(root / cat / f"{cat}{i}.flac", _tone(FS // 2), FS)
    return root


def _no_noise(root):
    shutil.rmtree(root / "noise")


def _unknown_class(root):
    (root / "sound_event" / "Kazoo").mkdir()
    sf.write(root / "sound_event" / "Kazoo" / "k.flac", _tone(FS), FS)


def _empty_class(root):
    (root / "sound_event" / "Dishes").mkdir()


def _wrong_rate(root):
    sf.write(root / "sound_event" / "Cough" / "c1.flac", _tone(16000, 16000), 16000)


def _stereo(root):
    sf.write(root / "noise" / "noise0.flac", _tone(FS, channels=2), FS)


def _bad_manifest(root):
    pd.DataFrame({"path": ["sound_event/c0.flac"], "category": ["sound_event"]}).to_csv(
        root / "manifest.csv", index=False)


def _class_mismatch(root):
    pd.DataFrame({"path": ["sound_event/Cough/c0.flac"], "category": ["sound_event"],
                  "class": ["Speech"]}).to_csv(root / "manifest.csv", index=False)


@pytest.mark.parametrize("breaker, error, match", [
    (_no_noise, InputError, r"missing folder\(s\) noise/"),
    (_unknown_class, InputError, r"Kazoo'? is not a class of label set 'dcase2026t4'"),
    (_empty_class, InputError, r"Dishes: class folder holds no \.flac/\.wav clip"),
    (_wrong_rate, AudioFileError, r"c1\.flac: sample rate 16000 Hz, expected 32000 Hz"),
    (_stereo, AudioFileError, r"noise0\.flac: 2 channels, expected a mono clip"),
    (_bad_manifest, InputError, r"manifest\.csv: row 'sound_event/c0\.flac'"),
    (_class_mismatch, InputError, r"says class 'Speech' but lies in sound_event/Cough/"),
])
def test_bad_pool_raises(tmp_path, breaker, error, match):
    root = _tiny_pool(tmp_path / "pool")
    breaker(root)
    with pytest.raises(error, match=match):
        generate_soundscapes(root, tmp_path / "out", {"dev": 1}, duration_s=1.0,
                             progress=False)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_soundscapes={"val": 2}), r"unknown split\(s\) \['val'\]"),
    (dict(n_soundscapes=-1), r"n_soundscapes must be an int >= 0"),
    (dict(n_soundscapes=1, seed=-3), r"seed must be an int >= 0, got -3"),
    (dict(n_soundscapes=1, n_jobs=0), r"n_jobs must be a non-zero int"),
    (dict(n_soundscapes=1, sources_dir="/nonexistent/pool"), r"is not a folder"),
])
def test_bad_arguments_raise(tmp_path, kwargs, match):
    kwargs.setdefault("sources_dir", _tiny_pool(tmp_path / "pool"))
    with pytest.raises(InputError, match=match):
        generate_soundscapes(out_dir=tmp_path / "out", duration_s=1.0, progress=False,
                             **kwargs)


def test_existing_output_needs_overwrite(tmp_path):
    root = _tiny_pool(tmp_path / "pool")
    generate_soundscapes(root, tmp_path / "out", {"dev": 2}, duration_s=0.5, progress=False)
    with pytest.raises(InputError, match=r"dev: already holds soundscape; pass overwrite"):
        generate_soundscapes(root, tmp_path / "out", {"dev": 1}, duration_s=0.5,
                             progress=False)
    generate_soundscapes(root, tmp_path / "out", {"dev": 1}, duration_s=0.5, progress=False,
                         overwrite=True)
    assert [p.name for p in (tmp_path / "out" / "dev" / "soundscape").iterdir()] == \
        ["soundscape_00000.wav"]


def test_cli_subprocess(tmp_path):
    cmd = [sys.executable, "-m", "cache_builder.gen_cli", "--sources", str(POOL), "--out",
           str(tmp_path / "o"), "--test", "2", "--duration-s", "1", "--no-progress"]
    ok = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert re.search(r"/test: 2 soundscapes, \d+ target events", ok.stdout)
    bad = subprocess.run(cmd[:-5] + ["--no-progress"], cwd=REPO, capture_output=True,
                         text=True)
    assert bad.returncode == 1
    assert "nothing to generate" in bad.stderr


def test_bundled_example_matches_its_script(tmp_path):
    from cache_builder.make_example import OUT, make_example
    summary = make_example(tmp_path / "ex")
    assert summary["size_mb"] < 4.0
    bundled = sorted(p.relative_to(OUT) for p in OUT.rglob("*") if p.is_file())
    assert bundled == sorted(p.relative_to(tmp_path / "ex")
                             for p in (tmp_path / "ex").rglob("*") if p.is_file())
    for rel in bundled:
        if rel.suffix == ".wav":
            a, b = sf.read(OUT / rel, dtype="int16")[0], sf.read(tmp_path / "ex" / rel,
                                                                dtype="int16")[0]
            assert np.max(np.abs(a.astype(int) - b)) <= 1, rel  # 1 LSB: FFT rounding
            assert sf.info(OUT / rel).subtype == "PCM_16"
