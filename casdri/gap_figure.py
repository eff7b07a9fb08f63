"""The gap to the oracle labelling bound as a stacked bar figure (a `matplotlib.figure.Figure`).

Conventions: left, one bar per scene type plus ``all``; right, one bar per class; each bar
is stacked by part (`casdri._gap_states.PARTS`, dB of the dataset mean, negative parts below
zero), so a bar's net height is its share of the gap. Used by `search.report` and notebook 02.
"""
from __future__ import annotations

import numpy as np
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from ._gap_states import PART_NAMES, PARTS
from .errors import InputError

__all__ = ["gap_figure"]


def _stack(ax, names, table) -> None:
    """One stacked bar per name: a `PolyCollection` of rectangles per part (one artist per
    part, not one per bar: a third of the figure's drawing time), then the net as a dash."""
    pos, neg = np.zeros(len(names)), np.zeros(len(names))
    xs = np.arange(len(names), dtype=np.float64)
    for k, p in enumerate(PARTS):
        v = np.asarray(table[p], np.float64)
        y0 = np.where(v >= 0, pos, neg)
        x0, x1, y1 = xs - 0.35, xs + 0.35, y0 + v
        corners = np.stack([np.c_[x0, y0], np.c_[x0, y1], np.c_[x1, y1], np.c_[x1, y0]], axis=1)
        ax.add_collection(PolyCollection(corners, facecolors=f"C{k}", edgecolors="none",
                                         label=PART_NAMES[p]))
        pos, neg = pos + np.maximum(v, 0), neg + np.minimum(v, 0)
    ax.plot(xs, np.asarray(table["total"], np.float64), "k_", ms=14, mew=1.5)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(xs, names, rotation=60, ha="right", fontsize=7)
    ax.autoscale_view()


def gap_figure(explanation, max_classes: int = 18):
    """Stacked bars of a `casdri.gap.GapExplanation` by part: scene types and classes.

    Args:
        explanation: the decomposition; max_classes: classes shown (largest total first).

    Returns:
        A `matplotlib.figure.Figure`, not registered with pyplot (the caller saves it;
        ``display(fig)`` shows it in a notebook).

    Raises:
        InputError: ``explanation`` is not a `casdri.gap.GapExplanation` (a cache, say).
    """
    e = explanation
    if not all(hasattr(e, a) for a in ("per_scene", "per_class", "parts", "gap_db")):
        raise InputError(f"gap_figure: expected a GapExplanation, got {type(e).__name__}; "
                         "make one with casdri.explain(cache, ...)")
    sc = e.per_scene.copy()
    total = {p: float(e.parts.set_index("part").loc[p, "gap_db"]) for p in PARTS}
    sc.loc[len(sc)] = {"scene": "all", **total, "total": e.gap_db}
    pc = e.per_class.sort_values("total", ascending=False).head(max_classes)
    fig = Figure(figsize=(10, 3.8))
    a, b = fig.subplots(1, 2, width_ratios=[1, 2.4])
    _stack(a, list(sc["scene"]), sc)
    _stack(b, list(pc["class"]), pc)
    a.set_ylabel("share of the gap (dB CAPI-SDRi)")
    a.set_title("by scene type", fontsize=9)
    b.set_title("by class (black: net)", fontsize=9)
    fig.suptitle(f"gap to the oracle labelling bound: {e.system_db:.3f} → {e.oracle_db:.3f} dB "
                 f"({e.gap_db:+.3f} dB)", fontsize=10)
    b.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig
