"""End to end with nothing outside the repo: generate soundscapes from the committed real clips,
build a decision cache with the shipped reference system, validate it, search a policy, apply it
live with the same models, and check the live score is what the replay of the cache said.

Every step runs as a subprocess through the command-line entry points (``python -m``), as a user
would run them; the assertions then read what they wrote back with the library.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import casdri
from casdri.cache import load_cache
from casdri.policies import BaselineParams, load_policy_yaml

pytestmark = pytest.mark.slow  # generate, build, search, apply end to end

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "tests" / "data" / "bed_subset"
SYSTEM = ROOT / "cache_builder" / "reference" / "system.yaml"
N_DEV, SEED, DURATION_S = 6, 1, 2  # 2 s, not 10: the build separates ~22 queries per clip
TOL_LIVE_DB = 1e-4  # live (written float32 stems, scored from the folder) vs replay, per clip
TOL_PRINTED_DB = 6e-4  # a value printed with 3 decimals vs the same value recomputed


def run(module: str, *args, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                       text=True, cwd=ROOT, timeout=timeout, env=env)
    assert p.returncode == 0, f"{module} {' '.join(map(str, args))}\n{p.stdout}\n{p.stderr}"
    assert "Traceback" not in p.stderr
    return p


def number(text: str, label: str) -> float:
    """The first number after ``label`` (a line start of the search summary)."""
    m = re.search(rf"^{re.escape(label)}\s*:\s*([+-]?\d+\.\d+)", text, re.M)
    assert m, f"no {label!r} line in:\n{text}"
    return float(m.group(1))


def ci(text: str, label: str) -> tuple[float, float]:
    m = re.search(rf"^{re.escape(label)}\s*:.*95% CI \[([+-]?\d+\.\d+), ([+-]?\d+\.\d+)\]",
                  text, re.M)
    assert m, f"no CI on the {label!r} line in:\n{text}"
    return float(m.group(1)), float(m.group(2))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def dev(work):
    # --rules v1: the shipped reference system was trained on soundscapes of the v1 rules
    run("cache_builder.cli", "generate", "--sources", SOURCES, "--out", work / "gen",
        "--dev", N_DEV, "--seed", SEED, "--duration-s", DURATION_S, "--rules", "v1",
        "--no-progress")
    return work / "gen" / "dev"


@pytest.fixture(scope="module")
def cache_dir(work, dev):
    out = work / "cache"
    p = run("cache_builder.cli", "build", "--system", SYSTEM, "--soundscapes", dev,
            "--out", out, "--jobs", "0", "--no-progress")
    assert f"built {N_DEV}" in p.stdout, p.stdout
    return out


@pytest.fixture(scope="module")
def searched(work, cache_dir):
    out = work / "search"
    # --group-by none: 6 soundscapes of a 30-recording pool share their event recordings
    # into 2 groups of 1 and 5 (grouped folds are tested in tests/test_search_*)
    p = run("search.cli", "--cache", cache_dir, "--stage", "gates", "--folds", "2",
            "--trials", "8", "--seed", "0", "--group-by", "none", "--out", out)
    return out, p.stdout


@pytest.fixture(scope="module")
def applied(work, dev, searched):
    out = work / "stems"
    p = run("cache_builder.cli", "apply", "--system", SYSTEM, "--policy",
            searched[0] / "policy.yaml", "--soundscapes", dev, "--out", out, "--jobs", "0",
            "--no-progress")
    return out, p.stdout


def test_generated_folder(dev):
    wavs = sorted((dev / "soundscape").glob("*.wav"))
    assert len(wavs) == N_DEV
    meta = pd.read_parquet(dev / "metadata.parquet")
    assert len(meta) > 0
    import soundfile as sf

    info = sf.info(str(wavs[0]))
    assert (info.samplerate, info.channels) == (32000, 4)
    assert info.frames == DURATION_S * 32000


def test_cache_valid_and_described(cache_dir):
    p = run("cache_builder.cli", "validate", cache_dir)
    assert "valid" in p.stdout
    p = run("cache_builder.cli", "info", cache_dir)
    assert f"n_soundscapes: {N_DEV}" in p.stdout
    system = yaml.safe_load(SYSTEM.read_text())
    for name in system["taggers"]:
        assert f"tagger {name}:" in p.stdout
    for name in system["separators"]:
        assert f"separator {name}:" in p.stdout
    cache = load_cache(cache_dir)
    assert cache.n_soundscapes == N_DEV
    assert cache.meta.label_set == system["label_set"]


def test_search_prints_and_writes(cache_dir, searched):
    out, text = searched
    cache = load_cache(cache_dir)
    base = float(casdri.replay(cache, "baseline", BaselineParams()).capi_sdri[0])
    assert abs(number(text, "baseline policy") - base) <= TOL_PRINTED_DB
    tuned_tune = number(text, "tuned, tune folds")
    held = number(text, "tuned, held-out")
    lo, hi = ci(text, "tuned, held-out")
    assert lo <= held <= hi
    gain = number(text, "held-out gain vs baseline")
    glo, ghi = ci(text, "held-out gain vs baseline")
    assert glo <= gain <= ghi
    assert abs(held - base - gain) <= 3 * TOL_PRINTED_DB  # three rounded values
    oracle = number(text, "oracle labelling bound")
    assert np.isfinite([tuned_tune, oracle]).all()
    assert re.search(r"^  gates ", text, re.M)
    for line in ("policy  ->", "trials  ->", "report  ->"):
        assert line in text
    # the written policy is the final one: its replay is the printed all-soundscape score
    mod, params = load_policy_yaml((out / "policy.yaml").read_text())
    assert mod.NAME == "refine"
    final = float(casdri.replay(cache, mod, params).capi_sdri[0])
    assert abs(number(text, "final policy, all (tune)") - final) <= TOL_PRINTED_DB
    prov = yaml.safe_load((out / "policy.yaml").read_text())["provenance"]
    assert prov["cache_id"] == cache.meta.cache_id and prov["stages"] == ["gates"]
    assert prov["folds"] == 2 and prov["n_soundscapes"] == N_DEV
    assert abs(prov["heldout"]["gain_db"] - gain) <= TOL_PRINTED_DB
    trials = pd.read_parquet(out / "trials.parquet")
    assert set(trials["fold"]) == {"fold-0", "fold-1", "final"}
    assert set(trials["stage"]) == {"gates"}
    report = (out / "report.md").read_text()
    figs = re.findall(r"\]\((figures/[^)]+\.png)\)", report)
    assert figs and all((out / f).stat().st_size > 1000 for f in figs)


def test_live_apply_equals_replay(dev, cache_dir, searched, applied):
    stems, text = applied
    mod, params = load_policy_yaml((searched[0] / "policy.yaml").read_text())
    rp = casdri.replay(load_cache(cache_dir), mod, params, per_soundscape=True)
    rp = rp.per_soundscape.set_index("soundscape")
    live = casdri.score_folders(dev / "soundscape", dev / "oracle_target", stems)
    lv = live.per_soundscape.set_index("soundscape")
    assert list(lv.index) == list(rp.index) and len(lv) == N_DEV
    for sc in lv.index:  # the same decisions, the same stems
        assert list(lv.loc[sc, "est_labels"]) == list(rp.loc[sc, "est_labels"]), sc
    a, b = lv["capi_sdri"].to_numpy(float), rp["capi_sdri"].to_numpy(float)
    assert (np.isnan(a) == np.isnan(b)).all()
    np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], atol=TOL_LIVE_DB, rtol=0)
    n_files = len(list(stems.glob("*.wav")))
    assert n_files == sum(len(x) for x in rp["est_labels"])
    # not vacuous: separated stems were written and scored against their references
    assert n_files >= 1 and (a[~np.isnan(a)] != 0).any(), lv
    m = re.search(r"live CAPI-SDRi (-?\d+\.\d+) dB", text)
    assert m, text
    assert abs(float(m.group(1)) - live.capi_sdri) <= 1e-4
