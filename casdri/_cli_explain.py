"""``casdri explain`` and ``casdri compare`` (thin over `casdri.gap`, `casdri.whatif` and
`casdri.paired`; the tables they print are `casdri._tables`).

Conventions:
    * A system is a policy YAML file (``casdri.load_policy_yaml``), ``baseline`` (its
      defaults), a stem folder (``--soundscapes`` / ``--oracle`` give the dev set), or, for
      ``compare``, a per-soundscape table written by ``casdri score --out`` (.csv/.parquet/.json).
    * Heavy modules are imported by the handlers (`casdri._cli.lazy_import`), so
      ``casdri --help`` stays fast.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from ._cli import int_at_least, lazy_import
from .errors import InputError

_POSITIVE = int_at_least(1)

__all__ = ["add_parsers"]

# ----------------------------------------------------------------------------- parsers


def add_parsers(sub, common) -> None:
    """Add ``explain`` and ``compare`` to the ``casdri`` subparsers."""
    ex = sub.add_parser(
        "explain", parents=[common], help="split the gap to the oracle labelling bound",
        description="Decompose a policy's (or a stem folder's) CAPI-SDRi gap to the oracle "
        "labelling bound into parts that sum exactly to it: overall, per scene type, per class.")
    ex.add_argument("system", nargs="?", default="baseline",
                    help="policy YAML file or 'baseline' (default), or a stem folder with "
                    "--oracle-estimate")
    ex.add_argument("--cache", metavar="DIR", help="decision cache (default: the demo cache)")
    ex.add_argument("--split", metavar="NAME", help="only the cache's soundscapes of this split")
    _folder_args(ex)
    ex.add_argument("--oracle-estimate", metavar="DIR", help="folder of the same separator's "
                    "stems queried with the oracle labels (folder mode)")
    ex.add_argument("--what-if", action="store_true", help="also print the counterfactuals")
    ex.add_argument("--classes", type=_POSITIVE, default=18, metavar="N",
                    help="class rows shown (default: %(default)s)")
    ex.set_defaults(handler=_cmd_explain, parser=ex)
    cp = sub.add_parser(
        "compare", parents=[common], help="paired comparison of two systems",
        description="Paired comparison of A against B on the soundscapes both are scored on: "
        "gain with a paired-bootstrap CI, probability of improvement, per scene type and class.")
    cp.add_argument("a", help="policy YAML, 'baseline', a stem folder or a score table")
    cp.add_argument("b", help="the same for B")
    cp.add_argument("--cache", metavar="DIR", help="decision cache for policies (default: demo)")
    cp.add_argument("--split", metavar="NAME", help="only the cache's soundscapes of this split")
    _folder_args(cp)
    cp.add_argument("--n-boot", type=_POSITIVE, default=10_000, metavar="N",
                    help="bootstrap resamples (default: %(default)s)")
    cp.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    cp.add_argument("--top", type=_POSITIVE, default=10, metavar="N",
                    help="soundscapes listed (default: %(default)s)")
    cp.set_defaults(handler=_cmd_compare, parser=cp)


def _folder_args(p) -> None:
    p.add_argument("--soundscapes", metavar="DIR", help="soundscape folder (folder mode)")
    p.add_argument("--oracle", metavar="DIR", help="oracle target folder (folder mode)")
    p.add_argument("--label-set", default="dcase2026t4",
                   help="label set of the file labels (default: %(default)s)")


def _open_cache(path):
    load_cache = lazy_import("casdri.cache").load_cache
    if path:
        return load_cache(path)
    return load_cache(Path(str(resources.files("casdri").joinpath("data", "demo_cache"))))


def _cmd_explain(args) -> int:
    if args.oracle_estimate:
        if not (args.soundscapes and args.oracle):
            args.parser.error("--oracle-estimate needs --soundscapes and --oracle")
        e = lazy_import("casdri.gap").explain_folders(args.soundscapes, args.oracle, args.system, args.oracle_estimate,
                            args.label_set)
        print(e.to_text(args.classes))
        if args.what_if:
            table = lazy_import("casdri.whatif").what_if_clips(e)
            print(lazy_import("casdri._tables").whatif_text(table))
        return 0
    cache = _open_cache(args.cache)
    mod, params = lazy_import("casdri.paired").load_system(args.system, cache)
    mask = _split_mask(cache, args.split)
    e = lazy_import("casdri.gap").explain(cache, mod, params, mask=mask)
    print(e.to_text(args.classes))
    if args.what_if:
        table = lazy_import("casdri.whatif").what_if(cache, mod, params, mask=mask, explanation=e)
        print(lazy_import("casdri._tables").whatif_text(table))
    return 0


def _split_mask(cache, split):
    if split is None:
        return None
    if split not in set(cache.splits):
        raise InputError(f"--split {split}: the cache {cache.path} holds splits "
                         f"{sorted(set(cache.splits))}")
    return cache.split_mask(split)


def _cmd_compare(args) -> int:
    def open_cache(path):
        cache = _open_cache(path)
        return cache, _split_mask(cache, args.split)

    c = lazy_import("casdri.paired").compare_systems(args.a, args.b, cache=args.cache, soundscapes=args.soundscapes,
                        oracle=args.oracle, label_set=args.label_set, n_boot=args.n_boot,
                        seed=args.seed, open_cache=open_cache)
    print(c.to_text(args.top))
    return 0
