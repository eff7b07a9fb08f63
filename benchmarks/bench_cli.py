"""Benchmark of command-line start-up: ``casdri --help``, ``casdri-cache --help`` and
``import casdri``, each in a fresh interpreter (what a user waits for before any work), and
with ``--search`` the whole warm ``casdri-search --stage gates`` on the demo cache (one run first
compiles or loads the kernels; the timed runs write into a temporary folder), with and without
its figures.

Prints the best and the median of ``--repeat`` runs per command (other processes on the
machine only ever add time; the best is the figure to compare with the 0.5 s goal of issue 13,
the median shows the load). A script printing figures, never a test.

Usage: ``python benchmarks/bench_cli.py [--repeat 7] [--root CHECKOUT] [--search]``
(``--root path/to/other/checkout`` measures another checkout with the same interpreter).
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


def wall_times(args: list[str], root: Path, repeat: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=root, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--root", type=Path, default=ROOT, help="checkout to measure")
    p.add_argument("--search", action="store_true",
                   help="also time the warm `casdri-search --stage gates` (goal: < 5 s)")
    args = p.parse_args()
    print(f"{args.root} ({args.repeat} runs each, fresh interpreter, wall seconds; load average "
          f"{os.getloadavg()[0]:.2f})")
    commands = dict(COMMANDS)
    with tempfile.TemporaryDirectory() as tmp:
        if args.search:
            for name, cmd in SEARCH.items():
                commands[name] = [*cmd, "--out", str(Path(tmp, name.strip().replace(" ", "_")))]
            wall_times(commands["search --stage gates"], args.root, 1)  # kernels compiled/loaded
        for name, cmd in commands.items():
            t = wall_times(cmd, args.root, args.repeat)
            print(f"  {name:<26} best {min(t):6.3f}  median {statistics.median(t):6.3f}")


if __name__ == "__main__":
    main()
