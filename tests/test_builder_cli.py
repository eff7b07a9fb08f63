"""``casdri-cache`` through a subprocess: build, info, validate, apply, usage and library
errors (one line; usage exit 2, library exit 1; tracebacks only with --debug)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from casdri.labels import DCASE2026T4
from casdri.policies import BaselineParams
from tests.builder_models import write_metadata, write_soundscapes, write_system

ROOT = Path(__file__).parents[1]


def cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cache_builder.cli", *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    y = write_system(root / "sys", separators=("small",))
    sdir, odir = write_soundscapes(root / "data", n=3, seconds=1.0, seed=2)
    out = root / "cache"
    r = cli("build", "--system", y, "--soundscapes", sdir, "--oracle", odir, "--out", out,
            "--device", "cpu", "--jobs", 0, "--threads", 1, "--no-progress")
    assert r.returncode == 0, r.stderr
    return dict(root=root, yaml=y, sdir=sdir, odir=odir, out=out, build=r)


def test_build_prints_summary(env):
    assert "built 3, skipped 0 of 3 soundscapes" in env["build"].stdout
    assert "passes per soundscape: tagger 2.0, separator" in env["build"].stdout
    assert ", retag " in env["build"].stdout


def test_build_on_a_generator_split_folder_with_progress(env):
    """``--soundscapes`` a split folder (soundscape/, oracle_target/, metadata.parquet): the
    oracle targets are used and the metadata's split column is the split tag; tqdm bars per
    phase with rate and ETA on stderr."""
    split_dir = env["root"] / "gen" / "dev"
    for sub in ("soundscape", "oracle_target"):
        shutil.copytree(env["sdir"].parent / sub, split_dir / sub)
    write_metadata(split_dir, "dev")
    out = env["root"] / "cache_split"
    r = cli("build", "--system", env["yaml"], "--soundscapes", split_dir, "--out", out,
            "--device", "cpu", "--jobs", 1, "--threads", 1, "--chunk-size", 2)
    assert r.returncode == 0, r.stderr
    assert f"split 'dev' (oracle {split_dir / 'oracle_target'})" in r.stdout
    for phase in ("read+tag", "separate", "parts"):
        line = [x for x in r.stderr.replace("\r", "\n").splitlines() if x.startswith(phase)]
        assert line and "100%" in line[-1] and "<00:00" in line[-1], (phase, r.stderr[-800:])
    assert "/s]" in r.stderr
    from casdri.cache import load_cache
    cache = load_cache(out)
    assert cache.meta.closure["oracle"] is True and (cache.n_ref > 0).any()
    assert set(map(str, cache.splits)) == {"dev"}


def test_info_prints_passes_per_soundscape(env):
    r = cli("info", env["out"])
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if "forward passes per soundscape" in x)
    assert "tagger 2.0" in line and "separator " in line and "retag " in line
    r = cli("info", env["out"], "--json")
    import json
    info = json.loads(r.stdout)
    assert info["passes_per_soundscape"]["tagger"] == 2.0
    assert info["splits"] == {"dev": 3}


def test_info_and_validate(env):
    r = cli("info", env["out"])
    assert r.returncode == 0 and "n_soundscapes: 3" in r.stdout
    assert "separator small: tests.builder_models.TinySeparator" in r.stdout
    r = cli("validate", env["out"])
    assert r.returncode == 0 and "valid" in r.stdout
    bad = env["root"] / "bad"
    bad.mkdir()
    r = cli("validate", bad)
    assert r.returncode == 1 and "INVALID" in r.stderr


def test_apply_writes_stems_and_scores(env):
    policy = env["root"] / "policy.yaml"
    policy.write_text(BaselineParams().to_yaml(DCASE2026T4))
    out = env["root"] / "stems"
    r = cli("apply", "--system", env["yaml"], "--policy", policy, "--soundscapes", env["sdir"],
            "--out", out, "--zip", "sub.zip", "--oracle", env["odir"], "--jobs", 0,
            "--threads", 1, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "live CAPI-SDRi" in r.stdout and (env["root"] / "sub.zip").exists()


@pytest.mark.parametrize("args, first", [
    ([], "casdri-cache: error: a command is required"),
    (["build", "--system", "s.yaml", "--soundscapes", "d"],
     "casdri-cache build: error: the following arguments are required: --out"),
    (["build", "--system", "s", "--soundscapes", "d", "--out", "o", "--shard", "2/2"],
     "casdri-cache build: error: argument --shard: shard '2/2': need 0 <= i < n"),
    (["build", "--system", "s", "--soundscapes", "d", "--out", "o", "--batch-size", "0"],
     "casdri-cache build: error: argument --batch-size: expected an integer >= 1, got 0"),
    (["frobnicate"], "casdri-cache: error: argument command: invalid choice: 'frobnicate'"),
    (["build", "--system", "s", "--soundscapes", "d", "--out", "o", "--oracle", "x",
      "--no-oracle"], "casdri-cache build: error: argument --no-oracle: not allowed with "
                      "argument --oracle"),
    (["apply", "--system", "s", "--soundscapes", "d", "--out", "o"],
     "casdri-cache apply: error: the following arguments are required: --policy"),
])
def test_usage_errors_one_line(args, first):
    r = cli(*args)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(first)
    assert lines[0].endswith("--help')")
    assert "Traceback" not in r.stderr


def test_library_error_is_one_line_unless_debug(env, tmp_path):
    args = ["build", "--system", env["yaml"], "--soundscapes", tmp_path / "none", "--out",
            tmp_path / "o", "--device", "cpu"]
    r = cli(*args)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"casdri-cache build: error: soundscape folder {tmp_path / 'none'} does not exist"]
    r = cli("--debug", *args)
    assert r.returncode == 1 and "Traceback" in r.stderr and "FolderLayoutError" in r.stderr


@pytest.mark.parametrize("stop, code, how", [(KeyboardInterrupt, 130, "interrupted"),
                                             ("terminated", 143, "terminated")])
def test_an_interrupted_build_says_how_to_resume(env, monkeypatch, capsys, stop, code, how):
    """Ctrl-C printed only ``interrupted``; the build resumes when rerun, and now says so. On a
    terminal the first line comes before torch loads (it sat silent for about 3 s)."""
    import cache_builder.build as build
    from cache_builder import cli as builder_cli

    from casdri._cli import Terminated

    def interrupted(*args, **kwargs):  # Ctrl-C, or SIGTERM (a scheduler's time limit)
        raise Terminated if stop == "terminated" else stop

    monkeypatch.setattr(build, "build_cache", interrupted)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: the first line
    returned = builder_cli.main(["build", "--system", str(env["yaml"]), "--soundscapes",
                                 str(env["sdir"]), "--out", str(env["root"] / "never")])
    assert returned == code
    assert capsys.readouterr().err.splitlines() == [
        "casdri-cache build: loading torch and the system's models",  # before seconds of import
        f"casdri-cache build: {how}; rerun the same command to resume: the work already "
        "done is kept"]
