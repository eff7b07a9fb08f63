"""casdri-search end to end through a subprocess: exit code, printed result, files written."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from casdri.cache import load_cache
from casdri.policies import load_policy_yaml
from casdri.synthetic import make_synthetic_cache

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "search.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return make_synthetic_cache(tmp_path_factory.mktemp("cli") / "cache", n_soundscapes=100,
                                seed=4, load=False)


def test_cli_all_stages(cache_dir, tmp_path):
    out = tmp_path / "out"
    p = run_cli("--cache", cache_dir, "--stage", "all", "--folds", "3", "--trials", "4",
                "--seed", "1", "--out", out)
    assert p.returncode == 0, p.stderr
    text = p.stdout
    for line in ("baseline policy", "tuned, tune folds", "tuned, held-out",
                 "held-out gain vs baseline", "oracle labelling bound", "share of gap closed",
                 "per-stage gains", "policy  ->", "trials  ->", "report  ->"):
        assert line in text, line
    assert re.search(r"held-out gain vs baseline: +[+-]\d+\.\d+ dB, 95% CI \[[+-]\d", text)
    for stage in ("fusion", "verify", "gates", "per-class", "select", "refine"):
        assert re.search(rf"^  {stage} ", text, re.M), stage
    assert "Traceback" not in p.stderr
    # the policy loads back as a refine policy, with its provenance
    mod, params = load_policy_yaml((out / "policy.yaml").read_text())
    assert mod.NAME == "refine"
    doc = yaml.safe_load((out / "policy.yaml").read_text())
    prov = doc["provenance"]
    assert prov["cache_id"] == load_cache(cache_dir).meta.cache_id
    assert prov["cache_hash"].startswith("sha256:") and prov["seed"] == 1
    assert prov["stages"] == ["fusion", "verify", "gates", "per-class", "select", "refine"]
    assert set(prov["heldout"]) >= {"capi_sdri_db", "ci95_db", "gain_db", "gain_ci95_db"}
    assert prov["versions"]["casdri"]
    trials = pd.read_parquet(out / "trials.parquet")
    assert {"fold", "stage", "engine", "score_db"} <= set(trials.columns)
    assert set(trials["fold"]) == {"fold-0", "fold-1", "fold-2", "final"}
    report = (out / "report.md").read_text()
    figs = re.findall(r"\]\((figures/[^)]+\.png)\)", report)
    assert len(figs) >= 4 and all((out / f).stat().st_size > 1000 for f in figs)
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temp files

    # start again from the written policy, one stage, no CV: tune-set warning
    p2 = run_cli("--cache", cache_dir, "--stage", "gates", "--folds", "1", "--trials", "3",
                 "--policy-in", out / "policy.yaml", "--out", tmp_path / "out2", "--no-figures")
    assert p2.returncode == 0, p2.stderr
    assert "no held-out validation" in p2.stdout


def test_cli_library_errors_are_one_line(cache_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: baseline\nparams: {}\n")
    p = run_cli("--cache", cache_dir, "--stage", "fusion", "--policy-in", bad, "--out", tmp_path)
    assert p.returncode == 1
    assert p.stderr.strip().startswith("casdri-search: error:") and "refine" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    p = run_cli("--cache", cache_dir, "--stage", "fusion", "--storage", "nonsense",
                "--out", tmp_path)
    assert p.returncode == 1 and "expected sqlite" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("--cache", cache_dir, "--stage", "fusion", "--folds", "1000", "--out", tmp_path)
    assert p.returncode == 1 and "--folds must be in 1..100" in p.stderr


def _result_lines(stdout: str) -> list:
    """Printed result without wall times and output paths (which differ between runs)."""
    return [re.sub(r", [\d.]+ s\]", "]", line) for line in stdout.splitlines()
            if not re.match(r"(policy|trials|report) +->", line)]


def test_cli_gates_held_out_seeded_and_jobs_independent(cache_dir, tmp_path):
    args = ("--cache", cache_dir, "--stage", "gates", "--folds", "4", "--trials", "6",
            "--seed", "3", "--no-figures")
    a = run_cli(*args, "--out", tmp_path / "a")
    b = run_cli(*args, "--jobs", "2", "--out", tmp_path / "b")
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    assert _result_lines(a.stdout) == _result_lines(b.stdout)  # same seed, any --jobs
    pa = yaml.safe_load((tmp_path / "a" / "policy.yaml").read_text())
    pb = yaml.safe_load((tmp_path / "b" / "policy.yaml").read_text())
    assert pa["params"] == pb["params"] and pa["provenance"]["stages"] == ["gates"]
    m = re.search(r"held-out gain vs baseline: +([+-][\d.]+) dB, 95% CI \[([+-][\d.]+), "
                  r"([+-][\d.]+)\]", a.stdout)
    assert m, a.stdout
    gain, lo, hi = map(float, m.groups())
    assert lo <= gain <= hi
    held = pa["provenance"]["heldout"]
    assert held["gain_ci95_db"][0] == pytest.approx(lo, abs=1e-3)
    # the plain warning appears exactly when the held-out CI includes zero
    assert ("WARNING: the held-out gain" in a.stdout) == (held["gain_ci95_db"][0] <= 0
                                                         <= held["gain_ci95_db"][1])
    c = run_cli(*args[:-3], "--seed", "4", "--no-figures", "--out", tmp_path / "c")
    assert c.returncode == 0 and _result_lines(c.stdout) != _result_lines(a.stdout)


def test_cli_zero_gain_warns_plainly(tmp_path):
    """24 soundscapes: the held-out CI is wide, includes zero, and the CLI says so plainly."""
    small = make_synthetic_cache(tmp_path / "tiny", n_soundscapes=24, seed=11, load=False)
    p = run_cli("--cache", small, "--stage", "gates", "--folds", "3", "--trials", "2",
                "--seed", "0", "--no-figures", "--out", tmp_path / "out")
    assert p.returncode == 0, p.stderr
    m = re.search(r"95% CI \[([+-][\d.]+), ([+-][\d.]+)\] \(paired", p.stdout)
    lo, hi = map(float, m.groups())
    assert lo <= 0 <= hi
    warning = [line for line in p.stdout.splitlines() if line.startswith("WARNING:")]
    assert len(warning) == 2 and "includes zero" in warning[0]
    assert "small sample: held-out folds of 8-8 soundscapes" in warning[1]  # 24 / 3 folds
    assert "not shown to beat the baseline on unseen soundscapes" in warning[0]


def test_a_sqlite_study_file_alone_holds_every_trial(cache_dir, tmp_path):
    """The search closes its storage: SQLite folds its write-ahead log into the .db file, so a
    copy of that one file (what a user shares) holds every trial, and no -wal file is left."""
    import shutil

    import optuna
    db = tmp_path / "study.db"
    p = run_cli("--cache", cache_dir, "--stage", "gates", "--folds", "2", "--trials", "4",
                "--no-figures", "--storage", f"sqlite:///{db}", "--out", tmp_path / "out")
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / "study.db-wal").exists()
    alone = tmp_path / "copy" / "study.db"
    alone.parent.mkdir()
    shutil.copy(db, alone)
    storage = optuna.storages.RDBStorage(f"sqlite:///{alone}")
    studies = optuna.get_all_study_summaries(storage)
    assert len(studies) >= 3 and all(s.n_trials >= 4 for s in studies)
    storage.engine.dispose()
