"""``casdri-search``: tune a decision policy (``refine`` by default) on a decision cache (thin
over `run_search`).

Exit codes and error lines follow the one CLI shell (`casdri._cli`: 0 ok, 1 bad input,
2 usage, 3 internal error, 130 interrupted; ``--debug`` shows tracebacks). Status lines and
progress bars go to stderr (on a terminal), results to stdout.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from casdri._cli import Parser, UsageError, int_at_least, lazy_import, number, run

from .settings import AUTO_STAGES, STAGE_ORDER, SearchSettings

__all__ = ["main", "build_parser"]

PROG = "casdri-search"

_positive_int = int_at_least(1)
_count = int_at_least(0)


def _jobs(text: str):
    """``--jobs``: ``auto`` or an integer >= 1."""
    if text == "auto":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected auto or an integer >= 1, got {text!r}") \
            from None


_margin = number("a finite margin >= 0 dB", lambda v: 0 <= v < float("inf"))
_alpha = number("a level in (0, 1)", lambda v: 0 < v < 1)


def _stage_list(text: str) -> tuple:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [n for n in names if n not in STAGE_ORDER]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated stages of {', '.join(STAGE_ORDER)}, got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Tune the refine decision policy on a casdri decision cache: Optuna for the "
                    "joint stages, exact threshold sweeps per class, stratified (and grouped, "
                    "repeated) k-fold held-out validation against the baseline policy.",
        epilog="Shared studies: several workers on several machines pass the same --storage, "
               "--study-name and --resume (e.g. postgresql://user@host/db, sqlite:///study.db, "
               "journal:///shared/study.log); watch them with `optuna-dashboard URL` "
               "(for a journal file: `optuna-dashboard /shared/study.log`).",
    )
    p.add_argument("--cache", metavar="DIR", help="decision cache directory (default: the "
                   "bundled demo cache)")
    p.add_argument("--stage", default=SearchSettings.stage,
                   choices=["auto", *STAGE_ORDER, "all"],
                   help="all (default): the chain " + " → ".join(STAGE_ORDER) + ", every "
                        "change kept only on evidence (--accept); one stage; or auto: choose "
                        "the stages by an inner cross-validation inside each tune set")
    p.add_argument("--policy", default="refine", metavar="NAME",
                   help="registered policy to tune (default: %(default)s)")
    p.add_argument("--policy-in", metavar="FILE", help="policy YAML to start from "
                   "(default: the policy's defaults)")
    p.add_argument("--out", metavar="DIR", default="casdri-search-out",
                   help="output folder (default: %(default)s)")
    p.add_argument("--trials", type=_positive_int, default=64, metavar="N",
                   help="Optuna trials per joint stage and chain (default: %(default)s)")
    p.add_argument("--folds", type=_positive_int, default=5, metavar="K",
                   help="stratified folds for held-out validation, 1 for none (default: "
                        "%(default)s)")
    p.add_argument("--repeats", type=_positive_int, default=1, metavar="R",
                   help="repeat the k-fold split with R seeds; prints mean and spread of the "
                        "held-out gain (default: %(default)s)")
    p.add_argument("--auto-stages", type=_stage_list, default=None, metavar="S1,S2,...",
                   help="the stages --stage auto may keep (default: "
                        + ",".join(AUTO_STAGES) + ")")
    p.add_argument("--inner-folds", type=int_at_least(2), default=None, metavar="K",
                   help="folds of the inner cross-validation of --stage auto (default: "
                        f"{SearchSettings.inner_folds})")
    p.add_argument("--group-by", default="auto", metavar="auto|recording|room|COLUMN|none",
                   help="folds never split a group of soundscapes, and soundscapes sharing "
                        "a source recording (or room) count as one unit of evidence in the "
                        "evidence rule's test of a move (a COLUMN groups the folds only; "
                        "auto: by source recording when the cache records them, else by "
                        "room; default: %(default)s)")
    p.add_argument("--split", metavar="NAME", help="tune on this split of the cache only "
                   "(default: all; with --test-split the split the cache has most of)")
    p.add_argument("--test-split", metavar="NAME|auto|none", default="auto",
                   help="score the final policy on this split (never tuned on), beside the "
                        "k-fold estimate (auto: the cache's eval split when it has one and "
                        "--split is not eval; none: no test; default: %(default)s)")
    p.add_argument("--accept", choices=["evidence", "margin"], default="evidence",
                   help="how a change is kept: evidence (default; cross-fitted over two halves "
                        "of the tune set, a one-sided paired t-test over soundscapes, a minimum "
                        "of soundscapes changed: search.acceptance) or margin (the tune gain "
                        "exceeds --margin dB)")
    p.add_argument("--alpha", type=_alpha, default=None, metavar="P",
                   help="test level of a single move under --accept evidence (default: 0.01)")
    p.add_argument("--stage-alpha", type=_alpha, default=None, metavar="P",
                   help="test level of a whole joint stage under --accept evidence "
                        "(default: 0.05)")
    p.add_argument("--min-changed", type=int_at_least(1), default=None, metavar="N",
                   help="soundscapes whose value must change for a change to be kept under "
                        "--accept evidence (default: 5)")
    p.add_argument("--margin", type=_margin, default=None, metavar="dB",
                   help="with --accept margin: the gain a per-class or coordinate move must "
                        "exceed (default: 0.05)")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="search a cache whose build has not finished every chunk (refused "
                        "by default)")
    p.add_argument("--storage", metavar="URL", help="Optuna storage shared by workers "
                   "(sqlite:///F.db, postgresql://..., journal:///F.log or F.log; default: "
                   "in memory)")
    p.add_argument("--study-name", default="casdri", metavar="NAME",
                   help="study name prefix (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="add trials to existing studies of --study-name in --storage (every "
                        "worker of a shared search passes it); without it they are refused")
    p.add_argument("--seed", type=_count, default=0, metavar="S",
                   help="seed >= 0 (default: %(default)s)")
    p.add_argument("--jobs", type=_jobs, default="auto", metavar="N",
                   help="chains (folds) tuned in parallel processes; auto (default): one per "
                        "usable core when a chain tunes more than one stage, else 1 (a "
                        "worker's start-up costs more than a one-stage chain)")
    p.add_argument("--sampler", choices=["tpe", "cmaes"], default="tpe",
                   help="Optuna sampler of the joint stages (default: %(default)s; cmaes needs "
                        "the cmaes package)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``casdri-search``; returns the exit code (`casdri._cli` policy)."""
    parser = build_parser()
    return run(parser, lambda args: _run(args, parser), argv)


def settings_from_args(args):
    """The `search.settings.SearchSettings` of parsed arguments (one place maps flags)."""
    optional = {k: getattr(args, k) for k in ("auto_stages", "inner_folds", "margin", "alpha",
                                               "stage_alpha", "min_changed")
                if getattr(args, k) is not None}
    return SearchSettings(
        policy=args.policy, stage=args.stage, folds=args.folds, repeats=args.repeats,
        group_by=args.group_by, n_trials=args.trials,
        accept=args.accept, sampler=args.sampler, seed=args.seed, storage=args.storage,
        study_name=args.study_name, resume=args.resume, jobs=args.jobs,
        progress=sys.stderr.isatty(), **optional)


def _status(line: str) -> None:
    sys.stderr.write(f"{PROG}: {line}\n")
    sys.stderr.flush()


def _stage_line(rec) -> None:
    _status(f"{rec.fold}: {rec.stage} {rec.gain_db:+.3f} dB on its tune set ({rec.seconds:.1f} s)")


def _run(args, parser) -> int:
    if args.margin is not None and args.accept != "margin":
        raise UsageError("--margin applies to --accept margin (the default rule is evidence)",
                         parser)
    if args.accept == "margin" and any(getattr(args, k) is not None
                                       for k in ("alpha", "stage_alpha", "min_changed")):
        raise UsageError("--alpha, --stage-alpha and --min-changed apply to --accept evidence",
                         parser)
    if args.stage != "auto" and (args.auto_stages is not None or args.inner_folds is not None):
        raise UsageError("--auto-stages and --inner-folds apply only to --stage auto; add "
                         "--stage auto or drop them", parser)
    if args.resume and not args.storage:  # was ignored: a fresh search in memory
        raise UsageError("--resume adds trials to the studies of a --storage; give the shared "
                         "study's --storage URL (or drop --resume)", parser)
    talk = sys.stderr.isatty()
    if talk:  # the first line before the heavy imports (numba, optuna, pyarrow)
        _status("starting: loading numba, optuna and pyarrow")
    settings = settings_from_args(args)
    workers, started = None, False
    try:
        workers = lazy_import("search._prestart").prestart(  # (with the command)
            args.cache, args.policy, args.allow_incomplete, settings.chains[0],
            settings.validate().n_workers())
        DemoCacheMissing = lazy_import("search.casdri_problem").DemoCacheMissing
        report, runner = lazy_import("search.report"), lazy_import("search.run")
        report.check_out_dir(args.out)
        try:
            result = runner.run_search(
                cache=args.cache, settings=settings, policy_in=args.policy_in,
                split=args.split, test_split=args.test_split,
                allow_incomplete=args.allow_incomplete, on_status=_status if talk else None,
                on_stage=_stage_line if talk else None)
        except DemoCacheMissing as exc:
            sys.stderr.write(f"{PROG}: error: {exc}\n")
            return 1
        started = True
    finally:
        if workers is not None and not started:  # (an error, Ctrl-C or no demo: not left
            workers.shutdown(wait=True, kill_workers=True)  # to finish their start-up; waiting
            # lets the executor release its semaphores before exit, where the resource tracker
            # would otherwise find them leaked and print a warning under the error)
    written = report.write_outputs(result, args.out, figures=not args.no_figures,
                                   executor=workers)
    print("\n".join(runner.summarize(result)))
    n_fig = sum(1 for k in written if k not in ("policy", "trials", "report", "removed"))
    print(f"policy  -> {written['policy']}")
    print(f"trials  -> {written['trials']}")
    print(f"report  -> {written['report']} ({n_fig} figures)")
    if written.get("removed"):
        print(f"removed {len(written['removed'])} stale figure(s) of an earlier run: "
              + ", ".join(p.name for p in written["removed"]))
    if args.storage:
        target = lazy_import("search.engines").dashboard_target(args.storage)
        print(f"dashboard: optuna-dashboard {target}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
