"""The ``casdri`` command (thin over the library): ``casdri score``; ``casdri explain`` and
``casdri compare`` live in `casdri._cli_explain`.

Conventions:
    * ``casdri score --soundscapes DIR --oracle DIR --estimate DIR`` calls
      `casdri.scoring.score_folders` and prints the official evaluator's three lines
      (``CAPI-SDRi: x.xxx``, ``Accuracy (mixture): x.xxx``, ``Accuracy (source) : x.xxx``) on
      stdout, then a per-class table; the progress bar goes to stderr.
    * ``casdri score`` with none of the three folders (or ``--example``) scores the example
      bundled in ``casdri/data/example`` and says so on stderr.
    * ``--out results.json`` writes the whole result (summary, per-soundscape and per-class
      records, inputs; ``null`` for missing values); ``.csv`` and ``.parquet`` write the
      per-soundscape table (CSV label lists joined with ``;``).
    * Exit codes and messages follow `casdri._cli`: 0 success; 1 a `casdri.CasdriError` (one
      line ``casdri score: error: ...``); 2 a usage error (one line); 3 an internal error;
      130 interrupted; ``--debug`` shows the traceback.
    * Only argparse and the standard library are imported to parse: ``casdri --help`` does not
      import numpy, pandas or numba (`benchmarks/bench_cli.py`).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

from . import __version__
from ._cli import Parser, int_at_least, lazy_import, run
from ._cli_explain import add_parsers
from ._io import atomic_write_bytes, atomic_write_text
from .errors import FolderLayoutError
from .layout import ESTIMATE_DIR, ORACLE_DIR, SOUNDSCAPE_DIR

__all__ = ["main", "example_dirs"]

_OUT_SUFFIXES = (".json", ".csv", ".parquet")
_DIRS = (("soundscapes", SOUNDSCAPE_DIR), ("oracle", ORACLE_DIR), ("estimate", ESTIMATE_DIR))


def example_dirs() -> tuple[Path, Path, Path]:
    """``(soundscape, oracle_target, estimate)`` folders of the bundled example.

    Raises:
        FolderLayoutError: the installed package holds no example.
    """
    root = Path(str(resources.files("casdri").joinpath("data", "example")))
    dirs = tuple(root / sub for _, sub in _DIRS)
    if not all(d.is_dir() for d in dirs):
        raise FolderLayoutError(
            f"the bundled example {root} is missing or incomplete (expected soundscape/, "
            "oracle_target/, estimate/); reinstall casdri or pass --soundscapes, --oracle and "
            "--estimate"
        )
    return dirs  # type: ignore[return-value]


def _build_parser() -> Parser:
    parser = Parser(prog="casdri",
                     description="Exact CAPI-SDRi scoring for DCASE 2026 Task 4 (S5).")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error")
    common = Parser(add_help=False)  # the same flag after the command name
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    score = sub.add_parser(
        "score", parents=[common], help="score a DCASE evaluation folder set",
        description="Score estimate stems against oracle targets like the official evaluator "
        "(exact name matching). Without folders, scores the bundled example.")
    score.add_argument("--soundscapes", metavar="DIR",
                       help="folder of <name>.wav 4-channel soundscapes")
    score.add_argument("--oracle", metavar="DIR",
                       help="folder of <name>_<i>_<Label>.wav oracle targets")
    score.add_argument("--estimate", metavar="DIR",
                       help="folder of <name>_<i>_<Label>.wav (or <name>_<Label>.wav) estimates")
    score.add_argument("--example", action="store_true",
                       help="score the example bundled with casdri")
    score.add_argument("--label-set", default="dcase2026t4",
                       help="label set of the file labels (default: %(default)s)")
    score.add_argument("--metric", choices=("capi", "ca2025"), default="capi",
                       help="capi: DCASE 2026 CAPI-SDRi; ca2025: DCASE 2025 CA-SDRi "
                       "(default: %(default)s)")
    score.add_argument("--out", metavar="FILE",
                       help="write results: .json (everything), .csv or .parquet "
                       "(per-soundscape table)")
    score.add_argument("--jobs", type=int_at_least(1), metavar="N",
                       help="parallel readers (default: CPUs, at most 8)")
    score.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    score.set_defaults(handler=_cmd_score, parser=score)
    add_parsers(sub, common)  # explain, compare (their heavy imports are lazy)
    return parser


def _fmt(x: Optional[float]) -> str:
    return "nan" if x is None else "%.3f" % x


def summary_lines(result) -> list[str]:
    """The official evaluator's three printed lines (``%.3f``; ``nan`` for no value).

    Args:
        result: a `casdri.CapiSdriResult`.
    """
    name = "CAPI-SDRi" if result.metric == "capi" else "CA-SDRi"
    return [f"{name}: {_fmt(result.capi_sdri)}",
            f"Accuracy (mixture): {_fmt(result.accuracy_mix)}",
            f"Accuracy (source) : {_fmt(result.accuracy_src)}"]


def _class_table(per_class) -> list[str]:
    if per_class.empty:
        return []
    matched = "sdri_matched_mean" in per_class.columns
    lines = ["", "per class (SDRi dB over its entries, zeros of misses and false alarms "
             "included" + ("; matched: pairs only)" if matched else ")"),
             f"{'label':<18}{'entries':>8}{'tp':>5}{'fp':>5}{'fn':>5}{'SDRi':>9}"
             + (f"{'matched':>9}" if matched else "")]
    for r in per_class.to_dict(orient="records"):
        lines.append(f"{r['label']:<18}{r['n_entries']:>8}{r['tp']:>5}{r['fp']:>5}{r['fn']:>5}"
                     f"{r['sdri_mean']:>9.3f}"
                     + (f"{r['sdri_matched_mean']:>9.3f}" if matched else ""))
    return lines


def _json_ready(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_ready(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):  # numpy scalar
        return _json_ready(x.item())
    return x


def _write_out(path: Path, result, inputs: dict, lines: list[str]) -> None:
    try:
        if path.suffix == ".json":
            doc = {**result.to_dict(), "label_set": inputs.pop("label_set"), "inputs": inputs,
                   "printed": lines, "casdri_version": __version__}
            atomic_write_text(path, json.dumps(_json_ready(doc), indent=2,
                                               allow_nan=False) + "\n")
        elif path.suffix == ".csv":
            table = result.per_soundscape.copy()
            for col in ("est_labels", "ref_labels"):
                table[col] = table[col].map(";".join)
            atomic_write_bytes(path, lambda tmp: table.to_csv(tmp, index=False))
        else:
            atomic_write_bytes(path, lambda tmp: result.per_soundscape.to_parquet(
                tmp, index=False))
    except OSError as err:
        raise FolderLayoutError(f"cannot write --out {path}: {err}") from None


def _cmd_score(args) -> int:
    score_folders = lazy_import("casdri.scoring").score_folders
    given = [getattr(args, opt) for opt, _ in _DIRS]
    if args.example and any(given):
        args.parser.error("--example cannot be combined with --soundscapes/--oracle/--estimate")
    if any(given) and not all(given):
        missing = ", ".join(f"--{opt}" for (opt, _), g in zip(_DIRS, given) if not g)
        args.parser.error(f"missing {missing} (give all three folders, or none for the example)")
    if args.out and Path(args.out).suffix not in _OUT_SUFFIXES:
        args.parser.error(f"--out {args.out}: expected a file ending in "
                          f"{', '.join(_OUT_SUFFIXES)}")
    if all(given):
        dirs = tuple(Path(g) for g in given)
    else:
        dirs = example_dirs()
        if not args.example:
            print(f"casdri: no folders given; scoring the bundled example {dirs[0].parent} "
                  "(pass --soundscapes, --oracle and --estimate to score yours)",
                  file=sys.stderr)
    result = score_folders(*dirs, label_set=args.label_set, metric=args.metric, jobs=args.jobs,
                           progress=not args.no_progress)
    lines = summary_lines(result)
    if args.out:  # before stdout: a reader that leaves early (| head) must not cost the file
        inputs = {"soundscape_dir": str(dirs[0]), "oracle_dir": str(dirs[1]),
                  "estimate_dir": str(dirs[2]), "label_set": args.label_set,
                  "metric": args.metric}
        _write_out(Path(args.out), result, inputs, lines)
    print("\n".join(lines + _class_table(result.per_class)))
    print(f"\n{result.n_soundscapes} soundscapes, {result.n_scored} scored "
          f"({result.n_soundscapes - result.n_scored} with no class on either side: None)")
    if args.out:
        print(f"casdri: wrote {args.out}", file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``casdri`` command; return the exit code (`casdri._cli` policy).

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
    """
    parser = _build_parser()

    def handler(args) -> int:
        if args.command is None:
            parser.error("a command is required (casdri score, explain or compare)")
        return args.handler(args)
    return run(parser, handler, argv)


if __name__ == "__main__":
    sys.exit(main())
