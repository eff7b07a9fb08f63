"""Benchmark of ``casdri-search`` on an Optuna storage against in memory (issue 13: sqlite within
3x of in-memory on the demo cache).

Runs the search on the bundled demo cache (or ``--cache``) as the CLI does (``run_search`` +
``write_outputs``) in this process, alternating the storages run by run so that load on a
shared machine falls on each alike, a fresh storage file each run. Numba's kernels are warmed
first (not counted). Prints, per storage, the best and the median search wall time of
``--repeat`` runs and the ratio of each to in memory (best over best: other processes only ever
add time, so the best runs are the figures to compare; the median shows the load), and the
time spent writing the storage (the rest is the search itself, the same on every storage).
With ``--cli`` it also times whole ``casdri-search`` processes (imports included). A script
printing figures, never a test.

Usage: ``python benchmarks/bench_storage.py [--stage gates] [--storages memory,sqlite,journal]
[--repeat 3] [--cli] [--cache DIR]``
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import load_average  # noqa: E402
TARGET_RATIO = 3.0


def _url(kind: str, folder: Path, n: int):
    return {"memory": None, "sqlite": f"sqlite:///{folder}/s{n}.db",
            "journal": f"journal://{folder}/j{n}.log"}[kind]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", default="gates", help="all, auto or one stage (default gates)")
    ap.add_argument("--storages", default="memory,sqlite,journal")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cli", action="store_true", help="also time whole casdri-search processes")
    ap.add_argument("--cache", help="cache directory (default: the bundled demo cache)")
    args = ap.parse_args(argv)
    kinds = [k.strip() for k in args.storages.split(",") if k.strip()]

    from search.casdri_problem import CasdriProblem, open_cache
    from search.report import write_outputs
    from search.run import run_search

    print(f"load average before: {load_average()}")
    t0 = time.perf_counter()
    warm = CasdriProblem(open_cache(args.cache, False)[1])
    x = warm.start_vector()
    warm.values(x[None])
    warm.policy_values("baseline")
    warm.policy_values("oracle")
    print(f"kernel warm-up {time.perf_counter() - t0:.1f} s (not counted)")

    # time spent copying the studies into the storage (a single worker's runs)
    spent = {"s": 0.0}

    def timed(fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent["s"] += time.perf_counter() - t
        return wrapper

    from search import engines
    engines._copy_study = timed(engines._copy_study)

    walls = {k: [] for k in kinds}
    writes = {k: [] for k in kinds}
    stages = {k: [] for k in kinds}  # stage seconds summed over the chains (what the CLI shows)
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        folder = Path(tmp)
        for n in range(args.repeat):
            for kind in kinds:
                spent["s"] = 0.0
                t0 = time.perf_counter()
                result = run_search(args.cache, stage=args.stage,
                                    storage=_url(kind, folder, n))
                write_outputs(result, folder / f"out-{kind}-{n}", figures=False)
                walls[kind].append(time.perf_counter() - t0)
                writes[kind].append(spent["s"] if kind != "memory" else 0.0)
                stages[kind].append(float(result.stage_table().seconds.sum()))
        print(f"--stage {args.stage} on {args.cache or 'the demo cache'}, {args.repeat} runs "
              f"each (alternating), search + outputs in this process, wall seconds:")
        base = min(walls[kinds[0]])
        for kind in kinds:
            w = walls[kind]
            ratio = min(w) / base
            note = ""
            if kind == "sqlite" and kinds[0] == "memory":
                note = f"  (target <= {TARGET_RATIO:.0f}x: {'met' if ratio <= TARGET_RATIO else 'MISSED'})"
            print(f"  {kind:<8} best {min(w):6.2f}  median {statistics.median(w):6.2f}  "
                  f"storage writes {statistics.median(writes[kind]):5.2f}  "
                  f"ratio to {kinds[0]} {ratio:4.2f}x{note}")
        print("stage seconds summed over the chains (the per-stage figures), best of the runs:")
        for kind in kinds:
            print(f"  {kind:<8} {min(stages[kind]):6.2f}  ratio to {kinds[0]} "
                  f"{min(stages[kind]) / min(stages[kinds[0]]):4.2f}x")
        if args.cli:
            print("whole `casdri-search` processes (imports included), wall seconds:")
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            cli = {k: [] for k in kinds}
            for n in range(args.repeat):
                for kind in kinds:
                    url = _url(kind, folder, 100 + n)
                    cmd = [sys.executable, "-m", "search.cli", "--stage", args.stage,
                           "--no-figures", "--out", str(folder / f"cli-{kind}-{n}")]
                    cmd += ["--storage", url] if url else []
                    cmd += ["--cache", args.cache] if args.cache else []
                    t0 = time.perf_counter()
                    subprocess.run(cmd, cwd=ROOT, env=env, check=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    cli[kind].append(time.perf_counter() - t0)
            for kind in kinds:
                w = cli[kind]
                print(f"  {kind:<8} best {min(w):6.2f}  median {statistics.median(w):6.2f}  "
                      f"ratio to {kinds[0]} {min(w) / min(cli[kinds[0]]):4.2f}x")
    print(f"load average after: {load_average()} (other jobs on a shared machine slow every figure)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
