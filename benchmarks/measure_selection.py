"""How well the search's held-out figures generalise, seed by seed, on a cache (demo default).

For each seed prints, per ``--stage`` given: the held-out gain over baseline with its 95% CI,
the tune gain, the optimism (tune − held-out) and, for ``auto``, what it kept; then the means
over seeds. A script printing figures (issue 12's acceptance figures), never a test.

Usage: ``python benchmarks/measure_selection.py [--stages gates all auto] [--seeds 0 1 2 3 4]
[--repeats 1] [--cache DIR] [--group-by auto] [--test-split auto|NAME|none]
[--policy refine]``
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", nargs="+", default=["gates", "all", "auto"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--cache", help="cache directory (default: the bundled demo cache)")
    ap.add_argument("--group-by", default="auto")
    ap.add_argument("--policy", default="refine", help="registered policy to tune")
    ap.add_argument("--test-split", default="auto", help="auto: the eval split when the cache has one")
    args = ap.parse_args(argv)

    from search.run import run_search

    rows = {s: [] for s in args.stages}
    for seed in args.seeds:
        for stage in args.stages:
            t0 = time.perf_counter()
            r = run_search(args.cache, stage=stage, seed=seed, repeats=args.repeats,
                           policy=args.policy,
                           group_by=args.group_by, test_split=args.test_split, n_boot=4000)
            h = r.heldout
            test = (f" test {r.test.gain.gain_db:+.3f} [{r.test.gain.gain_ci_db[0]:+.3f}, "
                    f"{r.test.gain.gain_ci_db[1]:+.3f}]" if r.test else "")
            kept = f" kept {'→'.join(r.stages) or '-'}" if stage == "auto" else ""
            rep = (f" repeats sd {np.std(r.repeat_gains_db, ddof=1):.3f}"
                   if args.repeats > 1 else "")
            print(f"seed {seed} {stage:<6} held-out {h.gain_db:+.3f} [{h.gain_ci_db[0]:+.3f}, "
                  f"{h.gain_ci_db[1]:+.3f}] tune {r.tune_gain_db:+.3f} optimism "
                  f"{r.tune_gain_db - h.gain_db:+.3f}{rep}{test}{kept} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
            rows[stage].append((h.gain_db, h.gain_ci_db[0] > 0, r.tune_gain_db - h.gain_db))
    for stage, v in rows.items():
        g = np.array(v, dtype=float)
        print(f"mean over seeds, {stage:<6}: held-out {g[:, 0].mean():+.3f} dB, CI excludes 0 on "
              f"{int(g[:, 1].sum())}/{len(g)} seeds, optimism {g[:, 2].mean():+.3f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
