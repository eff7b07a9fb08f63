"""``casdri explain`` and ``casdri compare`` (thin over `casdri.gap`, `casdri.whatif` and
`casdri.paired`), and the plain-text tables they print.

Conventions:
    * A system is a policy YAML file (``casdri.load_policy_yaml``), ``baseline`` (its
      defaults), a stem folder (``--soundscapes`` / ``--oracle`` give the dev set), or, for
      ``compare``, a per-soundscape table written by ``casdri score --out`` (.csv/.parquet/.json).
    * Heavy modules are imported inside the handlers, so ``casdri --help`` stays fast.
    * Tables: dB with 3 decimals; the parts of a row sum to its ``total``.
"""
from __future__ import annotations

from pathlib import Path

from ._cli import int_at_least

_POSITIVE = int_at_least(1)

__all__ = ["add_parsers", "explanation_text", "whatif_text", "comparison_text"]

_SHORT = {"fp_zero_target": "FP0", "fp_other": "FP", "missed": "miss", "wrong_class": "class",
          "count": "count", "separation": "sep"}


def _row(name, vals, w=22) -> str:
    return f"{str(name)[:w]:<{w}}" + "".join(f"{v:>8.3f}" if isinstance(v, float) else f"{v:>8}"
                                           for v in vals)


def explanation_text(e, max_classes: int = 18) -> str:
    """The compact tables of a `casdri.gap.GapExplanation`."""
    from ._gap_states import PARTS

    lines = [f"gap to the oracle labelling bound: {e.source}",
             f"system {e.system_db:.3f} dB, oracle labelling bound {e.oracle_db:.3f} dB, "
             f"gap {e.gap_db:+.3f} dB = sum of the parts (corrections applied in this order)",
             "", f"{'part':<44}{'gap dB':>8}{'events':>8}{'after':>9}"]
    for r in e.parts.itertuples():
        lines.append(f"{r.description[:43]:<44}{r.gap_db:>+8.3f}{r.events:>8}{r.state_db:>9.3f}")
    lines.append(f"{'total':<44}{e.parts.gap_db.sum():>+8.3f}")
    head = _row("", [_SHORT[p] for p in PARTS] + ["total"])
    lines += ["", "per scene type (dB of the dataset mean; n = soundscapes):",
              _row("scene", ["n", "system", "oracle"] + [_SHORT[p] for p in PARTS] + ["total"])]
    for r in e.per_scene.to_dict(orient="records"):
        lines.append(_row(r["scene"], [r["n_soundscapes"], r["system_db"], r["oracle_db"]]
                          + [r[p] for p in PARTS] + [r["total"]]))
    pc = e.per_class.sort_values("total", ascending=False)
    lines += ["", f"per class (dB of the dataset mean; largest {min(max_classes, len(pc))} of "
              f"{len(pc)}):", head.replace(" " * 22, f"{'class':<22}", 1)]
    for r in pc.head(max_classes).to_dict(orient="records"):
        lines.append(_row(r["class"], [r[p] for p in PARTS] + [r["total"]]))
    lines.append("(" + ", ".join(f"{_SHORT[p]} = {p}" for p in PARTS) + ")")
    return "\n".join(lines)


def whatif_text(table) -> str:
    """The what-if table (`casdri.whatif.what_if`)."""
    lines = ["", "what if (each alone, applied to the system; dB of the dataset mean):",
             f"{'scenario':<60}{'CAPI-SDRi':>10}{'gain':>9}"]
    for r in table.itertuples():
        lines.append(f"{r.scenario[:59]:<60}{r.capi_sdri_db:>10.3f}{r.gain_db:>+9.3f}")
    return "\n".join(lines)


def comparison_text(c, top: int = 10) -> str:
    """The tables of a `casdri.paired.Comparison`."""
    b = c.bootstrap
    lo, hi = b.gain_ci_db
    lines = [f"A: {c.name_a}", f"B: {c.name_b}",
             f"{c.n_soundscapes} soundscapes compared (A scores {c.n_scored_a}, B {c.n_scored_b}"
             f"; None left out of each mean as officially)",
             f"A {b.tuned_db:.3f} dB, B {b.base_db:.3f} dB, gain A - B {b.gain_db:+.3f} dB, "
             f"{100 * b.confidence:.0f}% CI [{lo:+.3f}, {hi:+.3f}] (paired bootstrap, "
             f"{b.n_boot} resamples, seed {b.seed})",
             f"probability of improvement (resamples with gain > 0): {c.prob_improvement:.3f}; "
             f"soundscapes better / worse / equal: {c.n_better} / {c.n_worse} / {c.n_equal}",
             "", "per scene type (gain, CI and P(>0) within the type; share: the type's exact "
             "share of the overall gain):",
             _row("scene", ["n", "A", "B", "gain", "ci_lo", "ci_hi", "P(>0)", "share"])]
    for r in c.per_scene.to_dict(orient="records"):
        lines.append(_row(r["scene"], [r["n_soundscapes"], r["a_db"], r["b_db"], r["gain_db"],
                                       r["ci_low_db"], r["ci_high_db"], r["prob_improvement"],
                                       r["share_db"]]))
    if c.per_class is not None and len(c.per_class):
        lines += ["", "per class (mean SDRi over the class's entries, zeros included):",
                  _row("class", ["A", "B", "gain", "dTP", "dFP", "dFN"])]
        for r in c.per_class.sort_values("gain_db").to_dict(orient="records"):
            lines.append(_row(r["class"], [r["a_db"], r["b_db"], r["gain_db"], r["d_tp"],
                                           r["d_fp"], r["d_fn"]]))
    lines += ["", "soundscapes that changed most (share of the gain, dB):",
              _row("soundscape", ["A", "B", "share"], 26)]
    for r in c.per_soundscape.head(top).to_dict(orient="records"):
        lines.append(_row(r["soundscape"], [r["a_db"], r["b_db"], r["share_db"]], 26))
    return "\n".join(lines)


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
    from .cache import load_cache

    if path:
        return load_cache(path)
    from importlib import resources

    return load_cache(Path(str(resources.files("casdri").joinpath("data", "demo_cache"))))


def _cmd_explain(args) -> int:
    if args.oracle_estimate:
        if not (args.soundscapes and args.oracle):
            args.parser.error("--oracle-estimate needs --soundscapes and --oracle")
        from .gap import explain_folders

        e = explain_folders(args.soundscapes, args.oracle, args.system, args.oracle_estimate,
                            args.label_set)
        print(e.to_text(args.classes))
        if args.what_if:
            from .whatif import what_if_clips

            print(whatif_text(what_if_clips(e)))
        return 0
    from .paired import load_system
    from .gap import explain

    cache = _open_cache(args.cache)
    mod, params = load_system(args.system, cache)
    mask = _split_mask(cache, args.split)
    e = explain(cache, mod, params, mask=mask)
    print(e.to_text(args.classes))
    if args.what_if:
        from .whatif import what_if

        print(whatif_text(what_if(cache, mod, params, mask=mask, explanation=e)))
    return 0


def _split_mask(cache, split):
    if split is None:
        return None
    from .errors import InputError

    mask = cache.split_mask(split)
    if not mask.any():
        raise InputError(f"--split {split}: the cache {cache.path} holds splits "
                         f"{sorted(set(cache.splits))}")
    return mask


def _cmd_compare(args) -> int:
    from .paired import compare_systems

    def open_cache(path):
        cache = _open_cache(path)
        return cache, _split_mask(cache, args.split)

    c = compare_systems(args.a, args.b, cache=args.cache, soundscapes=args.soundscapes,
                        oracle=args.oracle, label_set=args.label_set, n_boot=args.n_boot,
                        seed=args.seed, open_cache=open_cache)
    print(comparison_text(c, args.top))
    return 0
