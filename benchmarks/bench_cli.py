"""Benchmark of command-line start-up: ``casdri --help``, ``casdri-cache --help`` and
``import casdri``, each in a fresh interpreter (what a user waits for before any work), and
with ``--search`` the whole warm ``casdri-search --stage gates`` on the demo cache (one run first
compiles or loads the kernels; the timed runs write into a temporary folder), with and without
its figures. ``--cold`` times the README's first search instead: ``casdri-search`` (the
default chain, ``--no-figures``) with an empty Numba cache folder each run (every kernel
compiles), then the same command warm.

Prints the best and the median of ``--repeat`` runs per command (other processes on the
machine only ever add time; the best is the figure to compare with the 0.5 s goal of issue 13,
the median shows the load). ``--against OTHER_CHECKOUT`` times every command on both checkouts,
alternating run by run (this machine's speed drifts within minutes), for a before/after in one
run. A script printing figures, never a test.

Usage: ``python benchmarks/bench_cli.py [--repeat 7] [--root CHECKOUT] [--against CHECKOUT]
[--search | --cold]`` (``--root path/to/other/checkout`` measures another checkout with the
same interpreter).
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
COMMANDS = {
    "casdri --help": ["-m", "casdri.cli", "--help"],
    "casdri-cache --help": ["-m", "cache_builder.cli", "--help"],
    "import casdri": ["-c", "import casdri"],
    "python (empty)": ["-c", "pass"],
}
SEARCH = {
    "search --stage gates": ["-m", "search.cli", "--stage", "gates"],
    "  the same, --no-figures": ["-m", "search.cli", "--stage", "gates", "--no-figures"],
}


COLD = {
    "search, empty Numba cache": ["-m", "search.cli", "--no-figures"],
    "search, warm": ["-m", "search.cli", "--no-figures"],
}
#: the commands timed with an empty Numba cache folder each run
COLD_NAMES = {"search, empty Numba cache"}


def wall_time(args: list[str], root: Path, cold: bool = False) -> float:
    """Seconds of one run of ``python ARGS`` in ``root`` (``cold``: with an empty Numba cache
    folder made for this run, else the user's)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    with tempfile.TemporaryDirectory() as fresh:
        if cold:
            env["NUMBA_CACHE_DIR"] = fresh
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=root, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - t0


def wall_times(args: list[str], roots: list[Path], repeat: int, cold: bool = False) -> dict:
    """``{root: [seconds]}``, the roots alternating run by run, in the order A B B A ... (so
    that neither always runs first)."""
    out = {r: [] for r in roots}
    for i in range(repeat):
        for r in (roots if i % 2 == 0 else roots[::-1]):
            out[r].append(wall_time(args, r, cold))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--root", type=Path, default=ROOT, help="checkout to measure")
    p.add_argument("--against", type=Path, help="a second checkout, timed alternately")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--search", action="store_true",
                      help="also time the warm `casdri-search --stage gates` (goal: < 5 s)")
    what.add_argument("--cold", action="store_true",
                      help="only the first `casdri-search` (empty Numba cache) and a warm one")
    args = p.parse_args()
    roots = [args.root.resolve()] + ([args.against.resolve()] if args.against else [])
    if len(set(roots)) < len(roots):
        p.error("--against names the checkout --root measures")
    print(f"{', '.join(map(str, roots))} ({args.repeat} runs each, fresh interpreter, wall "
          f"seconds; load average {os.getloadavg()[0]:.2f})")
    commands = {} if args.cold else dict(COMMANDS)
    with tempfile.TemporaryDirectory() as tmp:
        if args.search:
            for name, cmd in SEARCH.items():
                commands[name] = [*cmd, "--out", str(Path(tmp, name.strip().replace(" ", "_")))]
            for r in roots:  # kernels compiled/loaded
                wall_time(commands["search --stage gates"], r)
        if args.cold:
            for name, cmd in COLD.items():
                commands[name] = [*cmd, "--out", str(Path(tmp, "cold"))]
            for r in roots:
                wall_time(commands["search, warm"], r)
        for name, cmd in commands.items():
            times = wall_times(cmd, roots, args.repeat, cold=name in COLD_NAMES)
            for r, t in times.items():
                where = f"  [{r}]" if len(roots) > 1 else ""
                print(f"  {name:<26} best {min(t):6.3f}  median {statistics.median(t):6.3f}"
                      f"{where}")


if __name__ == "__main__":
    main()
