"""Plain-text tables of ``casdri explain`` / ``casdri compare`` results (what the CLI prints
and what ``to_text()`` returns).

Conventions: dB with 3 decimals; the parts of a row sum to its ``total``; rows are cut to
their column width.
"""
from __future__ import annotations

from ._gap_states import PARTS

__all__ = ["explanation_text", "whatif_text", "comparison_text"]

_SHORT = {"fp_zero_target": "FP0", "fp_other": "FP", "missed": "miss", "wrong_class": "class",
          "count": "count", "separation": "sep"}


def _row(name, vals, w=22) -> str:
    return f"{str(name)[:w]:<{w}}" + "".join(f"{v:>8.3f}" if isinstance(v, float) else f"{v:>8}"
                                           for v in vals)


def explanation_text(e, max_classes: int = 18) -> str:
    """The compact tables of a `casdri.gap.GapExplanation`."""
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
             f"soundscapes better / worse / equal: {c.n_better} / {c.n_worse} / {c.n_equal} "
             f"(of the {c.n_better + c.n_worse + c.n_equal} both score)",
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
