"""Replay throughput on a DCASE-scale synthetic cache (a script that prints figures, not a test).

    python benchmarks/bench_replay.py [--cache DIR] [--settings 2000] [--threads 2]

Figures: cache size on disk, load and prepare time, policy evaluations per second (random
``refine`` settings over the whole search space, 1,512 soundscapes), CPU time per
(soundscape, setting) cell, and the plain-Python reference (tests/naive_replay.py) for scale.
Target (issue): >= 10,000 refine settings/s on 2 cores, cache <= 50 MB.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from casdri.cache import load_cache  # noqa: E402
from casdri.policies import params_class  # noqa: E402
from casdri.replay import prepare, replay, replay_matrix  # noqa: E402
from casdri.synthetic import make_synthetic_cache, random_settings  # noqa: E402


def timed(fn, repeat: int) -> tuple[float, float]:
    """Best wall and CPU seconds over ``repeat`` runs."""
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, help="existing cache (default: make a synthetic one)")
    ap.add_argument("--settings", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--naive", type=int, default=60, help="soundscapes for the naive reference")
    args = ap.parse_args(argv)
    import numba

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    tmp = None
    path = args.cache
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="casdri-bench-")
        path = Path(tmp.name) / "synthetic_1512"
        t = time.perf_counter()
        make_synthetic_cache(path, load=False)
        print(f"synthetic cache written     : {time.perf_counter() - t:8.2f} s")
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(f"cache size on disk          : {size / 1e6:8.2f} MB ({path})")
    load_cache(path)  # warm the file cache once
    wall, _ = timed(lambda: load_cache(path), 3)
    cache = load_cache(path)
    print(f"load_cache                  : {wall:8.3f} s  ({cache.n_soundscapes} soundscapes, "
          f"{len(cache.key_codes)} keys, {len(cache.stem_label)} stems)")
    t = time.perf_counter()
    for p in ("baseline", "refine", "oracle"):
        prepare(cache, p)
    print(f"prepare (tables, first use) : {time.perf_counter() - t:8.3f} s (incl. JIT load)")
    print(f"numba threads               : {numba.get_num_threads()}")
    S, n = cache.n_soundscapes, args.settings
    for policy in ("refine", "baseline", "oracle"):
        X = random_settings(cache, policy, n, np.random.default_rng(0))
        replay_matrix(cache, policy, X[:64])  # compile / warm
        replay_matrix(cache, policy, X[:64], parallel=False)
        wall, cpu = timed(lambda: replay_matrix(cache, policy, X), args.repeat)
        swall, scpu = timed(lambda: replay_matrix(cache, policy, X, parallel=False), 2)
        print(f"{policy:8s} replay_matrix     : {n / wall:10.0f} settings/s parallel, "
              f"{n / swall:8.0f} serial; {cpu / n / S * 1e9:6.1f} ns CPU per "
              f"(setting, soundscape)")
    X = random_settings(cache, "refine", n, np.random.default_rng(1))
    wall, _ = timed(lambda: replay(cache, "refine", X), args.repeat)
    print(f"refine   replay() facade    : {n / wall:10.0f} settings/s (dataset means)")
    sys.path.insert(0, str(ROOT / "tests"))
    from naive_replay import load_raw, naive_replay  # noqa: E402

    raw = load_raw(path)
    ids = list(cache.soundscape_ids[:args.naive])
    x = params_class("refine").decode(X[0], cache)
    p = {f: x.per_class(f, cache.label_set) for f in (
        "solo_keep_1ch", "solo_keep_4ch", "verify_thr", "drop_thr", "energy_gate_db",
        "prob_gate", "silence_thr")}
    p.update(w=x.w, verify_mode=x.verify_mode, select_separator=x.select_separator,
             stage=x.stage)
    wall, _ = timed(lambda: naive_replay(raw, "refine", p, ids), 1)
    print(f"naive Python reference      : {len(ids) / wall / S:10.3f} settings/s "
          f"({wall / len(ids) * 1e6:.0f} us per soundscape)")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
