"""The per-policy drivers on Numba's disk cache: policies compiled in other processes and
loaded together with one compiled here still run their own decisions (the drivers are
closures of one function: their cached symbol names must not collide, see
`casdri._kernels._jit`), and `kernels_cached` tells a cold cache from a warm one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
import numpy as np
from casdri.policies import register_policy
from casdri.replay import kernels_cached, replay_matrix, warm_up
from casdri.synthetic import make_synthetic_cache, random_settings
from tests.test_toy_policy import Top1
register_policy(Top1)
cache = make_synthetic_cache(n_soundscapes=12, seed=3)
out = {}
for name in sys.argv[1].split(","):
    before = kernels_cached(name)
    warm_up(cache, name)
    X = random_settings(cache, name, 5, np.random.default_rng(0))
    v = replay_matrix(cache, name, X, parallel=False).values
    out[name] = {"cached_before": before, "cached_after": kernels_cached(name),
                 "values": [[None if x != x else x for x in row] for row in v.tolist()]}
print(json.dumps(out))
"""


def _run(policies: str, cache_dir: Path) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", SCRIPT, policies], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_drivers_of_two_processes_loaded_together(tmp_path):
    a = _run("top1", tmp_path / "a")  # the toy alone, cold
    b = _run("oracle,baseline", tmp_path / "b")  # compiles two built-ins (cold) ...
    both = _run("oracle,baseline,top1", tmp_path / "b")  # ... loads them, compiles the toy
    again = _run("top1,oracle,baseline", tmp_path / "b")  # loads all three
    assert not a["top1"]["cached_before"] and a["top1"]["cached_after"]
    assert both["oracle"]["cached_before"] and not both["top1"]["cached_before"]
    assert all(again[k]["cached_before"] for k in again)
    for run in (both, again):
        for name, ref in (("top1", a), ("oracle", b), ("baseline", b)):
            got = np.array(run[name]["values"], dtype=float)
            want = np.array(ref[name]["values"], dtype=float)
            assert np.array_equal(got, want, equal_nan=True), name


PLACE = """
import json, sys
import numpy as np
from casdri.metric import snr_db
from casdri._jit_cache import cache_root
r = np.random.default_rng(0).standard_normal((2, 64))
print(json.dumps({"root": cache_root(), "snr": float(np.ravel(snr_db(r[:1] + 0.1 * r[1:], r[:1]))[0])}))
"""


def _compiled_files(folder: Path) -> set:
    return {p for p in folder.rglob("*") if p.suffix in (".nbi", ".nbc")}


def _place(env_extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(env_extra, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", PLACE], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_kernels_are_cached_in_the_user_cache_folder_never_in_the_package(tmp_path):
    # Files Numba writes into the package survive `pip uninstall` and turn the leftover
    # folder into a namespace package that shadows a later editable install.
    package = ROOT / "casdri"
    before = _compiled_files(package)
    out = _place({"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert Path(out["root"]) == tmp_path / "xdg" / "casdri" / "numba"
    assert _compiled_files(tmp_path / "xdg" / "casdri" / "numba"), "nothing cached"
    assert _compiled_files(package) == before
    # Numba's own override wins, as in Numba.
    out = _place({"XDG_CACHE_HOME": str(tmp_path / "xdg2"), "NUMBA_CACHE_DIR": str(tmp_path / "nb")})
    assert Path(out["root"]) == tmp_path / "nb"
    assert _compiled_files(tmp_path / "nb") and not (tmp_path / "xdg2").exists()
    assert _compiled_files(package) == before


@pytest.mark.slow
def test_an_unwritable_user_cache_falls_back_to_the_temp_folder(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    before = _compiled_files(ROOT / "casdri")
    want = _place({"XDG_CACHE_HOME": str(tmp_path / "ok")})["snr"]
    # a read-only home (a CI runner): the temp folder holds the kernels
    (tmp_path / "tmp").mkdir()
    assert _place({"XDG_CACHE_HOME": str(blocker), "TMPDIR": str(tmp_path / "tmp")})["snr"] == want
    assert _compiled_files(tmp_path / "tmp"), "nothing cached in the temp folder"
    # an unusable TMPDIR as well (Python then picks its next temp candidate): the same numbers
    got = _place({"XDG_CACHE_HOME": str(blocker), "TMPDIR": str(blocker)})["snr"]
    assert got == want
    assert _compiled_files(ROOT / "casdri") == before  # never a fallback into the package


def test_a_drivers_cache_key_follows_the_helpers_its_decision_inlines(monkeypatch):
    """A decision compiled into a policy's drivers inlines code from other modules of its
    package (``staged`` calls refine's decision, ``baseline`` inlines ``one_key``): an edit
    there must change the drivers' cache key (else a later process would load stale compiled
    code), an edit elsewhere must not."""
    import casdri._kernels as K
    from casdri.policies import _jit, get_policy
    from casdri.policies.refine import _kernel as refine_kernel
    staged = get_policy("staged").kernel_decide.py_func
    baseline = get_policy("baseline").kernel_decide.py_func
    assert refine_kernel.__file__ in K._sources(staged)
    assert _jit.__file__ in K._sources(baseline)
    assert refine_kernel.__file__ not in K._sources(baseline)
    before = {p: K._token(f) for p, f in (("staged", staged), ("baseline", baseline))}
    read = Path.read_bytes

    def edited(path):  # refine's kernel file as if edited
        data = read(path)
        return data + b"\n# edited\n" if str(path) == refine_kernel.__file__ else data

    monkeypatch.setattr(Path, "read_bytes", edited)
    assert K._token(staged) != before["staged"]
    assert K._token(baseline) == before["baseline"]


SEARCH = """
import json, sys
from pathlib import Path
from casdri.synthetic import make_synthetic_cache
from search.run import run_search
path = Path(sys.argv[1])
if not path.exists():
    make_synthetic_cache(path, n_soundscapes=20, seed=2, load=False)
lines = []
run_search(path, stage="all", folds=2, trials=2, n_boot=20, jobs=1, on_status=lines.append)
print(json.dumps([line for line in lines if line.startswith("scoring")]))
"""


@pytest.mark.slow
def test_a_second_search_does_not_say_it_compiles(tmp_path):
    """The search's status line says "compiling kernels" on the first run only: it checks the
    kernels a search runs (`search.run.search_kernels_cached`), not every driver of the
    policies (the search never runs the parallel pairs driver, so that check said
    "compiling" on every run)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), PYTHONPATH=str(ROOT))
    said = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", SEARCH, str(tmp_path / "cache")], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        said.append(json.loads(r.stdout.strip().splitlines()[-1]))
    assert said[0] == ["scoring baseline and oracle (compiling kernels: first run only, about "
                       "a minute)"]
    assert said[1] == ["scoring baseline and oracle"]


COMPILED = """
from casdri._jit_cache import is_cached
from casdri.policies import drivers, get_policy
from search import sweep

def compiled():
    own, base = drivers(get_policy("refine")), drivers(get_policy("baseline"))
    return [is_cached(own.ser), is_cached(own.pairs_ser), is_cached(own.trace),
            sweep.kernels_cached(), is_cached(base.par)]
"""

COMPILE_IN_WORKER = COMPILED + """
import json
from search import _prestart
before = compiled()
_prestart._compile_chain_kernels(get_policy("refine"), ("per-class", "refine"))
print(json.dumps([before, compiled()]))
"""

CHECK = COMPILED + """
import json, sys
import numpy as np
from casdri.synthetic import make_synthetic_cache
from search.casdri_problem import CasdriProblem
had = compiled()
problem = CasdriProblem(make_synthetic_cache(sys.argv[1], n_soundscapes=40, seed=5))
x, idx = problem.start_vector(), np.arange(40)
problem.values(x[None, :], idx)
problem.pair_values(x[None, :], idx[:1])
problem.change_points("energy_gate_db", 3, x, idx)
own = drivers(get_policy("refine"))
stats = [own.ser.stats, own.pairs_ser.stats, own.trace.stats]
print(json.dumps([had, [len(st.cache_hits) for st in stats],
                  [len(st.cache_misses) for st in stats]]))
"""


@pytest.mark.slow
def test_a_first_run_worker_compiles_what_the_chains_run_into_numbas_disk_cache(tmp_path):
    """On a first run a prestarted worker (`search._prestart._compile_chain_kernels`) compiles
    the kernels a sweeping chain runs on a synthetic cache; another process (the command, a
    chain) then loads them from the disk cache for another cache (same argument types), and
    compiles none of them again. The baseline's parallel driver is left to the command (it
    runs it before the chains)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), PYTHONPATH=str(ROOT))
    out = []
    for code in (COMPILE_IN_WORKER, CHECK):
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cache")], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    assert out[0] == [[False] * 5, [True, True, True, True, False]]
    had, hits, misses = out[1]
    assert had == [True, True, True, True, False]
    assert hits == [1, 1, 1] and misses == [0, 0, 0]  # loaded for another cache, not compiled
