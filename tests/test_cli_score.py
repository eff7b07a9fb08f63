"""``casdri score``: exit codes, printed lines, output files, errors (subprocess and in-process)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from casdri import cli

from .test_folders import make_folder

ROOT = Path(__file__).resolve().parents[1]
RESULT_KEYS = {"capi_sdri", "accuracy_mix", "accuracy_src", "n_soundscapes", "n_scored",
               "per_soundscape", "per_class"}
ROW_KEYS = {"soundscape", "capi_sdri", "est_labels", "ref_labels", "acc", "tp", "fp", "fn"}


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "casdri.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def folder(tmp_path):
    spec = {"s_0": (["Speech", "Cough"], ["Speech", "Cough", "Pour"]),
            "s_1": ([], []), "s_2": (["Dishes"], ["Dishes"])}
    return make_folder(tmp_path / "set", spec)


def _args(dirs):
    return ["--soundscapes", dirs[0], "--oracle", dirs[1], "--estimate", dirs[2]]


def test_subprocess_success_json(folder, tmp_path):
    out = tmp_path / "r.json"
    proc = run_cli("score", *_args(folder), "--out", out)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("CAPI-SDRi: ") and lines[1].startswith("Accuracy (mixture): ")
    assert lines[2].startswith("Accuracy (source) : ")
    assert "per class" in proc.stdout and "Speech" in proc.stdout
    assert "soundscape" in proc.stderr  # progress bar on stderr
    doc = json.loads(out.read_text())
    assert RESULT_KEYS <= set(doc)
    assert [set(r) >= ROW_KEYS for r in doc["per_soundscape"]] == [True] * 3
    assert doc["per_soundscape"][1]["capi_sdri"] is None  # zero-target, no estimate
    assert doc["n_soundscapes"] == 3 and doc["n_scored"] == 2
    assert doc["inputs"]["metric"] == "capi" and doc["label_set"] == "dcase2026t4"


def test_subprocess_casdri_error_is_one_line(folder):
    (folder[2] / "s_0_7_Cat.wav").write_bytes((folder[2] / "s_0_0_Speech.wav").read_bytes())
    proc = run_cli("score", *_args(folder), "--no-progress")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("casdri score: error: ") and "'s_0_7_Cat.wav'" in proc.stderr
    assert "Traceback" not in proc.stderr
    debug = run_cli("score", *_args(folder), "--no-progress", "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "LabelError" in debug.stderr


def test_usage_error_prints_one_line(capsys, folder):
    assert cli.main(["score", "--soundscapes", str(folder[0])]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["casdri score: error: missing --oracle, --estimate (give all "
                                "three folders, or none for the example) (see 'casdri score "
                                "--help')"]


@pytest.mark.parametrize("argv, match", [
    (["score", "--jobs", "0", "--example"], "--jobs: expected an integer >= 1, got 0"),
    (["score", "--out", "r.txt", "--example"], r"--out r.txt: expected a file ending in"),
    (["score", "--example", "--oracle", "x"], "--example cannot be combined"),
    (["score", "--metric", "sdr"], "invalid choice"),
    ([], "a command is required"),
])
def test_usage_errors(capsys, argv, match):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and re.search(match, err[0])


def test_missing_folder_is_a_casdri_error(capsys, tmp_path):
    code = cli.main(["score", "--soundscapes", str(tmp_path / "nope"), "--oracle", str(tmp_path),
                     "--estimate", str(tmp_path)])
    assert code == 1
    assert capsys.readouterr().err.startswith("casdri score: error: soundscape folder ")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_per_soundscape_table_files(capsys, folder, tmp_path, suffix):
    out = tmp_path / f"r{suffix}"
    assert cli.main(["score", *map(str, _args(folder)), "--out", str(out), "--no-progress",
                     "--jobs", "1"]) == 0
    table = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert ROW_KEYS <= set(table.columns) and len(table) == 3
    first = table.iloc[0]
    labels = first["est_labels"].split(";") if suffix == ".csv" else list(first["est_labels"])
    assert labels == ["Speech", "Cough", "Pour"]
    assert pd.isna(table["capi_sdri"][1])


def test_ca2025_metric(capsys, tmp_path):
    dirs = make_folder(tmp_path, {"s": (["Speech"], ["Speech", "Cough"])})
    assert cli.main(["score", *map(str, _args(dirs)), "--metric", "ca2025",
                     "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("CA-SDRi: ")


def test_example_is_used_without_folders(capsys):
    assert all(d.is_dir() for d in cli.example_dirs()), "the example ships with casdri"
    assert cli.main(["score", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("CAPI-SDRi: ")
    assert "scoring the bundled example" in captured.err
    assert cli.main(["score", "--example", "--no-progress"]) == 0


def test_out_is_written_when_the_stdout_reader_leaves_early(tmp_path):
    """``casdri score --out r.json | head -1``: the reader closes the pipe before the summary is
    printed; the command still writes ``--out`` (it did exit 0 without the file)."""
    import os
    out = tmp_path / "r.json"
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout now fails with EPIPE (BrokenPipeError)
    try:
        proc = subprocess.run([sys.executable, "-m", "casdri.cli", "score", "--example",
                               "--no-progress", "--out", str(out)], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file(), proc.stderr
    assert set(json.loads(out.read_text())) >= {"capi_sdri", "n_soundscapes"}
