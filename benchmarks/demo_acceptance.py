"""Held-out gain and optimism of ``--stage all`` and ``--stage gates`` on the bundled demo
cache, seeds 0-4, under an acceptance rule (issue 12). Prints a table; asserts nothing.

    PYTHONPATH=. python benchmarks/demo_acceptance.py [--rule evidence|margin] [--seeds 5]

(``PYTHONPATH=/path/to/older/tree`` with the default rule measures a tree without
`search.acceptance`, e.g. the ``main`` before it.)
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from search import casdri_problem as cp
from search.cv import ChainSettings
from search.run import search_problem


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rule", default="evidence", choices=["evidence", "margin"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--stages", default="gates,all")
    ap.add_argument("--n-boot", type=int, default=2000)
    a = ap.parse_args()
    _, dc = cp.open_cache(None)
    problem = cp.CasdriProblem(dc)
    base = problem.policy_values("baseline")
    oracle = problem.policy_values("oracle")
    x0 = problem.start_vector()
    rows = []
    import functools

    import search.cv as cv
    from search.stages import StageContext

    # until search.cv passes the rule through ChainSettings (--accept), bind it here; the
    # default (evidence) needs no binding, so the script also runs on a tree without the rule
    if a.rule != "evidence":
        cv.StageContext = functools.partial(StageContext, accept=a.rule)
    for seed in range(a.seeds):
        for stage in a.stages.split(","):
            t0 = time.perf_counter()
            r = search_problem(problem, x0, stage, problem.n_sources(), base, oracle, folds=5,
                               settings=ChainSettings(seed=seed), n_boot=a.n_boot)
            h = r.heldout
            kept = [f"{s.stage}:{s.tune_gain_db:+.3f}/{s.heldout_gain_db:+.3f}"
                    for _, s in r.stage_table().iterrows()]
            rows.append((seed, stage, r.tune_gain_db, h.gain_db, h.gain_ci_db,
                         r.tune_gain_db - h.gain_db))
            print(f"seed {seed} {stage:6s} tune {r.tune_gain_db:+.3f} held-out {h.gain_db:+.3f} "
                  f"CI [{h.gain_ci_db[0]:+.3f}, {h.gain_ci_db[1]:+.3f}] optimism "
                  f"{r.tune_gain_db - h.gain_db:+.3f}  ({time.perf_counter() - t0:.0f} s) "
                  f"stages tune/held {' '.join(kept)}", flush=True)
    print(f"\nrule={a.rule}")
    print("| stage | seed | tune gain dB | held-out gain dB | 95% CI | optimism dB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for seed, stage, tg, hg, ci, opt in rows:
        print(f"| {stage} | {seed} | {tg:+.3f} | {hg:+.3f} | [{ci[0]:+.3f}, {ci[1]:+.3f}] | "
              f"{opt:+.3f} |")
    for stage in a.stages.split(","):
        sel = [r for r in rows if r[1] == stage]
        print(f"mean {stage}: tune {np.mean([r[2] for r in sel]):+.3f} held-out "
              f"{np.mean([r[3] for r in sel]):+.3f} optimism {np.mean([r[5] for r in sel]):+.3f}")


if __name__ == "__main__":
    main()
