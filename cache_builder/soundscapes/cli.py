"""``casdri-cache generate``: DCASE 2026 Task 4-format soundscapes from real recordings.

Usage::

    casdri-cache generate --sources POOL --out DIR [--train N] [--dev N] [--test N]
                          [--seed S] [--name-prefix soundscape] [--duration-s 10] [--jobs N] [--stems] [--overwrite]
                          [--rules official|v1] [--oracle-window-ms 6 50]
                          [--min-confidence high]
                          [--no-progress] [--debug]

Plugs into the ``casdri-cache`` parser with `add_generate_parser` and `run_generate`; `main`
runs it alone (``python -m cache_builder.soundscapes.cli ...``). One call of
`cache_builder.soundscapes.generate_soundscapes`. Exit codes and messages follow
`casdri._cli` (0 ok, 1 a library error, 2 a usage error, 3 an internal error; ``--debug``
shows the traceback). The generator (pyroomacoustics, scipy, pandas) is imported only when
the command runs, so building the parser stays light.
"""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Optional, Sequence

from casdri._cli import Parser, int_at_least, lazy_import, number, run
from casdri.errors import InputError

if TYPE_CHECKING:
    from .scene import SoundscapeConfig

__all__ = ["add_generate_parser", "config_from_args", "run_generate", "main"]

_count = int_at_least(0)


_seconds = number("seconds > 0", lambda v: v > 0)
_rate = int_at_least(1)


def _jobs(text: str) -> int:
    """``--jobs``: N >= 1 processes, or -1 for every core (was joblib's "n_jobs must be a
    non-zero int" for 0, naming no flag)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 and value != -1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, or -1 for all cores, "
                                         f"got {text!r}")
    return value
_milliseconds = number("milliseconds >= 0 (official: 6 50)", lambda v: 0 <= v < float("inf"))


def add_generate_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``generate`` subcommand to an argparse ``subparsers`` object; return it."""
    p = subparsers.add_parser(
        "generate", help="generate DCASE-format soundscapes from a pool of real recordings",
        description="Simulate 4-channel FOA soundscapes (shoebox rooms, tetrahedral array "
        "converted A-to-B) under the official DCASE 2026 Task 4 rules (0-3 targets, 1/4 "
        "zero-target, duplicates, 0-2 interferers, official SNR rule and oracle window) "
        "and write <out>/<split>/soundscape/, oracle_target/ and metadata.parquet. Splits "
        "never share a recording or a room.")
    p.add_argument("--sources", required=True, metavar="DIR",
                   help="pool with sound_event/<Class>/, interference/, noise/ "
                        "(and optionally manifest.csv), mono clips at the sample rate")
    p.add_argument("--out", required=True, metavar="DIR", help="output root")
    for split in ("train", "dev", "test"):
        p.add_argument(f"--{split}", type=_count, default=0, metavar="N",
                       help=f"soundscapes in the {split} split (default 0)")
    p.add_argument("--seed", type=_count, default=0, help="root seed (default 0)")
    p.add_argument("--name-prefix", default="soundscape", metavar="PREFIX",
                   help="soundscape i is named PREFIX_i (default: soundscape); give a split "
                        "that will share a cache with another its own prefix, e.g. eval")
    p.add_argument("--duration-s", type=_seconds, default=10.0,
                   help="soundscape length in seconds (default 10)")
    p.add_argument("--sample-rate-hz", type=_rate, default=32000,
                   help="sample rate; the pool must already have it (default 32000)")
    p.add_argument("--jobs", type=_jobs, default=1,
                   help="worker processes, -1 for all cores (default 1); output is the same")
    p.add_argument("--stems", action="store_true",
                   help="also write every event image and the background to stems/")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the generated folders of splits that already have them")
    p.add_argument("--rules", choices=("official", "v1"), default="official",
                   help="official DCASE 2026 rules (default) or casdri's first generator (v1: "
                        "direct-path oracle, W active-span SNR, 20%% zero-target)")
    p.add_argument("--oracle-window-ms", type=_milliseconds, nargs=2, metavar=("BEFORE", "AFTER"),
                   default=None, help="oracle = W RIR cut to [peak-BEFORE, peak+AFTER] ms "
                                      "(default: 6 50, official; v1: direct path)")
    p.add_argument("--min-confidence", choices=("low", "medium", "high"), default=None,
                   help="keep manifest rows at least this confident")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def config_from_args(args: argparse.Namespace) -> SoundscapeConfig:
    """The `SoundscapeConfig` of ``--rules`` with ``--oracle-window-ms`` applied."""
    config = lazy_import("cache_builder.soundscapes.scene").SoundscapeConfig
    cfg = config() if args.rules == "official" else config.casdri_v1()
    if args.oracle_window_ms is not None:
        cfg = cfg.replace(oracle_window_ms=tuple(args.oracle_window_ms))
    return cfg


def run_generate(args: argparse.Namespace) -> int:
    """Run ``generate`` with parsed arguments; print a summary; return the exit code.

    Raises:
        InputError: no soundscape asked for, or any error of ``generate_soundscapes``.
    """
    counts = {s: getattr(args, s) for s in ("train", "dev", "test") if getattr(args, s)}
    if not counts:
        raise InputError("nothing to generate: give at least one of --train N, --dev N, "
                         "--test N")
    table = lazy_import("cache_builder.soundscapes.generate").generate_soundscapes(
        args.sources, args.out, counts, seed=args.seed, duration_s=args.duration_s,
        sample_rate_hz=args.sample_rate_hz, n_jobs=args.jobs, write_stems=args.stems,
        config=config_from_args(args),
        overwrite=args.overwrite, progress=not args.no_progress,
        min_confidence=args.min_confidence, name_prefix=args.name_prefix)
    for split, rows in table.groupby("split", sort=False):
        n = rows["soundscape"].nunique()
        targets = rows[rows["role"] == "target"].groupby("soundscape").size()
        n_zero = n - len(targets)
        print(f"{args.out}/{split}: {n} soundscapes, {int(targets.sum())} target events, "
              f"{int((rows['role'] == 'interference').sum())} interference events, "
              f"{n_zero} zero-target ({100.0 * n_zero / n:.0f}%)")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``generate`` alone (a leading ``generate`` word is optional); return the exit code
    (`casdri._cli` policy).

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
    """
    own = argv is None  # this process's own command line (SIGTERM, warnings: casdri._cli)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "generate":
        argv = ["generate"] + argv
    parser = Parser(prog="casdri-cache")
    add_generate_parser(parser.add_subparsers(dest="command", parser_class=Parser))
    return run(parser, run_generate, argv, own_process=own)


if __name__ == "__main__":
    sys.exit(main())
