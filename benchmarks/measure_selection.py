"""How well the search's held-out figures generalise, seed by seed, on a cache (demo default).

For each seed prints, per ``--stage`` given: the held-out gain over baseline with its 95% CI,
the tune gain, the optimism (tune − held-out), the gain's two parts (the untuned start's and
tuning's, `search.result` conventions) held out and on the test split, and, for ``auto``, what
it kept; then the means over seeds and the largest gap between tuning's k-fold estimate and
what it realised on the test split. A script printing figures (issue 12's acceptance figures),
never a test.

``--purged N``: also N recording-purged splits of the tune split (the recordings of its
soundscapes cut in two halves at random; tuned on the soundscapes whose recordings all lie in
one half, scored on those whose recordings all lie in the other, and the other way round; a
soundscape without recordings joins a half at random), with the default chain, each beside the
same policy's gain on the test split: does a split that shares no recording predict the test
split better than the k-fold estimate?

Usage: ``python benchmarks/measure_selection.py [--stages gates all auto] [--seeds 0 1 2 3 4]
[--repeats 1] [--cache DIR] [--group-by auto] [--test-split auto|NAME|none]
[--policy refine] [--purged 3] [--accept evidence|margin]``
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
    ap.add_argument("--purged", type=int, default=0, help="recording-purged splits to measure")
    ap.add_argument("--accept", default="evidence", choices=["evidence", "margin"],
                    help="the acceptance rule of the searches")
    args = ap.parse_args(argv)

    from search.run import run_search

    rows = {s: [] for s in args.stages}
    for seed in args.seeds:
        for stage in args.stages:
            t0 = time.perf_counter()
            r = run_search(args.cache, stage=stage, seed=seed, repeats=args.repeats,
                           policy=args.policy,
                           group_by=args.group_by, test_split=args.test_split, n_boot=4000,
                           accept=args.accept)
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
            t = r.test
            print(f"    = start {r.start_gain.gain_db:+.3f} + tuning {r.tuning_gain.gain_db:+.3f} "
                  "held out" + (f"; on {t.split}: start {t.start.gain_db:+.3f} + tuning "
                                f"{t.tuning.gain_db:+.3f}" if t else ""), flush=True)
            rows[stage].append((h.gain_db, h.gain_ci_db[0] > 0, r.tune_gain_db - h.gain_db,
                                r.tuning_gain.gain_db, t.tuning.gain_db if t else np.nan))
    for stage, v in rows.items():
        g = np.array(v, dtype=float)
        print(f"mean over seeds, {stage:<6}: held-out {g[:, 0].mean():+.3f} dB, CI excludes 0 on "
              f"{int(g[:, 1].sum())}/{len(g)} seeds, optimism {g[:, 2].mean():+.3f} dB, tuning "
              f"{g[:, 3].mean():+.3f} dB held out / {g[:, 4].mean():+.3f} dB on the test split "
              f"(largest gap {np.abs(g[:, 3] - g[:, 4]).max():.3f} dB)")
    if args.purged:
        purged(args)
    return 0


def purged(args) -> None:
    """The ``--purged`` splits (module docstring)."""
    from casdri.stats import dataset_mean
    from search import casdri_problem as cp
    from search.cv import run_fold_chain
    from search.run import _tune_idx, resolve_test_split
    from search.settings import SearchSettings

    path, dc = cp.open_cache(args.cache, False)
    if dc.recordings is None:
        raise SystemExit("--purged: the cache's soundscapes carry no recordings")
    problem = cp.CasdriProblem(dc, args.policy)
    base = problem.policy_values("baseline")
    test_split = resolve_test_split(dc, None, args.test_split)
    test = np.flatnonzero(dc.split_mask(test_split)) if test_split else None
    tune = _tune_idx(dc, None, test_split)  # the soundscapes run_search tunes on
    tune = np.arange(dc.n_soundscapes) if tune is None else np.asarray(tune, np.int64)
    x0 = problem.start_vector(None)
    settings = SearchSettings().with_(folds=1, policy=args.policy).validate()
    recs = sorted({r for s in tune for r in (dc.recordings[s] or ())})
    out = []
    for seed in range(args.purged):
        rng = np.random.default_rng(seed)
        half = dict(zip(recs, rng.integers(0, 2, len(recs))))
        side = {}
        for s in tune:
            sides = {half[r] for r in (dc.recordings[s] or ())}
            side[s] = int(rng.integers(2)) if not sides else (sides.pop() if len(sides) == 1
                                                              else -1)
        halves = [np.array([s for s in tune if side[s] == h], np.int64) for h in (0, 1)]
        for a, b in ((0, 1), (1, 0)):
            mask = np.zeros(dc.n_soundscapes, bool)
            mask[halves[a]] = True
            x = run_fold_chain(problem, x0, mask, f"purged-{seed}-{a}", settings).x_end
            gains = []
            for idx in (halves[b], test):
                if idx is None:
                    gains.append(np.nan)
                    continue
                v = problem.values(x[None, :], idx)[0]
                gains.append(dataset_mean(v) - dataset_mean(base[idx]))
            out.append(gains)
            print(f"purged split {seed}, tuned on half {a} ({halves[a].size} soundscapes), "
                  f"scored on half {b} ({halves[b].size}): {gains[0]:+.3f} dB over baseline; "
                  f"on {test_split}: {gains[1]:+.3f} dB", flush=True)
    g = np.array(out)
    print(f"purged splits, mean: {g[:, 0].mean():+.3f} dB on the other half, "
          f"{np.nanmean(g[:, 1]):+.3f} dB on {test_split}")


if __name__ == "__main__":
    raise SystemExit(main())
