"""Replay throughput on a DCASE-scale synthetic cache, today's kernels against the kernels of
main 05b1ac1 (kept in ``benchmarks/_old_kernels.py``), in one run (a script that prints
figures, not a test).

    python benchmarks/bench_replay.py [--cache DIR] [--settings 2000] [--threads 2]

Figures: cache size on disk, load and prepare time; per policy and per soundscape count (300
and all 1,512): settings/s parallel and serial, CPU ns per (setting, soundscape) cell, old and
new kernels called alike (inputs built beforehand; blocks sized by `casdri.replay`'s rule,
each kernel with its own cap: 256 settings old, 1,024 new), and ``replay_matrix`` (the facade
over the new kernel: it also checks the settings), their values checked bit-equal first; the
plain-Python reference (tests/naive_replay.py) for scale.
The search's paths (refine, one thread, kernels called directly, old and new bit-equal): one
setting on every soundscape (what a coordinate move replays; the start setting, and random
settings one at a time), (setting, soundscape) pairs
(what an exact sweep replays: each affected soundscape at its own change points), and one
exact 1-D sweep of a per-class threshold (`search.moves`' sparse path against replaying every
interval on every soundscape), as settings/s equivalent.
Target (issue 16): >= 50,000 refine settings/s at 1,512 soundscapes on 2 cores.
Other processes on a shared machine slow every figure: the load average is printed.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import _old_kernels as old  # noqa: E402
from _timing import timed  # noqa: E402
from casdri._kernels import BLOCK  # noqa: E402
from casdri.cache import load_cache  # noqa: E402
from casdri.policies import drivers, get_policy, params_class  # noqa: E402
from casdri.replay import block_size, prepare, replay, replay_matrix  # noqa: E402
from casdri.synthetic import make_synthetic_cache, random_settings  # noqa: E402
from naive_replay import load_raw, naive_replay  # noqa: E402
from search.casdri_problem import CasdriProblem  # noqa: E402
from search.moves import _sparse  # noqa: E402
from search.objective import Objective, with_values  # noqa: E402

OLD_ID = {"baseline": old.POLICY_BASELINE, "refine": old.POLICY_REFINE,
          "oracle": old.POLICY_ORACLE}
#: the encoded fields the old kernel reads, in its order
OLD_FIELDS = {"baseline": ("tagger", "separator", "stage"),
              "oracle": ("select_separator", "stage"),
              "refine": ("w", "solo_keep_1ch", "solo_keep_4ch", "verify_thr", "drop_thr",
                         "energy_gate_db", "prob_gate", "silence_thr", "verify_mode",
                         "select_separator", "stage")}


def old_inputs(policy: str, prep: dict) -> tuple:
    """``(pi, pf)`` of ``prep`` in the old kernel's layout: its refine ``pf`` holds the four
    probability kinds of every instance as four float64 blocks (p_4ch of each instance, then
    p_1ch, s_4ch, s_1ch), where today's holds one instance's four values side by side in float32
    (`casdri.policies.refine._kernel`; the same values)."""
    pi, pf = prep["policy"]
    if policy == "refine":
        pf = np.ascontiguousarray(np.concatenate([pf[:, k::4] for k in range(4)], axis=1),
                                  dtype=np.float64)
    return pi, pf


def interleaved(fns: dict, repeat: int) -> dict:
    """``{key: (best wall, best CPU seconds)}`` of each function, run in turn ``repeat`` times
    (old and new alternate, so a burst of load on a shared machine hits both)."""
    best = {k: (np.inf, np.inf) for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            wall, cpu = timed(fn, 1)
            best[k] = (min(best[k][0], wall), min(best[k][1], cpu))
    return best


def _run(kernel, max_block: int, X, sidx, parallel: bool, *args):
    """``values (n, len(sidx))`` of a dense driver, called alike for the old and the new kernel:
    buffers allocated here, blocks sized by `casdri.replay.block_size` (at most ``max_block``
    settings). ``args``: the driver's inputs between ``sidx`` and ``val``."""
    n = X.shape[0]
    val = np.empty((n, len(sidx)), np.float64)
    lab = np.zeros((1, len(sidx), 3), np.int64)
    tot = np.zeros((n, 4), np.int64)
    err = np.zeros((n, 3), np.int64)
    kernel(X, sidx, *args, val, lab, False, tot, err, block_size(n, parallel, max_block))
    return val


def old_settings(cache, policy, X) -> np.ndarray:
    """``X`` in the old kernel's column layout (its fields only, in its order)."""
    lay = params_class(policy).layout(cache)
    return np.ascontiguousarray(X[:, np.concatenate([lay[f] for f in OLD_FIELDS[policy]])])


def old_replay(cache, policy, Xo, sidx, parallel, inputs=None):
    """``values (n, len(sidx))`` of the old kernel on settings ``Xo`` in its own layout
    (`old_settings`); ``inputs``: `old_inputs` built beforehand (timed calls pass them, as
    the new kernel's inputs are built once per cache too)."""
    prep = prepare(cache, policy)
    kern = old.replay_par if parallel else old.replay_ser
    return _run(lambda *a: kern(OLD_ID[policy], *a), old.BLOCK, Xo, sidx, parallel,
                *(inputs or old_inputs(policy, prep)), prep["tab"], prep["dims"])


def new_replay(cache, policy, X, sidx, parallel):
    """``values (n, len(sidx))`` of today's kernel called as `old_replay` calls the old one,
    without the facade's checks of the settings (`replay_matrix` is timed apart)."""
    prep = prepare(cache, policy)
    drv = drivers(get_policy(policy))
    return _run(drv.par if parallel else drv.ser, BLOCK, X, sidx, parallel, *prep["policy"],
                prep["off"], prep["tab"], prep["dims"])


@numba.njit(cache=True)
def _old_pairs(pid, X, sidx, pi, pf, tab, dims, val, err):  # pragma: no cover - jitted
    """The pairs driver of main 05b1ac1: the old block, called once per pair."""
    lab = np.zeros((1, 1, 3), np.int64)
    dec = np.zeros((1, 4), np.int64)
    tot = np.zeros((X.shape[0], 4), np.int64)
    for i in range(X.shape[0]):
        old._block(pid, X, i, i + 1, sidx[i:i + 1], pi, pf, tab, dims, val, lab, False, tot, err,
                   dec, False)


def search_paths(cache, repeat: int) -> None:
    """The replays a search makes (refine, one thread), old and new kernels; then one sweep."""
    prep = prepare(cache, "refine")
    pi, pf = prep["policy"]
    pfo = old_inputs("refine", prep)[1]
    drv = drivers(get_policy("refine"))
    problem = CasdriProblem(cache)
    x = problem.start_vector()
    lay = params_class("refine").layout(cache)
    cols = np.concatenate([lay[f] for f in OLD_FIELDS["refine"]])
    S = cache.n_soundscapes
    print(f"search paths (refine, 1 thread, kernels called directly; load average "
          f"{os.getloadavg()[0]:.2f}):")
    # one setting on every soundscape, as a coordinate move replays it: the start setting
    # 50 times, and 50 random settings (new fields off) one at a time
    sidx = np.arange(S, dtype=np.int64)
    reps = 50
    Xr = random_settings(cache, "refine", reps, np.random.default_rng(3))
    for fld in set(lay) - set(OLD_FIELDS["refine"]):  # fields the old kernel lacks: off
        Xr[:, lay[fld]] = x[lay[fld]]
    val = np.empty((1, S), np.float64)
    lab = np.zeros((1, S, 3), np.int64)
    tot = np.zeros((1, 4), np.int64)
    err = np.zeros((1, 3), np.int64)
    for what, X1 in (("start setting", np.repeat(x[None, :], reps, axis=0)),
                     ("random settings", Xr)):
        X1o = np.ascontiguousarray(X1[:, cols])
        outs, fns = {}, {}
        for name in ("old", "new"):
            if name == "old":
                def f(i):
                    old.replay_ser(old.POLICY_REFINE, X1o[i:i + 1], sidx, pi, pfo, prep["tab"],
                                   prep["dims"], val, lab, False, tot, err, 8)
            else:
                def f(i):
                    drv.ser(X1[i:i + 1], sidx, pi, pf, prep["off"], prep["tab"], prep["dims"],
                            val, lab, False, tot, err, 8)
            got = []
            for i in range(reps):
                f(i)
                got.append(val.copy())
            outs[name] = np.concatenate(got)
            fns[name] = (lambda f: lambda: [f(i) for i in range(reps)])(f)
        assert np.array_equal(outs["old"], outs["new"], equal_nan=True), \
            "one-setting values differ"
        for name, (_, cpu) in interleaved(fns, repeat).items():
            print(f"  one setting x {S} soundscapes, {what:15s} {name}: "
                  f"{cpu / reps / S * 1e9:7.1f} ns CPU/cell ({reps * S / max(cpu, 1e-12):,.0f} "
                  "cells/s)")
    # pairs: random settings on random soundscapes, as an exact sweep replays them
    rng = np.random.default_rng(2)
    n = 20000
    Xp = random_settings(cache, "refine", n, rng)
    for fld in set(lay) - set(OLD_FIELDS["refine"]):  # fields the old kernel lacks: off
        Xp[:, lay[fld]] = x[lay[fld]]
    Xpo = np.ascontiguousarray(Xp[:, cols])
    ps = np.sort(rng.integers(0, S, n)).astype(np.int64)
    fns = {}
    for name in ("old", "new"):
        val = np.empty((n, 1), np.float64)
        err = np.zeros((n, 3), np.int64)
        if name == "old":
            def f():
                _old_pairs(old.POLICY_REFINE, Xpo, ps, pi, pfo, prep["tab"], prep["dims"], val,
                           err)
        else:
            def f():
                drv.pairs_ser(Xp, ps, pi, pf, prep["off"], prep["tab"], prep["dims"], val, err)
        f()
        outs[name] = val.copy()
        fns[name] = f
    assert np.array_equal(outs["old"], outs["new"], equal_nan=True), "pair values differ"
    for name, (_, cpu) in interleaved(fns, repeat).items():
        print(f"  {n} (setting, soundscape) pairs {name}: {cpu / n * 1e9:7.1f} ns CPU/pair")
    # one exact 1-D sweep (sparse: the affected soundscapes at their change points) against
    # replaying every interval on every soundscape
    obj = Objective(problem, np.ones(S, bool))
    param = problem.params["drop_thr"]
    cps = {c: problem.change_points(param.name, c, x, obj.idx) for c in range(cache.n_classes)}
    c = max(cps, key=lambda k: len(np.unique(cps[k][1])))
    res = _sparse(obj, x, param, c, cps[c])
    wall, cpu = timed(lambda: _sparse(obj, x, param, c, cps[c]), repeat)
    m = len(res.points)
    print(f"  exact sweep of {param.name}[{cache.meta.classes[c]}]: {m} intervals, "
          f"{len(np.unique(cps[c][0]))} of {S} soundscapes affected, {res.n_evaluations} pairs "
          f"replayed: {wall * 1e3:.1f} ms = {m / wall:,.0f} settings/s equivalent")
    Xd = with_values(x, param, res.points, c)
    wall_d, _ = timed(lambda: replay_matrix(cache, "refine", Xd, parallel=False), repeat)
    print(f"  the same intervals replayed on every soundscape (dense, 1 thread): "
          f"{wall_d * 1e3:.1f} ms = {m / wall_d:,.0f} settings/s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, help="existing cache (default: make a synthetic one)")
    ap.add_argument("--settings", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--naive", type=int, default=60, help="soundscapes for the naive reference")
    args = ap.parse_args(argv)
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
    n = args.settings
    print(f"{'policy':8s} {'S':>5s} {'kernel':6s} {'par set/s':>10s} {'ser set/s':>10s} "
          f"{'ns CPU/cell':>11s}  (same {n} random settings, new fields off; values bit-equal "
          "old == new)")
    for policy in ("refine", "baseline", "oracle"):
        X = random_settings(cache, policy, n, np.random.default_rng(0))
        lay, x0 = params_class(policy).layout(cache), params_class(policy)().encode(cache)
        for f in set(lay) - set(OLD_FIELDS[policy]):  # fields the old kernel lacks: off
            X[:, lay[f]] = x0[lay[f]]
        for S in (300, cache.n_soundscapes):
            sidx = np.arange(min(S, cache.n_soundscapes), dtype=np.int64)
            Xo, inputs = old_settings(cache, policy, X), old_inputs(policy, prepare(cache, policy))
            new_v = replay_matrix(cache, policy, X, mask=sidx).values
            old_v = old_replay(cache, policy, Xo, sidx, True, inputs)
            same = np.array_equal(new_v, old_v, equal_nan=True)
            assert same, f"{policy}: new kernel differs from the old one"
            assert np.array_equal(new_replay(cache, policy, X, sidx, True), new_v,
                                  equal_nan=True)
            runs = {
                "old": (lambda: old_replay(cache, policy, Xo, sidx, True, inputs),
                        lambda: old_replay(cache, policy, Xo, sidx, False, inputs)),
                "new": (lambda: new_replay(cache, policy, X, sidx, True),
                        lambda: new_replay(cache, policy, X, sidx, False)),
                "facade": (lambda: replay_matrix(cache, policy, X, mask=sidx),
                           lambda: replay_matrix(cache, policy, X, mask=sidx, parallel=False))}
            best = interleaved({(name, kind): fn for name, fns in runs.items()
                                for kind, fn in zip(("par", "ser"), fns)}, args.repeat)
            for name in runs:
                (wall, cpu), (swall, _) = best[(name, "par")], best[(name, "ser")]
                print(f"{policy:8s} {len(sidx):5d} {name:6s} {n / wall:10.0f} {n / swall:10.0f} "
                      f"{cpu / n / len(sidx) * 1e9:11.1f}")
    search_paths(cache, args.repeat)
    X = random_settings(cache, "refine", n, np.random.default_rng(1))
    wall, _ = timed(lambda: replay(cache, "refine", X), args.repeat)
    print(f"refine   replay() facade    : {n / wall:10.0f} settings/s (dataset means, 1,512)")
    raw = load_raw(path)
    ids = list(cache.soundscape_ids[:args.naive])
    x = params_class("refine").decode(X[0], cache)
    p = {f: x.per_class(f, cache.label_set) for f, r in zip(
        x.field_index(), x.search_space(cache)) if r.per_class}
    p.update({f: getattr(x, f) for f, r in zip(x.field_index(), x.search_space(cache))
              if not r.per_class})
    wall, cpu = timed(lambda: naive_replay(raw, "refine", p, ids), 1)
    print(f"naive Python reference      : {len(ids) / wall / cache.n_soundscapes:10.3f} "
          f"settings/s at {cache.n_soundscapes} ({cpu / len(ids) * 1e9:.0f} ns CPU per cell)")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
