"""Replay speed of the ``staged`` policy (issue 15) against ``refine`` on one DCASE-scale
synthetic cache with refinement stages and SED (a script that prints figures, not a test).

    python benchmarks/bench_staged.py [--soundscapes 1512] [--stages 3] [--separators 2]
                                      [--settings 2000]

Figures: cache build/load time; table preparation (refine's uniform tables; staged's tables
with the mixed-stage combos appended) in seconds and MB; settings/s (parallel and serial) of
refine on random refine settings, of staged on the same settings (staged fields off), and of
staged on random staged settings (per-class stages, re-classification, SED gates); CPU ns per
(setting, soundscape) cell.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import timed  # noqa: E402

from casdri.policies import RefineParams, StagedParams  # noqa: E402
from casdri.replay import prepare, replay_matrix  # noqa: E402
from casdri.synthetic import make_synthetic_cache, random_settings  # noqa: E402


def _mb(prep) -> float:
    tab = prep["tab"]
    return (sum(a.nbytes for a in tab[3:7]) + prep["slot_rows"].nbytes) / 2 ** 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--soundscapes", type=int, default=1512)
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--separators", type=int, default=2, choices=(1, 2))
    ap.add_argument("--settings", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    numba.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        cache = make_synthetic_cache(Path(tmp) / "c", n_soundscapes=a.soundscapes,
                                     n_stages=a.stages, sed_frames=32, seed=0,
                                     separators=("sepA", "sepB")[:a.separators])
        print(f"cache: {a.soundscapes} soundscapes, {a.separators} separator(s), {a.stages} "
              "stages, SED 32 frames, "
              f"{len(cache.stem_key)} stems, {len(cache.key_codes)} keys; made and loaded in "
              f"{time.perf_counter() - t:.1f} s")
        for policy in ("refine", "staged"):  # compile first (not timed)
            replay_matrix(cache, policy, random_settings(cache, policy, 2,
                                                         np.random.default_rng(0)),
                          mask=np.arange(2))
        for policy in ("refine", "staged"):
            cache.memo.clear()
            t = time.perf_counter()
            prep = prepare(cache, policy)
            print(f"prepare {policy:7s}: {time.perf_counter() - t:6.2f} s, tables "
                  f"{_mb(prep):8.1f} MB, {prep['tab'][4].shape[1]} combos")
        rng = np.random.default_rng(1)
        Xr = random_settings(cache, "refine", a.settings, rng)
        tail = StagedParams().encode(cache)[RefineParams.n_params(cache):]
        Xo = np.concatenate([Xr, np.tile(tail, (a.settings, 1))], axis=1)
        Xs = random_settings(cache, "staged", a.settings, rng)
        assert np.array_equal(replay_matrix(cache, "refine", Xr).values,
                              replay_matrix(cache, "staged", Xo).values, equal_nan=True)
        S = cache.n_soundscapes
        print(f"{'run':32s} {'par set/s':>10s} {'ser set/s':>10s} {'ns/cell':>8s}")
        for name, policy, X in (("refine", "refine", Xr), ("staged (staged fields off)", "staged",
                                                           Xo),
                                ("staged (random staged settings)", "staged", Xs)):
            w, _ = timed(lambda: replay_matrix(cache, policy, X), a.repeat)
            sw, sc = timed(lambda: replay_matrix(cache, policy, X, parallel=False), a.repeat)
            print(f"{name:32s} {len(X) / w:10.0f} {len(X) / sw:10.0f} "
                  f"{1e9 * sc / (len(X) * S):8.1f}")


if __name__ == "__main__":
    main()
