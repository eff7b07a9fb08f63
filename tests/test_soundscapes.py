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

from casdri._cli import EXIT_USAGE, EXIT_USER  # noqa: E402
from casdri.errors import AudioFileError, InputError  # noqa: E402
from casdri.labels import DCASE2026T4  # noqa: E402
from casdri.metric import snr_db  # noqa: E402
from cache_builder.soundscapes import pool as _pool, rooms as _rooms  # noqa: E402
from cache_builder.soundscapes import (  # noqa: E402
    METADATA_COLUMNS, SoundscapeConfig, generate_soundscapes, read_provenance,
    render_soundscape, sample_soundscape, soundscape_seeds)
from cache_builder.soundscapes.render import oracle_rir  # noqa: E402
from cache_builder.soundscapes.scene import room_bank  # noqa: E402

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


def test_v1_oracle_is_direct_path_with_propagation_delay(tmp_path, pool):
    from scipy import signal
    table = generate_soundscapes(POOL, tmp_path, {"dev": 4}, seed=7, duration_s=DURATION_S,
                                 config=SoundscapeConfig.casdri_v1(), progress=False)
    targets = table[table["role"] == "target"].head(6)
    assert len(targets) >= 3
    for r in targets.itertuples():
        oracle = _read(tmp_path / r.split / "oracle_target" / r.oracle_file)[0]
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


def test_oracle_rir_cuts_around_the_absolute_peak():
    h = np.linspace(0.1, 0.2, 5000)
    h[1000] = -3.0  # the largest absolute sample is negative
    cut = oracle_rir(h, (6.0, 50.0), FS)
    kept = np.flatnonzero(cut)
    assert (kept[0], kept[-1]) == (1000 - 192, 1000 + 1600)  # int(ms * 32) samples, inclusive
    np.testing.assert_array_equal(cut[kept], h[kept])
    assert oracle_rir(h, (6.0, 50.0), FS)[:100].sum() == 0 and \
        np.flatnonzero(oracle_rir(h[900:], (6.0, 50.0), FS))[0] == 0  # clipped at the start


def test_official_oracle_window_and_snr_rule(pool):
    """Rebuild each target from the recipe: its oracle is the clip convolved with the W RIR
    cut to [peak - 6 ms, peak + 50 ms], with the image's gain, and that gain puts the mean
    4-channel power of the whole convolved event snr_db above the 4-channel background."""
    from scipy import signal
    cfg = SoundscapeConfig()
    n = int(1.5 * FS)
    rooms = room_bank(0, "dev", cfg)
    checked = 0
    for seed in soundscape_seeds(3, "dev", 6):
        spec = sample_soundscape("s", pool.splits["dev"], seed, n, FS, cfg, rooms)
        if not spec.targets:
            continue
        audio = render_soundscape(spec, POOL)
        pos = np.array([_rooms.position_from_direction(spec.room.mic_m, e.azimuth_deg,
                                                       e.elevation_deg, e.distance_m)
                        for e in spec.events])
        rirs = _rooms.simulate_foa_rirs(spec.room, pos, FS,
                                        np.random.default_rng(spec.render_seed),
                                        spec.ism_order, max_taps=n)
        noise_power = np.mean(audio.noise ** 2)
        for e, rir, oracle in zip(spec.targets, rirs, audio.oracles):
            x = _pool.read_clip(POOL, e.clip)[e.source_offset:e.source_offset + e.n_samples]
            unit = np.zeros(n)
            conv = signal.oaconvolve(x, oracle_rir(rir.full[0], (6.0, 50.0), FS))
            m = min(n - e.onset, conv.shape[0])
            unit[e.onset:e.onset + m] = conv[:m]
            c = float(np.dot(oracle, unit) / np.dot(unit, unit))  # event gain x peak limit
            np.testing.assert_allclose(oracle, c * unit, atol=1e-12)
            wet = signal.oaconvolve(x[None, :], rir.full, axes=1)
            snr = 10 * math.log10(np.mean((c * wet) ** 2) / noise_power)
            assert abs(snr - e.snr_db) < 1e-9
            checked += 1
    assert checked >= 3


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


def test_name_prefix_changes_only_the_names(tmp_path):
    """A held-out split generated with ``--name-prefix eval`` can share a cache with dev."""
    def run(name, **kw):
        table = generate_soundscapes(POOL, tmp_path / name, {"test": 2}, seed=5, duration_s=1.0,
                                     progress=False, **kw)
        root = tmp_path / name / "test"
        files = {p.relative_to(root).as_posix(): p.read_bytes()
                 for d in ("soundscape", "oracle_target") for p in (root / d).iterdir()}
        return table, files

    (t_a, f_a), (t_b, f_b) = run("plain"), run("eval", name_prefix="eval")
    assert sorted(f_b) == sorted(k.replace("soundscape_", "eval_") for k in f_a)
    assert all(f_b[k.replace("soundscape_", "eval_")] == v for k, v in f_a.items())
    for col in ("soundscape", "oracle_file"):
        t_a[col] = t_a[col].str.replace("soundscape_", "eval_")
    pd.testing.assert_frame_equal(t_a, t_b)
    with pytest.raises(InputError, match=r"name prefix 'a_b': use letters, digits and '-'"):
        generate_soundscapes(POOL, tmp_path / "bad", {"test": 1}, name_prefix="a_b",
                             progress=False)
    assert not (tmp_path / "bad").exists()


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


_BANDS_HZ = [(100, 200), (200, 500), (500, 1000), (1000, 2000), (2000, 4000), (4000, 8000),
             (8000, 12000)]


def _band_ratios(az: float, el: float, radius_m: float) -> np.ndarray:
    """Y, Z, X energy over W energy of the direct path, per band: ``(n_bands, 3)``."""
    room = _rooms.RoomSpec((5.0, 4.0, 2.8), 0.4, (2.5, 2.0, 1.5))
    pos = _rooms.position_from_direction(room.mic_m, az, el, 1.5)
    rir = _rooms.simulate_foa_rirs(room, pos[None], FS, np.random.default_rng(0),
                                   capsule_radius_m=radius_m)[0]
    power = np.abs(np.fft.rfft(rir.direct, n=8192, axis=1)) ** 2
    f = np.fft.rfftfreq(8192, 1 / FS)
    return np.array([power[1:, (f >= lo) & (f < hi)].sum(axis=1) /
                     power[0, (f >= lo) & (f < hi)].sum() for lo, hi in _BANDS_HZ])


@pytest.mark.parametrize("az, el", [(0, 0), (90, 0), (-90, 20), (180, -10), (45, 30),
                                    (120, 60)])
def test_plane_wave_foa_energy_relations_0p1_to_12_khz(az, el):
    """SN3D/ACN: a plane wave from (az, el) gives Y²/W² = sin²az cos²el, Z²/W² = sin²el,
    X²/W² = cos²az cos²el in every band from 0.1 to 12 kHz (default coincident array)."""
    a, e = math.radians(az), math.radians(el)
    want = np.array([math.sin(a) * math.cos(e), math.sin(e), math.cos(a) * math.cos(e)]) ** 2
    np.testing.assert_allclose(_band_ratios(az, el, 0.0), np.tile(want, (len(_BANDS_HZ), 1)),
                               atol=0.02)


def test_spaced_v1_array_breaks_foa_energy_above_4_khz():
    """Why the default array is coincident: v1's spaced tetrahedron (14.7 mm) puts several
    times the right energy into X above 4 kHz for a frontal source (X²/W² should be 1)."""
    ratios = _band_ratios(0.0, 0.0, _rooms.TETRA_RADIUS_M)
    assert abs(ratios[0, 2] - 1.0) < 0.05  # near right at low frequencies
    assert ratios[-1, 2] > 2.0 and ratios[-2, 2] > 2.0


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


def _angle(a, b) -> float:
    u, v = _rooms.direction_unit(a.azimuth_deg, a.elevation_deg), \
        _rooms.direction_unit(b.azimuth_deg, b.elevation_deg)
    return math.degrees(math.acos(min(1.0, float(np.dot(u, v)))))


def test_official_counts_duplicates_and_distances(pool):
    cfg = SoundscapeConfig()
    rooms = room_bank(11, "train", cfg)
    specs = [sample_soundscape("s", pool.splits["train"], s, 3 * FS, FS, cfg, rooms)
             for s in soundscape_seeds(11, "train", 400)]
    counts = np.array([len(sp.targets) for sp in specs])
    for k in range(4):  # 0..3 uniform: 25 % each, ± 3.5 binomial standard deviations
        assert 0.174 < np.mean(counts == k) < 0.326, k
    with_dup = 0
    for sp in specs:
        labels = [e.label for e in sp.targets]
        n_dup = len(labels) - len(set(labels))
        assert n_dup <= min(2, max(len(labels) - 1, 0))
        with_dup += n_dup > 0
        for i, a in enumerate(sp.targets):
            for b in sp.targets[i + 1:]:
                if a.label == b.label:
                    assert _angle(a, b) >= 60.0
                    if len(pool.splits["train"].targets[a.label]) > 1:  # else reused
                        assert a.clip.path != b.clip.path
        assert {e.distance_m for e in sp.events} <= {0.75, 1.5}
        assert sp.room_id in {r for r, _ in rooms}
    n_multi = int(np.sum(counts >= 2))
    assert abs(with_dup / n_multi - 0.5) < 3.5 * math.sqrt(0.25 / n_multi)
    assert len({sp.room_id for sp in specs}) == cfg.rooms_per_split


def test_v1_zero_target_fraction_and_azimuth_separation(pool):
    cfg = SoundscapeConfig.casdri_v1()
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


@pytest.mark.parametrize("changes, match", [
    (dict(oracle_window_ms=(-5.0, -10.0)), r"oracle_window_ms must be None or \(before, "
                                           r"after\) in ms, both >= 0"),
    (dict(oracle_window_ms=(6.0,)), r"oracle_window_ms"),
    (dict(snr_rule="peak"), r"snr_rule must be one of \('official', 'w_active'\)"),
    (dict(distance_m=(0.0, 1.5)), r"distance_m must be distances > 0 m"),
    (dict(distance_m=(2.0, 1.0), distance_mode="uniform"), r"a \(low, high\) range"),
    (dict(duplicate_rate=1.5), r"duplicate_rate must be in \[0, 1\] or None"),
    (dict(target_snr_db=(20.0, 5.0)), r"target_snr_db must be a finite \(low, high\)"),
    (dict(rooms_per_split=0), r"rooms_per_split must be an int >= 1 or None"),
    (dict(capsule_radius_m=-0.01), r"capsule_radius_m must be a distance >= 0 m"),
])
def test_bad_config_raises(changes, match):
    with pytest.raises(InputError, match=match):
        SoundscapeConfig(**changes)


def test_cli_refuses_negative_oracle_window(tmp_path):
    cmd = [sys.executable, "-m", "cache_builder.soundscapes.cli", "--sources", str(POOL), "--out",
           str(tmp_path / "o"), "--dev", "1", "--oracle-window-ms", "-5", "-10"]
    bad = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == EXIT_USAGE  # one line, the casdri._cli policy
    assert bad.stderr.splitlines() == [
        "casdri-cache generate: error: argument --oracle-window-ms: expected milliseconds >= 0 "
        "(official: 6 50), got '-5' (see 'casdri-cache generate --help')"]


@pytest.mark.parametrize("flag, value, match", [
    ("--jobs", "0", "argument --jobs: expected an integer >= 1, or -1 for all cores, got '0'"),
    ("--jobs", "-3", "argument --jobs: expected an integer >= 1, or -1 for all cores"),
    ("--sample-rate-hz", "0", "argument --sample-rate-hz: expected an integer >= 1, got 0"),
])
def test_cli_refuses_bad_counts_naming_the_flag(tmp_path, flag, value, match):
    """Were joblib's "n_jobs must be a non-zero int" and a pool error for a rate of 0."""
    cmd = [sys.executable, "-m", "cache_builder.soundscapes.cli", "--sources", str(POOL), "--out",
           str(tmp_path / "o"), "--dev", "1", flag, value]
    bad = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == EXIT_USAGE and len(bad.stderr.splitlines()) == 1
    assert match in bad.stderr and not (tmp_path / "o").exists()


def test_metadata_names_room_and_recordings(generated, pool):
    out, table = generated
    for split in COUNTS:
        prov = read_provenance(out / split / "metadata.parquet")
        assert prov == read_provenance(out / split / "metadata.csv")
        rows = table[table["split"] == split]
        assert sorted(prov) == sorted(rows["soundscape"].unique())
        for name, (room, recordings) in prov.items():
            assert room.startswith(f"{split}-room")
            events = rows[(rows["soundscape"] == name) & (rows["role"] != "noise")]
            assert recordings == sorted(set(events["recording"]))  # not the background's
    rooms = {s: {r for r, _ in read_provenance(out / s / "metadata.parquet").values()}
             for s in COUNTS}
    assert not (rooms["train"] & rooms["dev"] or rooms["dev"] & rooms["test"])


def test_events_fit_and_ranges(generated):
    _, table = generated
    ev = table[table["role"] != "noise"]
    assert (ev["onset_s"] >= 0).all()
    assert (ev["onset_s"] + ev["duration_s"] <= DURATION_S + 1e-9).all()
    tg, it = ev[ev["role"] == "target"], ev[ev["role"] == "interference"]
    assert tg["snr_db"].between(5, 20).all() and it["snr_db"].between(0, 15).all()
    assert table["rt60_s"].between(0.2, 0.8).all()
    assert set(ev["distance_m"]) <= {0.75, 1.5}
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
    with pytest.raises(InputError, match=r"dev: already holds soundscape; rerun with --overwrite"):
        generate_soundscapes(root, tmp_path / "out", {"dev": 1}, duration_s=0.5,
                             progress=False)
    generate_soundscapes(root, tmp_path / "out", {"dev": 1}, duration_s=0.5, progress=False,
                         overwrite=True)
    assert [p.name for p in (tmp_path / "out" / "dev" / "soundscape").iterdir()] == \
        ["soundscape_00000.wav"]


def test_an_interrupted_overwrite_keeps_the_splits_it_had_not_reached(tmp_path, monkeypatch):
    """With --overwrite, Ctrl-C while the first split was being prepared also deleted the
    second split, which the run had not touched yet."""
    import cache_builder.soundscapes.generate as gen
    root = _tiny_pool(tmp_path / "pool")
    out = tmp_path / "out"
    generate_soundscapes(root, out, {"dev": 1, "test": 1}, duration_s=0.5, progress=False)
    kept = sorted(p.relative_to(out) for p in (out / "test").rglob("*"))

    def interrupted(*args):
        raise KeyboardInterrupt  # while the dev rooms are drawn, before test is cleared

    monkeypatch.setattr(gen, "room_bank", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_soundscapes(root, out, {"dev": 1, "test": 1}, duration_s=0.5, progress=False,
                             overwrite=True)
    assert sorted(p.relative_to(out) for p in (out / "test").rglob("*")) == kept
    assert not (out / "dev" / "soundscape").exists()  # the split being replaced is gone


def test_out_that_is_a_file_is_named(tmp_path):
    """It said ``Not a directory (afile/dev/soundscape)``, naming neither --out nor the fix."""
    root = _tiny_pool(tmp_path / "pool")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match=r"--out .*afile: exists and is not a folder; choose "
                                         r"another --out"):
        generate_soundscapes(root, tmp_path / "afile", {"dev": 1}, duration_s=0.5,
                             progress=False)
    assert (tmp_path / "afile").read_text() == "x"


def test_an_interrupted_run_leaves_no_half_split_and_can_be_rerun(tmp_path, monkeypatch):
    """Ctrl-C after 2 of 4 soundscapes left them with no metadata, and a rerun refused the
    folder (it could neither resume nor start again without --overwrite)."""
    import cache_builder.soundscapes.generate as gen
    root = _tiny_pool(tmp_path / "pool")
    out = tmp_path / "out"
    generate_soundscapes(root, out, {"dev": 2}, duration_s=0.5, progress=False)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    real, made = gen._make_one, []

    def interrupted(*args):
        if len(made) == 2:
            raise KeyboardInterrupt
        made.append(args[0].name)
        return real(*args)

    monkeypatch.setattr(gen, "_make_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_soundscapes(root, out, {"test": 4}, duration_s=0.5, progress=False, n_jobs=1)
    assert len(made) == 2  # two soundscapes were written, then removed
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # dev untouched
    monkeypatch.setattr(gen, "_make_one", real)
    table = generate_soundscapes(root, out, {"test": 4}, duration_s=0.5, progress=False)
    assert table["soundscape"].nunique() == 4


def test_cli_subprocess(tmp_path):
    cmd = [sys.executable, "-m", "cache_builder.soundscapes.cli", "--sources", str(POOL), "--out",
           str(tmp_path / "o"), "--test", "2", "--duration-s", "1", "--no-progress"]
    ok = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert re.search(r"/test: 2 soundscapes, \d+ target events", ok.stdout)
    bad = subprocess.run(cmd[:-5] + ["--no-progress"], cwd=REPO, capture_output=True,
                         text=True)
    assert bad.returncode == EXIT_USER
    assert bad.stderr.splitlines() == [
        "casdri-cache generate: error: nothing to generate: give at least one of --train N, "
        "--dev N, --test N"]


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


@pytest.mark.parametrize("rules, n_targets, median_snr_db, floor_db, gain_db, mask_db, zero", [
    # official rules: the DCASE 2026 regime (official synthesizer: -3 to -5 dB, floor 2-4 dB);
    # an ideal mask on W reaches +10 dB above silence
    ("official", 21, -3.0141, 2.6404, 5.4887, 12.7127, 2),
    # casdri v1: direct-path oracle, W active-span SNR (a floor far above the challenge's, and
    # an ideal mask only +2.3 dB above it: a separator can hardly show)
    ("v1", 20, -9.5491, 8.6421, 9.6459, 10.9739, 1),
])
def test_pinned_mixture_snr_and_floors(tmp_path, rules, n_targets, median_snr_db, floor_db,
                                       gain_db, mask_db, zero):
    """Median SNR(mixture W, oracle target), the all-silent and the scaled-mixture oracle-label
    CAPI-SDRi floors, the ideal-ratio-mask ceiling and the all-silence tagger of a seeded set
    (12 dev soundscapes of 4 s from tests/data/bed_subset), by casdri's metric."""
    from cache_builder.soundscapes.stats import split_difficulty
    cfg = SoundscapeConfig() if rules == "official" else SoundscapeConfig.casdri_v1()
    generate_soundscapes(POOL, tmp_path, {"dev": 12}, seed=0, duration_s=4.0, config=cfg,
                         progress=False)
    got = split_difficulty(tmp_path / "dev")
    assert (got.n_soundscapes, got.n_targets) == (12, n_targets)
    assert got.median_snr_mix_db == pytest.approx(median_snr_db, abs=0.01)
    assert got.silent_floor_db == pytest.approx(floor_db, abs=0.01)
    assert got.gain_floor_db == pytest.approx(gain_db, abs=0.01)
    assert got.ideal_mask_db == pytest.approx(mask_db, abs=0.01)
    assert got.silence_tagger_pct == pytest.approx(100 * zero / 12)
    # a least-squares gain never scores below silence (SNR >= 0 dB per pair)
    assert got.silent_floor_db <= got.gain_floor_db < got.ideal_mask_db


def test_ideal_ratio_mask_stems_reconstruct_and_separate():
    """All-pass mask gives the mixture back; disjoint-band sources come apart (> 20 dB)."""
    from cache_builder.soundscapes.stats import ideal_ratio_mask_stems
    t = np.arange(2 * FS) / FS
    low = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    high = (0.5 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32)
    mix = low + high
    same = ideal_ratio_mask_stems(mix, np.stack([mix, np.zeros_like(mix)]))
    np.testing.assert_allclose(same[0], mix, atol=1e-5)
    assert np.max(np.abs(same[1])) == 0.0
    apart = ideal_ratio_mask_stems(mix, np.stack([low, high]))
    assert apart.shape == (2, mix.size) and apart.dtype == np.float32
    assert np.all(np.diag(snr_db(apart, np.stack([low, high]))) > 20.0)


def test_read_provenance_optional(tmp_path):
    pd.DataFrame({"soundscape": ["s"], "split": ["dev"]}).to_csv(tmp_path / "m.csv",
                                                                 index=False)
    assert read_provenance(None, required=False) is None
    assert read_provenance(tmp_path / "m.csv", required=False) is None
    with pytest.raises(InputError, match=r"m\.csv: needs columns \['recording', 'role', 'room', "
                                         r"'soundscape'\]"):
        read_provenance(tmp_path / "m.csv")


def test_make_pool_prepares_clips_like_the_pool():
    from cache_builder.soundscapes.make_pool import prepare_clip
    fs = 44100
    t = np.arange(int(0.5 * fs)) / fs
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([np.r_[np.zeros(fs), tone, np.zeros(fs)]] * 2, axis=1)
    clip = prepare_clip(stereo, fs)
    assert clip.ndim == 1 and abs(clip.shape[0] - (0.5 + 0.02) * FS) < 0.01 * FS  # trimmed
    assert np.max(np.abs(clip)) == pytest.approx(10 ** (-1 / 20))
    assert clip[0] == 0.0 and clip[-1] == 0.0  # faded ends
    assert prepare_clip(np.zeros(fs), fs) is None  # silent
    assert prepare_clip(tone[: fs // 20], fs) is None  # 50 ms: too short
    assert prepare_clip(np.tile(tone, 30), fs).shape[0] == 10 * FS  # cut to 10 s


def test_make_pool_rules_name_real_classes():
    from cache_builder.soundscapes.make_pool import RULES
    for rule in RULES:
        assert rule.category in ("sound_event", "interference", "noise"), rule
        assert rule.label in DCASE2026T4.classes if rule.category == "sound_event" else \
            rule.label == rule.category, rule
        assert rule.confidence in ("high", "medium", "low") and rule.license, rule
        re.compile(rule.pattern)
