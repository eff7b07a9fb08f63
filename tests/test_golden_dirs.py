"""Regression of folder scoring against the official Evaluator on tests/data/golden/dirs.

Fixtures: tests/data/golden/dirs (13 soundscapes) and expected_dirs.json, what the official
``python -m src.evaluation.evaluate -b 1`` printed and wrote (see tests/data/golden/README.md).
The official label lists are padded with 'silence' to 3; casdri lists the real files only.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from casdri.cli import summary_lines
from casdri.labels import SILENCE
from casdri.scoring import score_folders

from .conftest import GOLDEN, TOL_OFFICIAL_DB

DIRS = GOLDEN / "dirs"
EXPECTED = json.loads((GOLDEN / "expected_dirs.json").read_text())
ROOT = Path(__file__).resolve().parents[1]
TOL_ACCURACY = 1e-9


def _check(result):
    summary = EXPECTED["summary"]
    assert result.capi_sdri == pytest.approx(summary["CAPI-SDRi"]["mean"], abs=TOL_OFFICIAL_DB)
    assert result.accuracy_mix == pytest.approx(summary["label_metrics"]["accuracy_mix"],
                                                abs=TOL_ACCURACY)
    assert result.accuracy_src == pytest.approx(summary["label_metrics"]["accuracy_src"],
                                                abs=TOL_ACCURACY)
    rows = {r["soundscape"]: r for r in result.to_dict()["per_soundscape"]}
    assert list(rows) == sorted(EXPECTED["per_soundscape"])
    for name, exp in EXPECTED["per_soundscape"].items():
        got = rows[name]
        if exp["capi_sdri"] is None:
            assert got["capi_sdri"] is None, name
        else:
            assert got["capi_sdri"] == pytest.approx(exp["capi_sdri"], abs=TOL_OFFICIAL_DB), name
        assert {k: got[k] for k in ("acc", "tp", "fp", "fn")} == exp["label"], name
        for side in ("est_labels", "ref_labels"):
            assert got[side] == [x for x in exp[side] if x != SILENCE], (name, side)
    assert summary_lines(result) == EXPECTED["printed"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_score_folders_matches_official(jobs):
    _check(score_folders(DIRS / "soundscape", DIRS / "oracle_target", DIRS / "estimate",
                         jobs=jobs))


def test_processes_match_official():
    _check(score_folders(DIRS / "soundscape", DIRS / "oracle_target", DIRS / "estimate",
                         jobs=2, backend="loky"))


def test_waveform_cases_written_as_folders_match_official(tmp_path):
    """The 51 waveform cases (ties, duplicates, shuffled rows) as one folder set: folder
    scoring reads stems grouped by class, and must keep the official values anyway."""
    cases = json.loads((GOLDEN / "expected.json").read_text())["cases"]
    dirs = tmp_path / "soundscape", tmp_path / "oracle_target", tmp_path / "estimate"
    for d in dirs:
        d.mkdir()
    for name in cases:
        with np.load(GOLDEN / "cases" / name) as z:
            clip = name[:-4]
            mix = np.zeros((z["mixture"].shape[0], 4), np.float32)
            mix[:, 0] = z["mixture"]
            sf.write(dirs[0] / f"{clip}.wav", mix, 32000, subtype="FLOAT")
            for side, key in ((1, "ref"), (2, "est")):
                for i, (label, wav) in enumerate(zip(z[f"{key}_labels"], z[f"{key}_wavs"])):
                    if label != SILENCE:  # officially ignored; casdri takes no file for it
                        sf.write(dirs[side] / f"{clip}_{i}_{label}.wav", wav, 32000,
                                 subtype="FLOAT")
    result = score_folders(*dirs, jobs=2)
    got = dict(zip(result.per_soundscape["soundscape"], result.per_soundscape["capi_sdri"]))
    for name, exp in cases.items():
        value = got[name[:-4]]
        if exp["capi_sdri"] is None:
            assert np.isnan(value), name
        else:
            assert min(abs(value - v) for v in exp["capi_sdri_all_observed"]) <= TOL_OFFICIAL_DB
    assert result.accuracy_mix == pytest.approx(
        json.loads((GOLDEN / "expected.json").read_text())["aggregate"]["accuracy_mix"],
        abs=TOL_ACCURACY)


def test_cli_prints_the_official_lines_and_writes_the_same_values(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "casdri.cli", "score", "--soundscapes", str(DIRS / "soundscape"),
         "--oracle", str(DIRS / "oracle_target"), "--estimate", str(DIRS / "estimate"),
         "--out", str(out), "--jobs", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:3] == EXPECTED["printed"]
    doc = json.loads(out.read_text())
    assert doc["printed"] == EXPECTED["printed"]
    assert doc["n_soundscapes"] == 13 and doc["n_scored"] == 12
    assert doc["capi_sdri"] == pytest.approx(EXPECTED["summary"]["CAPI-SDRi"]["mean"],
                                             abs=TOL_OFFICIAL_DB)
    rows = {r["soundscape"]: r for r in doc["per_soundscape"]}
    for name, exp in EXPECTED["per_soundscape"].items():
        if exp["capi_sdri"] is None:
            assert rows[name]["capi_sdri"] is None
        else:
            assert rows[name]["capi_sdri"] == pytest.approx(exp["capi_sdri"], abs=TOL_OFFICIAL_DB)
        assert {k: rows[name][k] for k in ("acc", "tp", "fp", "fn")} == exp["label"]
