"""Benchmark of ``casdri-search`` (``--stage all`` or ``auto``) with 5-fold held-out validation.

Writes the 1,512-soundscape synthetic cache (`casdri.synthetic.make_synthetic_cache`, the size
of the DCASE 2026 Task 4 development test set) into a temporary folder (or reuses ``--cache``),
warms numba's compiled kernels once (reported apart: a fresh checkout compiles them once), then
runs the search as the CLI does (``run_search`` + ``write_outputs``) and prints the time and the
evaluations of each stage, summed over the fold chains and the final chain. Target: <= 60 s in
all on 2 cores. A script printing figures, never a test.

Usage: ``python benchmarks/bench_search.py [--stage all|auto|gates] [--repeats 1] [--storage URL]
[--accept evidence|margin]
[--soundscapes 1512] [--folds 5] [--trials 64] [--jobs auto] [--no-prestart] [--cache DIR]
[--out DIR]``
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import load_average  # noqa: E402

TARGET_S = 60.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", default="all", help="all, auto or one stage")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--accept", default="evidence", choices=("evidence", "margin"),
                    help="acceptance rule; 'margin' (0.05 dB) is the work of the search before "
                    "the evidence rule, for a like-for-like comparison with older commits")
    ap.add_argument("--storage", help="Optuna storage URL (default: in memory); a fresh file "
                    "each run, e.g. sqlite:///bench.db")
    ap.add_argument("--soundscapes", type=int, default=1512)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--jobs", type=lambda v: v if v == "auto" else int(v), default="auto",
                    help="chains in parallel processes, or auto (casdri-search's default: the "
                    "usable cores when a chain tunes more than one stage, else 1)")
    ap.add_argument("--no-prestart", action="store_true",
                    help="start the chain workers when the chains start, not with the command "
                    "(casdri-search starts them with the command: search._prestart)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", help="existing cache directory (default: write a synthetic one)")
    ap.add_argument("--out", help="output folder (default: a temporary one)")
    args = ap.parse_args(argv)

    from search._prestart import prestart
    from search.settings import SearchSettings, worker_pool

    plan = SearchSettings(stage=args.stage, folds=args.folds, repeats=args.repeats,
                          jobs=args.jobs).validate()
    n_workers = plan.n_workers()

    def start_workers(path):  # as casdri-search does, before its heavy imports
        if not args.no_prestart:
            prestart(str(path), "refine", False, plan.chains[0], n_workers)

    if args.cache:
        start_workers(args.cache)

    import numpy as np

    from casdri.cache import load_cache
    from casdri.synthetic import make_synthetic_cache
    from search.casdri_problem import CasdriProblem
    from search.report import write_outputs
    from search.run import run_search, summarize

    load_before = load_average()
    tmp = tempfile.TemporaryDirectory(prefix="bench-search-")
    cache_dir = Path(args.cache) if args.cache else Path(tmp.name) / "cache"
    t0 = time.perf_counter()
    if not args.cache:
        make_synthetic_cache(cache_dir, n_soundscapes=args.soundscapes, seed=args.seed,
                             load=False)
        start_workers(cache_dir)  # (after the imports here: the cache did not exist before)
    t_make = time.perf_counter() - t0

    t0 = time.perf_counter()  # numba compile/load of every kernel the search uses
    warm = CasdriProblem(load_cache(cache_dir))
    x = warm.start_vector()
    warm.values(x[None])
    warm.pair_values(x[None], np.array([0]))
    warm.change_points("energy_gate_db", 0, x, np.arange(warm.n_soundscapes))
    warm.policy_values("baseline")
    warm.policy_values("oracle")
    t_warm = time.perf_counter() - t0

    out = Path(args.out) if args.out else Path(tmp.name) / "out"
    t0 = time.perf_counter()
    result = run_search(cache_dir, stage=args.stage, folds=args.folds, trials=args.trials,
                        jobs=args.jobs, seed=args.seed, repeats=args.repeats,
                        storage=args.storage, accept=args.accept)
    t_search = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_outputs(result, out,  # the workers draw some figures, as in casdri-search
                  executor=worker_pool(n_workers) if n_workers else None)
    t_write = time.perf_counter() - t0
    total = t_search + t_write

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
          f"({_cores()} usable), python {platform.python_version()}")
    print(f"load average (1, 5, 15 min) before: {load_before}, after: {load_average()} "
          "(other jobs on a shared machine slow every figure below)")
    print(f"cache: {args.soundscapes} soundscapes, written in {t_make:.1f} s; kernel warm-up "
          f"(numba compile or cache load) {t_warm:.1f} s, not counted")
    print(f"search: --stage {args.stage} --accept {args.accept} --repeats {args.repeats} --folds {args.folds} "
          f"--trials {args.trials} --jobs {args.jobs} ({result.settings.jobs} process(es), "
          f"workers started {'with the chains' if args.no_prestart else 'with the command'}) "
          f"--storage {args.storage or 'memory'}")
    st = result.stage_table()
    print(f"{'stage':<10} {'engine':<8} {'seconds':>8} {'settings':>9} {'clip evals':>11} "
          f"{'tune gain dB':>13}")
    for _, r in st.iterrows():
        print(f"{r.stage:<10} {r.engine:<8} {r.seconds:8.2f} {int(r.settings):9d} "
              f"{int(r.clip_evals):11d} {r.tune_gain_db:+13.3f}")
    print(f"stage seconds are summed over {len(result.fold_results) + 1} chains "
          f"(CPU-time-like when --jobs > 1); --stage auto's inner selection is not in them")
    print(f"search wall {t_search:.1f} s + outputs {t_write:.1f} s = {total:.1f} s "
          f"(target <= {TARGET_S:.0f} s: {'met' if total <= TARGET_S else 'MISSED'}); "
          f"with the kernel warm-up {total + t_warm:.1f} s")
    print(f"evaluations in all: {int(st.settings.sum())} settings, "
          f"{int(st.clip_evals.sum())} soundscape-settings replayed")
    print("\n".join(summarize(result)))
    tmp.cleanup()
    return 0


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on this platform
        return os.cpu_count() or 1


if __name__ == "__main__":
    raise SystemExit(main())
