"""``casdri-search``: tune the ``refine`` policy on a decision cache (thin over `run_search`).

Usage errors print one line and this help and exit 1; library errors print one line and exit
1; ``--debug`` shows tracebacks. Progress bars go to stderr (on a terminal), results to stdout.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from casdri._argtypes import int_at_least

from .stages import STAGE_ORDER

__all__ = ["main", "build_parser"]

PROG = "casdri-search"

_positive_int = int_at_least(1)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, then the help; exit 1 (never a traceback)
        sys.stderr.write(f"{self.prog}: error: {message}\n\n")
        self.print_help(sys.stderr)
        raise SystemExit(1)


def _margin(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of dB, got {text!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite margin >= 0 dB, got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Tune the refine decision policy on a casdri decision cache: Optuna for the "
                    "joint stages, exact threshold sweeps per class, stratified k-fold held-out "
                    "validation against the baseline policy.",
        epilog="Shared studies: several workers on several machines pass the same --storage and "
               "--study-name (e.g. postgresql://user@host/db, sqlite:///study.db, "
               "journal:///shared/study.log); watch them with `optuna-dashboard URL` "
               "(for a journal file: `optuna-dashboard /shared/study.log`).",
    )
    p.add_argument("--cache", metavar="DIR", help="decision cache directory (default: the "
                   "bundled demo cache)")
    p.add_argument("--stage", required=True, choices=[*STAGE_ORDER, "all"],
                   help="stage to run, or all for the chain " + " → ".join(STAGE_ORDER))
    p.add_argument("--policy-in", metavar="FILE", help="refine policy YAML to start from "
                   "(default: the refine defaults)")
    p.add_argument("--out", metavar="DIR", default="casdri-search-out",
                   help="output folder (default: %(default)s)")
    p.add_argument("--trials", type=_positive_int, default=64, metavar="N",
                   help="Optuna trials per joint stage and chain (default: %(default)s)")
    p.add_argument("--folds", type=_positive_int, default=5, metavar="K",
                   help="stratified folds for held-out validation, 1 for none (default: "
                        "%(default)s)")
    p.add_argument("--margin", type=_margin, default=0.05, metavar="dB",
                   help="gain a per-class or coordinate move must exceed (default: %(default)s)")
    p.add_argument("--storage", metavar="URL", help="Optuna storage shared by workers "
                   "(sqlite:///F.db, postgresql://..., journal:///F.log or F.log; default: "
                   "in memory)")
    p.add_argument("--study-name", default="casdri", metavar="NAME",
                   help="study name prefix (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed (default: %(default)s)")
    p.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                   help="chains (folds) tuned in parallel processes (default: %(default)s)")
    p.add_argument("--sampler", choices=["tpe", "cmaes"], default="tpe",
                   help="Optuna sampler of the joint stages (default: %(default)s; cmaes needs "
                        "the cmaes package)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``casdri-search``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except Exception as exc:  # one line unless --debug
        if args.debug:
            raise
        from casdri.errors import CasdriError

        kind = "error" if isinstance(exc, CasdriError) else f"internal error ({type(exc).__name__})"
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.stderr.write(f"{PROG}: {kind}: {msg}" + ("" if isinstance(exc, CasdriError)
                                                     else " (rerun with --debug)") + "\n")
        return 1


def _run(args) -> int:
    from .casdri_problem import DemoCacheMissing
    from .report import write_outputs
    from .run import run_search, summarize

    progress = sys.stderr.isatty()
    try:
        result = run_search(
            cache=args.cache, stage=args.stage, policy_in=args.policy_in, folds=args.folds,
            trials=args.trials, margin=args.margin, storage=args.storage,
            study_name=args.study_name, seed=args.seed, jobs=args.jobs, sampler=args.sampler,
            progress=progress)
    except DemoCacheMissing as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        return 1
    written = write_outputs(result, args.out, figures=not args.no_figures)
    print("\n".join(summarize(result)))
    n_fig = sum(1 for k in written if k not in ("policy", "trials", "report"))
    print(f"policy  -> {written['policy']}")
    print(f"trials  -> {written['trials']}")
    print(f"report  -> {written['report']} ({n_fig} figures)")
    if args.storage:
        from .engines import dashboard_target

        print(f"dashboard: optuna-dashboard {dashboard_target(args.storage)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
