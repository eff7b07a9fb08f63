"""``casdri-cache``: build, validate and inspect decision caches; apply a policy live.

Commands (each one library call; see ``casdri-cache <command> --help``)::

    casdri-cache build    --system system.yaml --soundscapes DIR [--oracle DIR] --out CACHE
                          [--shard i/n] [--device cuda:0] [--batch-size N] [--split NAME]
                          [--top-n N] [--jobs N] [--chunk-size N] [--amp] [--threads N]
    casdri-cache apply    --system system.yaml --policy policy.yaml --soundscapes DIR
                          --out DIR [--zip NAME] [--oracle DIR]

``--soundscapes`` takes a folder of ``<name>.wav`` or a split folder as the generator writes
it (``soundscape/``, ``oracle_target/``, ``metadata.parquet``): its oracle targets are then
used (``--no-oracle``: not) and ``build`` records the metadata's split column as the split.
    casdri-cache info     CACHE
    casdri-cache validate CACHE
    casdri-cache upgrade  CACHE      (older parts rewritten in the current schema version)
    casdri-cache generate ...        (cache_builder.soundscapes.cli)

Exit codes and messages follow `casdri._cli`: 0 ok; 1 a library error (one line); 2 a usage
error (one line); 3 an internal error; ``--debug`` shows tracebacks instead. torch is imported
only by the commands that run models.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from casdri._cli import (EXIT_INTERRUPTED, EXIT_TERMINATED, Parser, Terminated, int_at_least,
                         lazy_import, run)

from .soundscapes.cli import add_generate_parser, run_generate

__all__ = ["main", "build_parser"]

_positive, _nonneg = int_at_least(1), int_at_least(0)


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n such as 0/4, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard {text!r}: need 0 <= i < n")
    return i, n


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="casdri-cache", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(parser)
    sub = parser.add_subparsers(dest="command", parser_class=Parser)

    b = sub.add_parser("build", help="build (or resume) a decision cache")
    b.add_argument("--system", required=True, help="system YAML")
    b.add_argument("--soundscapes", required=True,
                   help="folder of <name>.wav (4 ch, 32 kHz), or a split folder holding "
                        "soundscape/ (and oracle_target/, metadata.parquet)")
    orc = b.add_mutually_exclusive_group()
    orc.add_argument("--oracle", help="folder of <name>_<i>_<Label>.wav oracle targets "
                                      "(default: the split folder's oracle_target/ if any)")
    orc.add_argument("--no-oracle", action="store_true",
                     help="build without oracle targets even if the split folder has them")
    b.add_argument("--out", required=True, help="cache folder (created; resumed if present)")
    b.add_argument("--shard", type=_shard, default=(0, 1), metavar="i/n",
                   help="build shard i of n (soundscapes sorted by name, round robin)")
    b.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    b.add_argument("--batch-size", type=_positive, default=None,
                   help="separator items per forward (default: from the device, 48 on CPU, "
                        "8 per GiB of GPU memory up to 256; recorded, a resume must match)")
    b.add_argument("--tag-batch-size", type=_positive, default=1,
                   help="soundscapes per tagger forward (default 1: tagger outputs do not "
                        "depend on batching, bit-identical across shards and live apply)")
    b.add_argument("--chunk-size", type=_positive, default=32,
                   help="soundscapes per part file (default 32)")
    b.add_argument("--split", default=None,
                   help="split (fold) tag recorded per soundscape (default: the split column "
                        "of the folder's metadata.parquet/csv, else 'dev')")
    b.add_argument("--top-n", type=_positive, default=1,
                   help="proposals per (tagger, track) in the query closure (default 1)")
    b.add_argument("--jobs", type=_nonneg, default=2,
                   help="DataLoader workers reading audio (0: main process; default 2)")
    b.add_argument("--amp", action="store_true",
                   help="mixed precision (changes the numbers; recorded in the metadata)")
    b.add_argument("--threads", type=_positive, default=None,
                   help="torch CPU threads (default: torch's choice)")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    _common(b)

    a = sub.add_parser("apply", help="run a policy live with the real models")
    a.add_argument("--system", required=True, help="system YAML")
    a.add_argument("--policy", required=True, help="policy YAML (casdri.policies)")
    a.add_argument("--soundscapes", required=True,
                   help="folder of <name>.wav, or a split folder holding soundscape/")
    a.add_argument("--out", required=True, help="folder for <soundscape>_<i>_<Label>.wav stems")
    a.add_argument("--zip", default=None, help="also write this submission zip (in --out's "
                                               "parent unless a path is given)")
    orc = a.add_mutually_exclusive_group()
    orc.add_argument("--oracle", default=None,
                     help="oracle folder: also print the live CAPI-SDRi (default: the split "
                          "folder's oracle_target/ if any)")
    orc.add_argument("--no-oracle", action="store_true", help="do not score")
    a.add_argument("--device", default=None)
    a.add_argument("--tag-batch-size", type=_positive, default=1,
                   help="soundscapes per tagger forward (default 1, as build)")
    a.add_argument("--jobs", type=_nonneg, default=2, help="DataLoader workers")
    a.add_argument("--amp", action="store_true", help="mixed precision")
    a.add_argument("--overwrite", action="store_true",
                   help="allow a non-empty --out (stems of other soundscapes are kept) and "
                        "replace an existing --zip")
    a.add_argument("--threads", type=_positive, default=None, help="torch CPU threads")
    a.add_argument("--force", action="store_true",
                   help="apply a policy whose provenance names other checkpoints than the "
                        "system's (warns loudly instead of refusing)")
    a.add_argument("--no-progress", action="store_true")
    _common(a)

    i = sub.add_parser("info", help="summarise a cache")
    i.add_argument("cache")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.add_argument("--allow-incomplete", action="store_true",
                   help="summarise a cache whose build did not finish (warns)")
    _common(i)

    v = sub.add_parser("validate", help="check a (merged) cache is complete and consistent")
    v.add_argument("cache")
    _common(v)

    u = sub.add_parser("upgrade", help="rewrite a cache's older parts in the current schema "
                       "version (the same replay; schema 2 stores a third of the retagger's "
                       "values)")
    u.add_argument("cache")
    _common(u)

    add_generate_parser(sub)
    return parser


# ----------------------------------------------------------------------------- handlers


def _build(args) -> int:
    if not args.no_progress and sys.stderr.isatty():  # a line before torch and the models
        print("casdri-cache build: loading torch and the system's models", file=sys.stderr,
              flush=True)
    try:
        report = lazy_import("cache_builder.build").build_cache(
            args.system, args.soundscapes, args.out,
            oracle=False if args.no_oracle else args.oracle, shard=args.shard,
            device=args.device, batch_size=args.batch_size, tag_batch_size=args.tag_batch_size,
            chunk_size=args.chunk_size, split=args.split, top_n=args.top_n, jobs=args.jobs,
            amp=args.amp, threads=args.threads, progress=not args.no_progress)
    except (KeyboardInterrupt, Terminated) as stop:
        how = "interrupted" if isinstance(stop, KeyboardInterrupt) else "terminated"
        print(f"casdri-cache build: {how}; rerun the same command to resume: the work "
              "already done is kept", file=sys.stderr)
        return EXIT_INTERRUPTED if how == "interrupted" else EXIT_TERMINATED
    print(report.summary())
    return 0


def _apply(args) -> int:
    report = lazy_import("cache_builder.apply").apply_policy(args.system, args.policy, args.soundscapes, args.out,
                          zip_name=args.zip, oracle=False if args.no_oracle else args.oracle,
                          device=args.device,
                          tag_batch_size=args.tag_batch_size, jobs=args.jobs, amp=args.amp,
                          overwrite=args.overwrite, threads=args.threads,
                          progress=not args.no_progress, force=args.force)
    print(report.summary())
    return 0


def _info(args) -> int:
    info = lazy_import("cache_builder.build").cache_info(args.cache, allow_incomplete=args.allow_incomplete)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"cache {args.cache}")
    for key in ("cache_id", "label_set", "splits", "n_soundscapes", "n_with_oracle",
                "n_queries", "queries_per_soundscape", "n_stem_rows", "top_n", "amp",
                "size_mb", "n_parts"):
        if key in info:
            print(f"  {key}: {info[key]}")
    per = info.get("passes_per_soundscape") or {}
    print("  forward passes per soundscape: " + (", ".join(
        f"{k} {v:.1f}" for k, v in per.items()) if per else "- (no build manifest)"))
    for role in ("taggers", "separators"):
        for name, d in info.get(role, {}).items():
            sha = (d.get("sha256") or "-")[:12]
            print(f"  {role[:-1]} {name}: {d.get('module')}.{d.get('class')} "
                  f"{d.get('checkpoint')} sha256 {sha}")
    for d in info.get("stages", []):
        its = f" x{d['iterations']} iterations" if d.get("iterations", 1) != 1 else ""
        print(f"  stage {d.get('name')}: {d.get('module')}.{d.get('class')}{its}")
    print(f"  stages cached: {info.get('stage_names')}")
    sed = info.get("sed")
    if sed:
        m = sed.get("model") or {}
        print(f"  sed {', '.join(sed['models'])}: {m.get('module')}.{m.get('class')} hop "
              f"{m.get('frame_hop_s')} s, on {sed['n_with_sed']} soundscapes")
    return 0


def _validate(args) -> int:
    problems = lazy_import("cache_builder.build").validate_cache(args.cache)
    if problems:
        for p in problems[:50]:
            print(f"INVALID: {p}", file=sys.stderr)
        if len(problems) > 50:
            print(f"... and {len(problems) - 50} more", file=sys.stderr)
        return 1
    print(f"{args.cache}: valid")
    return 0


def _upgrade(args) -> int:
    done = lazy_import("casdri.cache").upgrade_cache(args.cache)
    print(f"{args.cache}: {len(done)} part(s) rewritten; every part is in schema version "
          f"{lazy_import('casdri.schema').SCHEMA_VERSION}")
    return 0


_HANDLERS = {"build": _build, "apply": _apply, "info": _info, "validate": _validate,
             "upgrade": _upgrade, "generate": run_generate}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``casdri-cache``; returns the exit code (`casdri._cli` policy)."""
    parser = build_parser()

    def handler(args) -> int:
        if args.command is None:
            parser.error(f"a command is required ({', '.join(_HANDLERS)})")
        return _HANDLERS[args.command](args)
    return run(parser, handler, argv)


if __name__ == "__main__":
    sys.exit(main())
