"""`casdri.compare`: None handling, exact shares, the search's held-out CI reproduced; the
``casdri explain`` / ``casdri compare`` subcommands (subprocess)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import casdri
from casdri.paired import compare, compare_values
from casdri.synthetic import make_synthetic_cache

from .test_gap import _oracle_estimate_folder

ROOT = Path(__file__).resolve().parents[1]


def test_hand_worked_none_handling():
    """The 4th soundscape is zero-target: A puts a false positive (0 dB, counted), B is silent
    (None, left out). Gain = mean(2, 3, 0) - mean(1, 2) = 1/6 dB."""
    a = np.array([2.0, 3.0, np.nan, 0.0])
    b = np.array([1.0, 2.0, np.nan, np.nan])
    c = compare_values(a, b, ["s1", "s2", "s3", "s4"], n_boot=200)
    assert abs(c.bootstrap.gain_db - (5 / 3 - 1.5)) < 1e-15
    share = c.per_soundscape.set_index("soundscape")["share_db"]
    assert abs(share.sum() - c.bootstrap.gain_db) < 1e-15
    assert abs(share["s4"] - (-1.5 / 3)) < 1e-15  # a 0 among 3 clips, against B's mean 1.5
    assert share["s3"] == 0.0
    assert (c.n_scored_a, c.n_scored_b, c.n_better, c.n_worse, c.n_equal) == (3, 2, 2, 0, 0)
    assert c.per_soundscape.soundscape.iloc[0] == "s4"  # changed most


def test_a_constant_gain_has_a_point_interval():
    rng = np.random.default_rng(1)
    b = rng.normal(3, 2, 200)
    c = compare_values(b + 0.5, b, n_boot=500, seed=4)
    lo, hi = c.bootstrap.gain_ci_db
    assert abs(lo - 0.5) < 1e-12 and abs(hi - 0.5) < 1e-12
    assert c.prob_improvement == 1.0
    worse = compare_values(b - 0.5, b, n_boot=500, seed=4)
    assert worse.prob_improvement == 0.0


def test_only_common_soundscapes_are_compared():
    ta = pd.DataFrame({"soundscape": ["a", "b", "c"], "capi_sdri": [1.0, 2.0, 4.0],
                       "ref_labels": [["Speech"], ["Cough"], ["Pour", "Pour"]]})
    tb = pd.DataFrame({"soundscape": ["c", "b", "d"], "capi_sdri": [1.0, 1.0, 9.0],
                       "ref_labels": [["Pour", "Pour"], ["Cough"], ["Speech"]]})
    with pytest.warns(UserWarning, match="2 soundscapes are scored by one system only"):
        c = compare(ta, tb, n_boot=100)
    assert c.n_soundscapes == 2 and abs(c.bootstrap.gain_db - 2.0) < 1e-15
    assert set(c.per_scene.scene) == {"1 target", "2 targets, duplicate"}
    assert abs(c.per_scene.share_db.sum() - 2.0) < 1e-12
    with pytest.raises(casdri.InputError, match="missing columns"):
        compare(ta.drop(columns="ref_labels"), tb)


def test_reproduces_the_search_held_out_ci():
    from search.run import run_search

    cache = make_synthetic_cache(n_soundscapes=60, seed=7)
    r = run_search(cache, stage="gates", folds=3, trials=4, seed=3, n_boot=400)
    ids = list(cache.soundscape_ids)
    refs = [[cache.meta.classes[k] for k in cache.ref_labels[cache.ref_offsets[s]:
                                                             cache.ref_offsets[s + 1]]]
            for s in range(cache.n_soundscapes)]
    c = compare_values(r.heldout_values, r.baseline_values, ids, refs, n_boot=400, seed=3)
    h = r.heldout
    assert (c.bootstrap.gain_db, c.bootstrap.gain_ci_db, c.bootstrap.tuned_ci_db) == \
        (h.gain_db, h.gain_ci_db, h.tuned_ci_db)
    # the same through per-soundscape tables, rows shuffled: aligned by soundscape id
    order = np.random.default_rng(0).permutation(len(ids))
    ta = pd.DataFrame({"soundscape": ids, "capi_sdri": r.heldout_values, "ref_labels": refs})
    tb = pd.DataFrame({"soundscape": ids, "capi_sdri": r.baseline_values, "ref_labels": refs})
    c2 = compare(ta.iloc[order], tb, n_boot=400, seed=3)
    assert c2.bootstrap.gain_ci_db == h.gain_ci_db
    assert abs(c2.per_scene.share_db.sum() - h.gain_db) < 1e-12


def test_import_casdri_stays_light():
    code = ("import sys, casdri; casdri.explain, casdri.compare, casdri.what_if; "
            "print(sorted(m for m in ('optuna', 'search', 'matplotlib', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


# ----------------------------------------------------------------------------- CLI


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "casdri.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_cli_explain_and_compare_on_the_demo_cache(tmp_path):
    r = run_cli("explain", "baseline", "--what-if", "--classes", "5")
    assert r.returncode == 0, r.stderr
    assert "gap to the oracle labelling bound" in r.stdout
    assert "per scene type" in r.stdout and "best separator per slot" in r.stdout
    e = casdri.explain(casdri.load_cache(ROOT / "casdri" / "data" / "demo_cache"))
    assert f"gap {e.gap_db:+.3f} dB" in r.stdout
    policy = tmp_path / "p.yaml"
    policy.write_text(casdri.RefineParams(prob_gate=0.05).to_yaml("dcase2026t4"))
    r = run_cli("compare", policy, "baseline", "--n-boot", "300", "--top", "3")
    assert r.returncode == 0, r.stderr
    assert "probability of improvement" in r.stdout and "per class" in r.stdout
    m = re.search(r"better / worse / equal: (\d+) / (\d+) / (\d+) \(of the (\d+) both score\)",
                  r.stdout)  # the three add up to the soundscapes both policies score
    assert m and sum(map(int, m.groups()[:3])) == int(m.group(4)), r.stdout
    r = run_cli("compare", policy, "baseline", "--split", "dev", "--n-boot", "300")
    assert r.returncode == 0 and "1512 soundscapes compared" in r.stdout, r.stderr
    r = run_cli("explain", "--split", "test")
    assert r.returncode == 1 and "holds splits ['dev', 'eval']" in r.stderr
    r = run_cli("compare", "nonsense.txt", "baseline")
    assert r.returncode == 1 and "casdri compare: error:" in r.stderr


def test_cli_on_golden_folders(golden_dir, tmp_path):
    d = golden_dir / "dirs"
    ora = _oracle_estimate_folder(golden_dir, tmp_path)
    dev = ["--soundscapes", d / "soundscape", "--oracle", d / "oracle_target"]
    r = run_cli("explain", d / "estimate", "--oracle-estimate", ora, *dev, "--what-if")
    assert r.returncode == 0, r.stderr
    assert "system 4.543 dB" in r.stdout  # = casdri score on these folders
    r = run_cli("compare", ora, d / "estimate", *dev, "--n-boot", "200")
    assert r.returncode == 0, r.stderr
    assert "13 soundscapes compared" in r.stdout
    out = tmp_path / "est.csv"
    assert run_cli("score", "--soundscapes", d / "soundscape", "--oracle", d / "oracle_target",
                   "--estimate", d / "estimate", "--out", out, "--no-progress").returncode == 0
    r2 = run_cli("compare", ora, out, *dev, "--n-boot", "200")
    assert r2.returncode == 0, r2.stderr
    gain = [x for x in r.stdout.splitlines() if "gain A - B" in x]
    assert gain and gain == [x for x in r2.stdout.splitlines() if "gain A - B" in x]
    r = run_cli("explain", d / "estimate", "--oracle-estimate", ora)
    assert r.returncode == 2 and "needs --soundscapes and --oracle" in r.stderr  # usage
