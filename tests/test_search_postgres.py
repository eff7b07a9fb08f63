"""Distributed studies: several casdri-search workers (subprocesses) on one shared study.

The PostgreSQL test needs a real server on loopback. ``CASDRI_TEST_POSTGRES_URL`` names one
(``. .ci/postgres`` starts one and exports it; CI sources that from ``.ci/run``). When the
variable is unset the test starts a throwaway server itself with the PostgreSQL binaries
(``initdb`` / ``pg_ctl`` from ``/usr/lib/postgresql/<major>/bin`` or the ``PATH``; as root it runs
them as the ``postgres`` user with ``runuser``) and stops it afterwards. It never skips: under
``CI`` an unset variable is a failure (the CI script should have started the server), and a
machine without PostgreSQL fails with a one-line hint.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import optuna
import pytest

from casdri.synthetic import make_synthetic_cache
from search.engines import make_storage, study_knobs

ROOT = Path(__file__).resolve().parents[1]
ENV = "CASDRI_TEST_POSTGRES_URL"


def _truthy(text) -> bool:
    return str(text or "").strip().lower() not in ("", "0", "false", "no")


def _pg_bindir():
    """Directory holding initdb and pg_ctl (newest Debian major first), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                   key=lambda d: [int(t) if t.isdigit() else 0
                                  for t in Path(d).parent.name.split(".")])
    for d in [*reversed(found), os.path.dirname(shutil.which("initdb") or "")]:
        if d and all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "pg_ctl")):
            return d
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_throwaway_server():
    """Start a trust-auth server on a free loopback port; returns ``(url, stop)``."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.fail(f"{ENV} is unset and no PostgreSQL binaries (initdb, pg_ctl) were found: "
                    "install Debian's postgresql or run `. .ci/postgres` first", pytrace=False)
    as_user = []
    root = tempfile.mkdtemp(prefix="casdri-pg-")
    os.chmod(root, 0o755)
    if os.geteuid() == 0:  # the server refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, user="postgres")
    data, port = os.path.join(root, "data"), _free_port()

    def call(*argv):
        p = subprocess.run([*as_user, *argv], capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            log = Path(root, "server.log")
            tail = log.read_text()[-2000:] if log.is_file() else ""
            shutil.rmtree(root, ignore_errors=True)
            pytest.fail(f"{Path(argv[0]).name} failed: {p.stderr.strip() or p.stdout.strip()}"
                        f"\n{tail}", pytrace=False)

    pg_ctl = os.path.join(bindir, "pg_ctl")
    call(os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
         "-E", "UTF8", "--no-locale")
    call(pg_ctl, "-D", data, "-l", os.path.join(root, "server.log"), "-w", "-t", "60",
         "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections=200 "
               "-c fsync=off", "start")

    def stop():
        subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)

    try:
        call(os.path.join(bindir, "createdb"), "-h", "127.0.0.1", "-p", str(port),
             "-U", "postgres", "casdri_test")
    except BaseException:
        stop()
        raise
    return f"postgresql://postgres@127.0.0.1:{port}/casdri_test", stop


@pytest.fixture(scope="module")
def postgres_url():
    """URL of a reachable PostgreSQL database (see the module docstring)."""
    url = os.environ.get(ENV)
    if url:
        yield url
        return
    if _truthy(os.environ.get("CI")):
        pytest.fail(f"{ENV} is not set under CI: .ci/run must start the test server with "
                    "`. .ci/postgres` (Debian's postgresql) before pytest", pytrace=False)
    url, stop = _start_throwaway_server()
    try:
        yield url
    finally:
        stop()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return make_synthetic_cache(tmp_path_factory.mktemp("dist") / "cache", n_soundscapes=60,
                                seed=9, load=False)


def _workers(cache_dir, storage, study, trials, out, extra=()):
    procs = [subprocess.Popen(
        [sys.executable, "-m", "search.cli", "--cache", str(cache_dir), "--storage", storage,
         "--study-name", study, "--trials", str(n), "--seed", "0", "--no-figures",
         "--resume", "--out", str(out / f"w{i}"), *extra],  # workers of one shared search
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i, n in enumerate(trials)]
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr
    return procs


def _check_studies(storage_url, study, stages, folds, trials):
    storage = make_storage(storage_url)
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    spaces = {}
    for fold in folds:
        for stage in stages:
            name = f"{study}.{fold}.{stage}"
            assert name in names, name
            st = optuna.load_study(study_name=name, storage=storage)
            got = st.get_trials(deepcopy=False)
            assert len(got) == sum(trials), (name, len(got))  # no trial lost
            assert all(t.state == optuna.trial.TrialState.COMPLETE for t in got), name
            assert all(set(t.params) == set(got[0].params) for t in got), name
            proposals = [tuple(sorted(t.params.items())) for t in got
                         if "fixed_params" not in t.system_attrs]  # not the enqueued start
            assert len(set(proposals)) == len(proposals), name  # workers draw their own
            spaces[name] = study_knobs(st)
    return spaces


@pytest.mark.postgres
def test_workers_share_a_postgres_study(cache_dir, tmp_path, postgres_url):
    url = postgres_url
    study = f"t{uuid.uuid4().hex[:10]}"
    make_storage(url)  # create the schema once
    workers = [7, 5, 4]  # three concurrent worker processes, each its own --trials
    _workers(cache_dir, url, study, workers, tmp_path, ["--stage", "fusion", "--folds", "1"])
    spaces = _check_studies(url, study, ["fusion"], ["final"], workers)
    # one worker alone sees the same search space (names and distributions)
    solo = f"{study}solo"
    _workers(cache_dir, url, solo, [3], tmp_path / "solo", ["--stage", "fusion", "--folds", "1"])
    single = _check_studies(url, solo, ["fusion"], ["final"], [3])
    assert spaces[f"{study}.final.fusion"] == single[f"{solo}.final.fusion"]
    from casdri.cache import load_cache
    from search.casdri_problem import CasdriProblem

    plan = CasdriProblem(load_cache(cache_dir)).plan["fusion"]  # the policy's search plan
    assert set(single[f"{solo}.final.fusion"]) == set(plan) >= {"w", "solo_keep_1ch"}


def test_two_workers_share_a_journal_chain_with_folds(cache_dir, tmp_path):
    url = f"journal://{tmp_path}/study.log"
    _workers(cache_dir, url, "chain", [4, 3], tmp_path, ["--stage", "all", "--folds", "2"])
    _check_studies(url, "chain", ["fusion", "verify", "gates"], ["fold-0", "fold-1", "final"],
                   [4, 3])
    # a worker with another fold split is refused, in one line
    p = subprocess.run(
        [sys.executable, "-m", "search.cli", "--cache", str(cache_dir), "--storage", url,
         "--study-name", "chain", "--stage", "fusion", "--folds", "2", "--seed", "7",
         "--trials", "2", "--resume", "--out", str(tmp_path / "w9")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 1 and "same cache, --seed and --folds" in p.stderr


@pytest.mark.postgres
def test_a_single_worker_on_postgres_equals_memory(cache_dir, postgres_url):
    """A single worker (no --resume) runs in memory and copies each study into PostgreSQL in
    one bulk transaction: the same policy as in memory, every trial stored as it ran."""
    import numpy as np

    from search.run import run_search

    study = f"t{uuid.uuid4().hex[:10]}"
    kw = dict(stage="gates", folds=2, trials=6, n_boot=100, seed=1)
    mem = run_search(cache_dir, **kw)
    pg = run_search(cache_dir, storage=postgres_url, study_name=study, **kw)
    assert np.array_equal(mem.x_final, pg.x_final)
    assert mem.heldout.gain_db == pg.heldout.gain_db
    storage = make_storage(postgres_url)
    names = [n for n in optuna.get_all_study_names(storage) if n.startswith(study + ".")]
    assert f"{study}.final.gates" in names and len(names) == 3  # two folds and the final
    got = optuna.load_study(study_name=f"{study}.final.gates", storage=storage).get_trials()
    assert [t.number for t in got] == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.value is not None
               for t in got)
    assert "tune_set" in optuna.load_study(study_name=f"{study}.final.gates",
                                           storage=storage).user_attrs
