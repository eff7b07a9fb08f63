"""casdri-search usage errors: one line naming the help, exit 2 (the one CLI shell,
`casdri._cli`), no traceback (through a subprocess)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from search.casdri_problem import DEMO_MISSING, demo_cache_path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "search.cli", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, timeout=timeout)


@pytest.mark.parametrize("args, match", [
    (["--stage", "nope"], "argument --stage: invalid choice: 'nope'"),
    (["--stage", "all", "--folds", "0"], "argument --folds: expected an integer >= 1, got 0"),
    (["--stage", "all", "--trials", "x"], "argument --trials: expected an integer, got 'x'"),
    (["--stage", "all", "--margin", "-1"], "argument --margin: expected a finite margin >= 0"),
    (["--stage", "all", "--sampler", "grid"], "argument --sampler: invalid choice"),
    (["--stage", "all", "--bogus"], "unrecognized arguments: --bogus"),
    (["--stage", "gates", "--seed", "-1"], "argument --seed: expected an integer >= 0, got -1"),
    (["--repeats", "0"], "argument --repeats: expected an integer >= 1, got 0"),
    (["--inner-folds", "1"], "argument --inner-folds: expected an integer >= 2, got 1"),
    (["--alpha", "1.5"], "argument --alpha: expected a level in (0, 1), got '1.5'"),
    (["--accept", "vibes"], "argument --accept: invalid choice: 'vibes'"),
    (["--margin", "0.1"], "--margin applies to --accept margin"),
    (["--accept", "margin", "--min-changed", "3"], "apply to --accept evidence"),
    (["--resume"], "--resume adds trials to the studies of a --storage"),  # was ignored
    (["--auto-stages", "gates"], "--auto-stages and --inner-folds apply only to --stage auto"),
    (["--stage", "gates", "--inner-folds", "4"], "apply only to --stage auto"),  # both ignored
])
def test_usage_error_is_one_line_exit_2(args, match):
    p = run_cli(*args)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("casdri-search: error: ")
    assert match in lines[0] and lines[0].endswith("(see 'casdri-search --help')")
    assert "Traceback" not in p.stderr and p.stdout == ""


def test_out_empty_or_a_file_is_one_clear_line_before_any_work(tmp_path):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    work = tmp_path / "work"  # the user's current folder: nothing may appear in it
    work.mkdir()
    for out, match in (("", "--out is empty; name an output folder"),
                       (str(a_file), "exists and is not a folder")):
        p = run_cli("--stage", "gates", "--cache", str(tmp_path / "nope"), "--out", out,
                    cwd=work)
        assert p.returncode == 1 and "Traceback" not in p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("casdri-search: error: ")
        assert match in lines[0]
    assert a_file.read_text() == "x" and list(work.iterdir()) == []


def test_help_exits_zero():
    p = run_cli("--help")
    assert p.returncode == 0 and "optuna-dashboard" in p.stdout


def test_without_cache_uses_the_demo_cache_or_says_none_is_bundled(tmp_path):
    p = run_cli("--stage", "fusion", "--folds", "1", "--trials", "2", "--no-figures",
                "--out", str(tmp_path / "out"))
    if demo_cache_path() is None:
        assert p.returncode == 1
        assert p.stderr.strip() == f"casdri-search: error: {DEMO_MISSING}"
        assert "no demo cache is bundled" in DEMO_MISSING and "--cache" in DEMO_MISSING
    else:  # the bundled demo cache is used
        assert p.returncode == 0, p.stderr
        assert "baseline policy" in p.stdout and (tmp_path / "out" / "policy.yaml").is_file()


def test_demo_cache_lookup_switches_on_when_the_folder_ships(tmp_path, monkeypatch):
    import importlib.resources

    import casdri
    from casdri.synthetic import make_synthetic_cache
    from search import casdri_problem as cp

    pkg = tmp_path / "casdri"
    monkeypatch.setattr(importlib.resources, "files", lambda name: pkg)
    (pkg / "data").mkdir(parents=True)
    assert cp.demo_cache_path() is None
    with pytest.raises(cp.DemoCacheMissing, match="no demo cache is bundled"):
        cp.open_cache(None)
    make_synthetic_cache(pkg / "data" / "demo_cache", n_soundscapes=6, seed=2, load=False)
    assert cp.demo_cache_path() == casdri.demo_cache_path() == pkg / "data" / "demo_cache"
    path, cache = cp.open_cache(None)
    assert path == pkg / "data" / "demo_cache" and cache.n_soundscapes == 6


def test_missing_cache_dir_is_one_line(tmp_path):
    p = run_cli("--stage", "fusion", "--cache", str(tmp_path / "nope"), "--out", str(tmp_path))
    assert p.returncode == 1
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_import_search_leaves_torch_out():
    code = ("import sys, search, search.cli, search.run, search.report, search.engines; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_missing_cache_dir_is_one_line_when_workers_were_started(tmp_path):
    """A multi-stage search starts its chain workers with the command (`search._prestart`);
    an error before the chains stops them and is still one line."""
    p = run_cli("--stage", "all", "--jobs", "2", "--cache", str(tmp_path / "nope"), "--out",
                str(tmp_path))
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert "nope" in p.stderr


def test_prestarted_worker_builds_the_problem_the_chains_ask_for(tmp_path, monkeypatch):
    """`search._prestart._warm` (run here in-process) leaves the problem under the key a
    chain's `ProblemFactory` looks up, so the chain does not load the cache again. (It builds
    the problem only when the kernels are compiled; here they count as compiled whatever
    Numba's disk cache holds, so the test does not depend on the tests run before it.)"""
    from casdri.synthetic import make_synthetic_cache
    from search import _prestart, run
    from search import casdri_problem as cp
    checked = []
    monkeypatch.setattr(run, "search_kernels_cached",
                        lambda module, stages: checked.append(tuple(stages)) or True)
    path = make_synthetic_cache(tmp_path / "c", n_soundscapes=12, seed=3, load=False)
    cp._LOADED.clear()
    _prestart._warm(str(path) + "/", "refine", False, ("gates", "refine"))  # (CLI spelling)
    assert checked == [("gates", "refine")] and len(cp._LOADED) == 1
    warm = next(iter(cp._LOADED.values()))
    assert cp.ProblemFactory(path, "refine", False)() is warm
    cp._LOADED.clear()
    assert _prestart._warm(str(tmp_path / "nope"), "refine", False, ("gates",)) is None
    assert cp._LOADED == {}
    monkeypatch.setattr(run, "search_kernels_cached", lambda module, stages: False)
    compiled = []
    monkeypatch.setattr(_prestart, "_compile_chain_kernels",
                        lambda module, stages: compiled.append((module.NAME, stages)))
    _prestart._warm(str(path), "refine", False, ("gates",))  # first run: compiles, loads none
    assert compiled == [("refine", ("gates",))] and cp._LOADED == {}
    _prestart._warm(str(path), "refine", False, ("gates",), False)  # another worker: imports
    assert len(compiled) == 1 and cp._LOADED == {}
    answers = iter([False, True])  # compiled by this worker, the command's kernels ready: load
    monkeypatch.setattr(run, "search_kernels_cached", lambda module, stages: next(answers))
    _prestart._warm(str(path), "refine", False, ("gates",))
    assert len(compiled) == 2 and len(cp._LOADED) == 1
    cp._LOADED.clear()
    assert _prestart.prestart(str(path), "refine", False, ("gates",), 0) is None  # no workers


def test_joblib_parallel_runs_after_the_searchs_workers_in_one_process():
    """A notebook that searches with workers (`search.settings.worker_pool`) and then runs a
    ``joblib.Parallel`` (generating soundscapes, say) in the same process: the Parallel takes
    the executor over or replaces it. With an executor from loky's ``get_reusable_executor``
    it failed: ``'_ReusablePoolExecutor' object has no attribute '_temp_folder_manager'``."""
    from joblib import Parallel, delayed
    from search.settings import worker_pool
    pool = worker_pool(2)
    assert pool.submit(abs, -3).result() == 3
    assert Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]
    assert worker_pool(2).submit(abs, -5).result() == 5  # and the search's pool after it


def _writable_array_arrives(a):
    import numpy as np
    return type(a) is np.ndarray and a.flags.writeable and float(a.sum())


def test_the_searchs_workers_get_large_arrays_as_plain_writable_arrays():
    """A problem sent to the workers (``run_search`` on an in-memory cache) holds arrays of
    many MB: they arrive as ordinary writable arrays, as with loky's own executor, not as
    joblib's read-only memory maps in files kept until the process exits."""
    import numpy as np
    from search.settings import worker_pool
    big = np.ones(400_000)  # 3.2 MB
    assert worker_pool(1).submit(_writable_array_arrives, big).result() == 400_000.0
