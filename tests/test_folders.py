"""DCASE folder reading: exact name matching, stem order, and a table of bad inputs (real files)."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

import casdri
from casdri.errors import AudioFileError, FolderLayoutError, LabelError
from casdri.folders import (check_header, parse_stem_name, read_audio, read_soundscape,
                            scan_folders, scan_targets)
from casdri.scoring import score_folders

from .conftest import TOL_REPLAY_DB

SR = 32000
T = 800


def _write(path, data, sr=SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr, subtype="FLOAT")


def make_folder(root, spec, seed=0, t=T):
    """Write a DCASE folder set: ``spec[name] = (ref_labels, est_labels)``, indexed naming.

    Stem i of a label is the reference of the same label plus noise (or noise alone).
    Returns ``(soundscape_dir, oracle_dir, estimate_dir)``.
    """
    rng = np.random.default_rng(seed)
    dirs = root / "soundscape", root / "oracle_target", root / "estimate"
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    for name, (ref_labels, est_labels) in spec.items():
        refs = rng.standard_normal((len(ref_labels), t)).astype(np.float32)
        mix = refs.sum(0) + 0.5 * rng.standard_normal(t).astype(np.float32)
        _write(dirs[0] / f"{name}.wav", np.stack([mix, mix, mix, mix], 1))
        for i, (label, ref) in enumerate(zip(ref_labels, refs)):
            _write(dirs[1] / f"{name}_{i}_{label}.wav", ref)
        for i, label in enumerate(est_labels):
            same = [r for lb, r in zip(ref_labels, refs) if lb == label]
            est = (same[0] if same else 0) + rng.uniform(0.2, 1.0) * rng.standard_normal(t)
            _write(dirs[2] / f"{name}_{i}_{label}.wav", est.astype(np.float32))
    return dirs


def direct_scores(dirs):
    """Every clip through casdri.capi_sdri on the arrays (the metric's own path)."""
    out = {}
    for files in scan_folders(*dirs):
        audio = read_soundscape(files)
        out[files.name] = casdri.capi_sdri(audio.est_labels, audio.est_wavs, audio.ref_labels,
                                           audio.ref_wavs, audio.mixture)
    return out


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("file_name, names, expected", [
    ("s_0_Speech.wav", {"s"}, ("s", 0, "Speech")),
    ("s_Speech.wav", {"s"}, ("s", None, "Speech")),
    ("s_1_0_Cough.wav", {"s_0", "s_1", "s_10"}, ("s_1", 0, "Cough")),
    ("s_10_0_Cough.wav", {"s_0", "s_1", "s_10"}, ("s_10", 0, "Cough")),
    ("s_10_Cough.wav", {"s_0", "s_10"}, ("s_10", None, "Cough")),
    ("s_10_Cough.wav", {"s"}, ("s", 10, "Cough")),
    ("soundscape_0001_12_VacuumCleaner.wav", {"soundscape_0001"},
     ("soundscape_0001", 12, "VacuumCleaner")),
    ("a_b_c_3_Pour.wav", {"a_b_c"}, ("a_b_c", 3, "Pour")),
])
def test_parse_stem_name(file_name, names, expected):
    assert parse_stem_name(file_name, names) == expected


def test_parse_custom_label_with_underscore():
    assert parse_stem_name("s_2_Door_Bell.wav", {"s"}, ["Door_Bell", "Bell"]) == (
        "s", 2, "Door_Bell")


@pytest.mark.parametrize("file_name, names, err, match", [
    ("s_1_0_Cough.wav", {"s_1", "s_1_0"}, FolderLayoutError,
     r"ambiguous.*'s_1_0', index None.*'s_1', index 0"),
    ("s_1_Cough.wav", {"s", "s_1"}, FolderLayoutError, "ambiguous"),
    ("t_0_Cough.wav", {"s"}, FolderLayoutError, "matches no soundscape"),
    ("s_0_Cough.flac", {"s"}, FolderLayoutError, "expected a .wav"),
    ("s_0_Cat.wav", {"s"}, LabelError, "unknown label 'Cat'"),
    ("s_0_silence.wav", {"s"}, LabelError, "empty slot"),
])
def test_parse_stem_name_errors(file_name, names, err, match):
    with pytest.raises(err, match=match):
        parse_stem_name(file_name, names)


def test_prefix_names_get_only_their_own_stems(tmp_path):
    # the official loader gives s_1 the files of s_10 (prefix match); casdri must not
    spec = {"s_0": (["Speech"], ["Speech"]), "s_1": (["Cough"], ["Cough"]),
            "s_10": (["Dishes", "Pour"], ["Dishes", "Pour", "Typing"])}
    dirs = make_folder(tmp_path, spec)
    files = {f.name: f for f in scan_folders(*dirs)}
    assert list(files) == ["s_0", "s_1", "s_10"]
    for name, (refs, ests) in spec.items():
        assert files[name].ref_labels == refs and files[name].est_labels == ests
        assert all(s.path.name.startswith(name + "_") for s in files[name].refs)
    r = score_folders(*dirs, jobs=1)
    ps = r.per_soundscape.set_index("soundscape")
    assert ps.loc["s_1", "tp"] == 1 and ps.loc["s_1", "fp"] == 0 and ps.loc["s_1", "fn"] == 0
    assert ps.loc["s_10", "fp"] == 1 and ps.loc["s_10", "tp"] == 2


def test_2025_naming_without_index(tmp_path):
    dirs = make_folder(tmp_path, {"s_0": (["Speech", "Cough"], ["Speech", "Cough"])})
    for f in sorted(dirs[2].iterdir()):  # s_0_0_Speech.wav -> s_0_Speech.wav
        f.rename(f.with_name(f"s_0_{f.stem.rsplit('_', 1)[1]}.wav"))
    assert sorted(p.name for p in dirs[2].iterdir()) == ["s_0_Cough.wav", "s_0_Speech.wav"]
    (files,) = scan_folders(*dirs)
    assert files.est_labels == ["Cough", "Speech"] and [s.index for s in files.ests] == [None] * 2
    got = score_folders(*dirs, jobs=1).per_soundscape["capi_sdri"][0]
    assert got == pytest.approx(direct_scores(dirs)["s_0"], abs=TOL_REPLAY_DB)
    r = score_folders(*dirs, jobs=1, metric="ca2025")
    assert r.per_soundscape["tp"][0] == 2 and np.isfinite(r.capi_sdri)


def test_stems_sorted_by_numeric_index(tmp_path):
    labels = ["Speech"] * 12
    dirs = make_folder(tmp_path, {"s": (["Speech"], labels)})
    (files,) = scan_folders(*dirs)
    assert [s.index for s in files.ests] == list(range(12))  # file-name order: 0, 1, 10, 11, 2


def test_zero_target_and_no_estimates(tmp_path):
    dirs = make_folder(tmp_path, {"a": ([], []), "b": ([], ["Cough"]), "c": (["Pour"], [])})
    (dirs[2] / "notes.txt").write_text("not audio: ignored, as officially")
    r = score_folders(*dirs, jobs=1)
    assert r.per_soundscape["capi_sdri"].isna().tolist() == [True, False, False]
    assert r.per_soundscape["capi_sdri"][1:].tolist() == [0.0, 0.0]
    assert (r.n_soundscapes, r.n_scored, r.capi_sdri) == (3, 2, 0.0)


@pytest.mark.parametrize("side, match", [(1, "zero-target"), (2, "missed")])
def test_empty_stem_folder_warns(tmp_path, side, match):
    dirs = make_folder(tmp_path, {"a": (["Pour"], ["Pour"])})
    for f in dirs[side].iterdir():
        f.unlink()
    with pytest.warns(UserWarning, match=match):
        r = score_folders(*dirs, jobs=1)
    assert r.per_soundscape["capi_sdri"][0] == 0.0


def test_matches_metric_on_arrays_and_parallel_equals_serial(tmp_path):
    spec = {f"clip{i:02d}": (["Speech", "Speech", "Cough"][: 1 + i % 3],
                             ["Speech", "Cough", "Speech", "Pour"][: 1 + (i * 7) % 4])
            for i in range(9)}
    dirs = make_folder(tmp_path, spec, seed=3)
    want = direct_scores(dirs)
    serial = score_folders(*dirs, jobs=1)
    threads = score_folders(*dirs, jobs=3)
    for r in (serial, threads):
        got = dict(zip(r.per_soundscape["soundscape"], r.per_soundscape["capi_sdri"]))
        for name, value in want.items():
            assert got[name] == pytest.approx(value, abs=TOL_REPLAY_DB)
    assert threads.capi_sdri == serial.capi_sdri
    assert threads.per_soundscape.equals(serial.per_soundscape)


def test_mono_stem_written_as_column_and_nan_outside_channel_0(tmp_path):
    dirs = make_folder(tmp_path, {"s": (["Speech"], ["Speech"])})
    ref, _ = sf.read(dirs[1] / "s_0_Speech.wav", dtype="float32")
    _write(dirs[1] / "s_0_Speech.wav", ref[:, None])  # (T, 1) is a mono file
    mix, _ = sf.read(dirs[0] / "s.wav", dtype="float32")
    mix[5, 2] = np.nan  # channels 1-3 are never used
    _write(dirs[0] / "s.wav", mix)
    assert np.isfinite(score_folders(*dirs, jobs=1).capi_sdri)


# ----------------------------------------------------------------------------- bad input


def _rewrite(dirs, which, file_name, fn):
    path = dirs[which] / file_name
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    data, sr = fn(data, sr)
    path.unlink()
    _write(path, data, sr)


def _nan_at(index, channel=0, value=np.nan):
    def fn(data, sr):
        data[index, channel] = value
        return data, sr
    return fn


def _garbage(dirs):
    (dirs[2] / "s_0_Speech.wav").write_bytes(b"RIFF not really a wave file")


BAD = {
    "unknown label": (lambda d: _write(d[2] / "s_2_Cat.wav", np.zeros(T, np.float32)),
                      LabelError, r"estimate folder.*'s_2_Cat.wav': unknown label 'Cat'"),
    "silence file": (lambda d: _write(d[1] / "s_2_silence.wav", np.zeros(T, np.float32)),
                     LabelError, r"s_2_silence.wav.*empty slot"),
    "sample rate": (lambda d: _rewrite(d, 2, "s_1_Cough.wav", lambda x, sr: (x, 16000)),
                    AudioFileError, r"s_1_Cough.wav: sample rate 16000 Hz, expected 32000"),
    "soundscape rate": (lambda d: _rewrite(d, 0, "s.wav", lambda x, sr: (x, 44100)),
                        AudioFileError, r"s.wav: sample rate 44100 Hz"),
    "soundscape channels": (lambda d: _rewrite(d, 0, "s.wav", lambda x, sr: (x[:, :2], sr)),
                            AudioFileError, r"s.wav: 2 channel\(s\), expected a 4-channel"),
    "stereo stem": (lambda d: _rewrite(d, 1, "s_0_Speech.wav",
                                       lambda x, sr: (np.hstack([x, x]), sr)),
                    AudioFileError, r"s_0_Speech.wav: 2 channels, expected a mono stem"),
    "length": (lambda d: _rewrite(d, 2, "s_1_Cough.wav", lambda x, sr: (x[:-1], sr)),
               AudioFileError, rf"s_1_Cough.wav: {T - 1} samples but soundscape s.wav has {T}"),
    "nan stem": (lambda d: _rewrite(d, 2, "s_1_Cough.wav", _nan_at(17)),
                 AudioFileError, r"s_1_Cough.wav: the stem holds nan at sample 17"),
    "inf reference": (lambda d: _rewrite(d, 1, "s_1_Cough.wav", _nan_at(3, value=np.inf)),
                      AudioFileError, r"oracle_target/s_1_Cough.wav: the stem holds inf at "
                      r"sample 3"),
    "nan unpaired stem": (lambda d: _write(d[2] / "s_2_Pour.wav",
                                           np.full(T, np.nan, np.float32)),
                          AudioFileError, r"s_2_Pour.wav: the stem holds nan at sample 0"),
    "nan zero-target stem": (lambda d: (_write(d[0] / "z.wav", np.zeros((T, 4), np.float32)),
                                        _write(d[2] / "z_0_Pour.wav",
                                               np.full(T, np.nan, np.float32))),
                             AudioFileError, r"z_0_Pour.wav: the stem holds nan at sample 0"),
    "-inf missed reference": (lambda d: (_write(d[1] / "s_2_Pour.wav", np.zeros(T, np.float32)),
                                         _rewrite(d, 1, "s_2_Pour.wav", _nan_at(7, value=-np.inf))),
                              AudioFileError, r"s_2_Pour.wav: the stem holds -inf at sample 7"),
    "nan mixture, nothing paired": (
        lambda d: ([f.unlink() for f in d[2].iterdir()],
                   _write(d[2] / "s_0_Pour.wav", np.zeros(T, np.float32)),
                   _rewrite(d, 0, "s.wav", _nan_at(2))),
        AudioFileError, r"s.wav: channel 0 holds nan at sample 2"),
    "nan mixture": (lambda d: _rewrite(d, 0, "s.wav", _nan_at(5)),
                    AudioFileError, r"s.wav: channel 0 holds nan at sample 5"),
    "duplicate index": (lambda d: _write(d[2] / "s_0_Cough.wav", np.zeros(T, np.float32)),
                        FolderLayoutError, r"'s_0_Cough.wav' and 's_0_Speech.wav' both have "
                        r"index 0 for soundscape 's'"),
    "unreadable": (_garbage, AudioFileError, r"s_0_Speech.wav: cannot read it as audio"),
    "unknown soundscape": (lambda d: _write(d[2] / "t_0_Speech.wav", np.zeros(T, np.float32)),
                           FolderLayoutError, r"estimate folder.*1 file name\(s\) match no "
                           r"soundscape.*t_0_Speech.wav"),
    "unknown soundscape oracle": (lambda d: _write(d[1] / "s2_0_Speech.wav",
                                                   np.zeros(T, np.float32)),
                                  FolderLayoutError, r"oracle folder.*s2_0_Speech.wav"),
    "ambiguous": (lambda d: _write(d[0] / "s_1.wav", np.zeros((T, 4), np.float32)),
                  FolderLayoutError, r"ambiguous file name\(s\) \(s_1_Cough.wav\).*'s_1', index "
                  r"None.*'s', index 1"),
    "missing folder": (lambda d: [p.unlink() for p in d[2].iterdir()] and d[2].rmdir(),
                       FolderLayoutError, r"estimate folder .* does not exist"),
    "no soundscape": (lambda d: (d[0] / "s.wav").rename(d[0] / "s.flac"),
                      FolderLayoutError, r"holds no .wav file"),
    # issue 13: these were skipped without a word and their sources counted as missed
    "upper-case .WAV stem": (lambda d: (d[2] / "s_1_Cough.wav").rename(d[2] / "s_1_Cough.WAV"),
                             FolderLayoutError, r"'s_1_Cough.WAV' \(rename it to end in "
                             r"lower-case '.wav'"),
    "dangling symlink stem": (lambda d: (d[2] / "s_1_Cough.wav").unlink()
                              or (d[2] / "s_1_Cough.wav").symlink_to(d[2] / "gone.wav"),
                              FolderLayoutError, r"'s_1_Cough.wav' \(a symbolic link to .*gone"
                              r".wav', which does not exist"),
    "folder named like a stem": (lambda d: (d[2] / "s_1_Cough.wav").unlink()
                                 or (d[2] / "s_1_Cough.wav").mkdir(),
                                 FolderLayoutError, r"'s_1_Cough.wav' \(a folder, not a file"),
    "zero-length soundscape and stems": (
        lambda d: [_write(p, np.zeros((0, 4 if p.parent == d[0] else 1), np.float32))
                   for folder in d for p in list(folder.iterdir())],
        AudioFileError, r"s.wav: the soundscape holds 0 samples"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_naming_the_file(tmp_path, case):
    dirs = make_folder(tmp_path, {"s": (["Speech", "Cough"], ["Speech", "Cough"])})
    break_it, err, match = BAD[case]
    break_it(dirs)
    with pytest.raises(err, match=match):
        score_folders(*dirs, jobs=1)


def test_bad_audio_is_refused_in_parallel_too(tmp_path):
    dirs = make_folder(tmp_path, {f"s{i}": (["Speech"], ["Speech"]) for i in range(6)})
    _rewrite(dirs, 2, "s4_0_Speech.wav", _nan_at(9))
    with pytest.raises(AudioFileError, match=r"s4_0_Speech.wav: the stem holds nan at sample 9"):
        score_folders(*dirs, jobs=2)


def test_ca2025_refuses_repeated_labels(tmp_path):
    dirs = make_folder(tmp_path, {"s": (["Speech", "Speech"], ["Speech"])})
    with pytest.raises(LabelError, match="repeats"):
        score_folders(*dirs, jobs=1, metric="ca2025")


@pytest.mark.parametrize("kwargs, match", [
    ({"metric": "sdr"}, "metric must be one of"),
    ({"jobs": 0}, "jobs must be a positive integer"),
    ({"backend": "dask"}, "backend must be one of"),
    ({"label_set": "dcase2099"}, "unknown label set"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    dirs = make_folder(tmp_path, {"s": (["Speech"], ["Speech"])})
    with pytest.raises(casdri.InputError, match=match):
        score_folders(*dirs, **kwargs)


# ----------------------------------------------------------------------------- the one reader


def test_scan_targets_matches_scoring_and_reads_slices(tmp_path):
    """Building and training read the layout through the scorer's matching (one reader)."""
    dirs = make_folder(tmp_path, {"s_1": (["Cough", "Speech"], []), "s_10": ([], [])})
    scored = {f.name: f.refs for f in scan_folders(*dirs)}
    built = scan_targets(dirs[0], dirs[1])
    assert [f.name for f in built] == ["s_1", "s_10"]
    assert {f.name: f.refs for f in built} == scored and all(f.ests == () for f in built)
    assert all(f.refs == () for f in scan_targets(dirs[0], None))
    path = dirs[0] / "s_1.wav"
    whole = sf.read(path, dtype="float32", always_2d=True)[0].T
    assert check_header(path, sample_rate_hz=SR, n_channels=4) == T
    np.testing.assert_array_equal(read_audio(path), whole)
    np.testing.assert_array_equal(read_audio(path, start=100, stop=300), whole[:, 100:300])


@pytest.mark.parametrize("kw, match", [
    ({"sample_rate_hz": 16000, "n_channels": 4}, r"s_1\.wav: sample rate 32000 Hz, expected 16000"),
    ({"sample_rate_hz": SR, "n_channels": 1}, r"s_1\.wav: 4 channels, expected 1; a mono"),
    ({"sample_rate_hz": SR, "n_channels": 4, "n_samples": 5}, rf"s_1\.wav: {T} samples, "
                                                              "expected 5"),
])
def test_check_header_names_the_file(tmp_path, kw, match):
    dirs = make_folder(tmp_path, {"s_1": ([], [])})
    with pytest.raises(AudioFileError, match=match):
        check_header(dirs[0] / "s_1.wav", **kw)


def test_read_audio_refuses_nan_and_truncation(tmp_path):
    path = tmp_path / "x.wav"
    data = np.zeros((50, 2), np.float32)
    data[7, 1] = np.nan
    _write(path, data)
    with pytest.raises(AudioFileError, match=r"x\.wav: channel 1 holds nan at sample 7"):
        read_audio(path)
    assert read_audio(path, check_finite=False).shape == (2, 50)
    with pytest.raises(AudioFileError, match="truncated"):
        read_audio(path, stop=80)
