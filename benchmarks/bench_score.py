"""Benchmark of folder scoring: ``score_folders``, the ``casdri score`` command, the metric alone,
and merely reading the same files with soundfile (serial and parallel).

Writes a synthetic DCASE folder set (``make_bench_folder``: 10 s, 32 kHz, 4-channel FLOAT
soundscapes, 1-3 references with repeated classes, 3 stems each) into a temporary folder, warms
the page cache, and prints the best of ``--repeat`` runs of each figure (other processes on the
machine only ever add time). A script printing figures, never a test.

Reference figures of the official code (DCASE 2026 Task 4 baseline, torch CPU, same clip
shape): metric 8.7 ms per 10 s clip; ``evaluate.py`` folder mode 0.21 s per soundscape.

Usage: ``python benchmarks/bench_score.py [--n 200] [--repeat 3] [--dir DIR] [--keep]``
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
from joblib import Parallel, delayed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

import casdri  # noqa: E402
from casdri.folders import ReadBuffers, read_soundscape, scan_folders  # noqa: E402
from casdri.scoring import _clip_snr, _plan, default_jobs, score_folders  # noqa: E402
from make_bench_folder import make_bench_folder  # noqa: E402

OFFICIAL_METRIC_MS = 8.7
OFFICIAL_EVALUATOR_S = 0.21


def _cpu() -> float:
    own = time.process_time()  # every thread of this process
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # finished subprocesses
    return own + kids.ru_utime + kids.ru_stime


def best(fn, repeat):
    """``(wall, cpu)`` seconds of the fastest of ``repeat`` runs (cpu: this process and its
    finished subprocesses; loky workers are not counted)."""
    runs = []
    for _ in range(repeat):
        c, t = _cpu(), time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t, _cpu() - c))
    return min(runs)


def _read_files(paths):
    for p in paths:
        sf.read(p, dtype="float32")


def _snr_path(plan, c):
    snr, snr_mix = _clip_snr(plan, c, check_finite=False)
    return casdri.capi_sdri_from_snr(plan.files.est_labels, plan.files.ref_labels, snr,
                                     snr_mix)


def _bench_metric(files, repeat, report):
    """The metric alone on clips held in memory (more than the caches hold)."""
    clips = [read_soundscape(f) for f in files]
    plans = [_plan(f) for f in files]
    grouped = [read_soundscape(p.files) for p in plans]  # the read order of score_folders
    m = len(clips)
    args = [(c.est_labels, c.est_wavs, c.ref_labels, c.ref_wavs, c.mixture) for c in clips]
    casdri.capi_sdri(*args[0])  # compile / load the kernel
    report("metric: casdri.capi_sdri per clip, serial", best(
        lambda: [casdri.capi_sdri(*x) for x in args], repeat), m)
    report("metric: capi_sdri per clip, 2 threads (2 cores)", best(
        lambda: Parallel(n_jobs=2, backend="threading")(
            delayed(casdri.capi_sdri)(*x) for x in args), repeat), m)
    report("metric: score_folders path (needed SNRs only + rule), serial", best(
        lambda: [_snr_path(p, c) for p, c in zip(plans, grouped)], repeat), m)
    report("metric: score_folders path, 2 threads (2 cores)", best(
        lambda: Parallel(n_jobs=2, backend="threading")(
            delayed(_snr_path)(p, c) for p, c in zip(plans, grouped)), repeat), m)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="soundscapes (default 200)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", help="reuse or create the folder set here (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder set")
    ap.add_argument("--metric-clips", type=int, default=60, help="clips held in memory")
    a = ap.parse_args()

    root = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="casdri_bench_"))
    try:
        if not (root / "soundscape").is_dir():
            t = time.perf_counter()
            make_bench_folder(root, a.n)
            print(f"wrote {a.n} soundscapes to {root} in {time.perf_counter() - t:.1f} s")
        dirs = root / "soundscape", root / "oracle_target", root / "estimate"
        files = scan_folders(*dirs)
        n = len(files)
        per_clip = [[f.mixture_path, *(s.path for s in f.refs), *(s.path for s in f.ests)]
                    for f in files]
        mb = sum(p.stat().st_size for ps in per_clip for p in ps) / 2**20
        for ps in per_clip:  # warm the page cache
            for p in ps:
                p.read_bytes()
        print(f"{n} soundscapes, {sum(map(len, per_clip))} files, {mb:.0f} MiB; "
              f"{os.cpu_count()} CPUs, default jobs {default_jobs()}, best of {a.repeat}\n")
        rows = []

        print(f"{'per soundscape (metric: per clip), best of ' + str(a.repeat):<66}"
              f"{'wall':>9}{'CPU':>10}")

        def report(what, seconds, unit=n):
            wall, cpu = seconds
            rows.append((what, wall / unit * 1e3))
            cpu_ms = "n/a" if "loky" in what else f"{cpu / unit * 1e3:.2f} ms"
            print(f"{what:<66}{wall / unit * 1e3:6.2f} ms{cpu_ms:>10}", flush=True)

        # -- reading only --------------------------------------------------------------
        report("read only: soundfile, serial", best(
            lambda: [_read_files(ps) for ps in per_clip], a.repeat))
        for jobs in (2, 4):
            report(f"read only: soundfile, joblib threads x{jobs}", best(
                lambda: Parallel(n_jobs=jobs, backend="threading")(
                    delayed(_read_files)(ps) for ps in per_clip), a.repeat))
        report("read only: soundfile, joblib loky x2", best(
            lambda: Parallel(n_jobs=2, backend="loky")(
                delayed(_read_files)(ps) for ps in per_clip), a.repeat))
        buffers = ReadBuffers()
        report("read + check: casdri read_soundscape, serial", best(
            lambda: [read_soundscape(f, buffers=buffers) for f in files], a.repeat))
        script = ("import sys, soundfile as sf; from pathlib import Path; "
                  "from joblib import Parallel, delayed; "
                  "Parallel(n_jobs=2, backend='threading')(delayed(sf.read)(p, dtype='float32') "
                  "for d in sys.argv[1:] for p in sorted(Path(d).iterdir()))")
        report("read-only command (python + soundfile + joblib x2, subprocess)", best(
            lambda: subprocess.run([sys.executable, "-c", script, *map(str, dirs)], check=True),
            a.repeat))

        _bench_metric(files[: a.metric_clips], a.repeat, report)

        # -- the whole thing -------------------------------------------------------------
        for jobs, backend in ((1, "threading"), (2, "threading"), (4, "threading"),
                              (2, "loky")):
            report(f"score_folders jobs={jobs} {backend}", best(
                lambda: score_folders(*dirs, jobs=jobs, backend=backend), a.repeat))
        cmd = [sys.executable, "-m", "casdri.cli", "score", "--no-progress",
               "--soundscapes", str(dirs[0]), "--oracle", str(dirs[1]), "--estimate",
               str(dirs[2])]
        run = lambda c: subprocess.run(c, cwd=ROOT, check=True, capture_output=True)  # noqa
        report("CLI `casdri score` (subprocess, imports included)", best(
            lambda: run(cmd), a.repeat))
        report("CLI fixed cost: imports only", best(
            lambda: run([sys.executable, "-c", "import casdri.cli, casdri.scoring"]),
            a.repeat))
        warm = ("import numpy as np, casdri.cli, casdri.scoring; "
                "casdri.snr_db(np.ones((1, 8), np.float32), np.ones((1, 8), np.float32))")
        report("CLI fixed cost: imports + first kernel call (numba cache load)", best(
            lambda: run([sys.executable, "-c", warm]), a.repeat))

        d = dict(rows)
        read_best = min(v for k, v in d.items() if k.startswith("read only"))
        score_best = min(v for k, v in d.items() if k.startswith("score_folders"))
        cli = d["CLI `casdri score` (subprocess, imports included)"]
        fixed = d["CLI fixed cost: imports + first kernel call (numba cache load)"]
        read_cmd = d["read-only command (python + soundfile + joblib x2, subprocess)"]
        metric = min(d["metric: capi_sdri per clip, 2 threads (2 cores)"],
                     d["metric: casdri.capi_sdri per clip, serial"])
        print(f"\nscore_folders / fastest read-only (in process): {score_best / read_best:6.2f}x"
              "   (target <= 1.5x)")
        print(f"CLI / read-only command (both subprocesses):    {cli / read_best:6.2f}x vs "
              f"reads in process, {cli / read_cmd:.2f}x vs the read-only command")
        print(f"CLI per soundscape without its fixed cost:      {cli - fixed:6.2f} ms "
              f"(fixed {fixed * n / 1e3:.2f} s per run)")
        print(f"official evaluator / CLI:                       "
              f"{OFFICIAL_EVALUATOR_S * 1e3 / cli:6.1f}x   (target >= 20x; official "
              f"{OFFICIAL_EVALUATOR_S * 1e3:.0f} ms/soundscape)")
        print(f"metric (casdri.capi_sdri) per clip, best:       {metric:6.2f} ms (target <= 1.7 "
              f"ms; official {OFFICIAL_METRIC_MS} ms); score_folders path "
              f"{d['metric: score_folders path (needed SNRs only + rule), serial']:.2f} ms")
    finally:
        if not a.dir and not a.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
