"""The PNG figures of a search report, drawn with matplotlib from plain inputs (tables,
arrays, sweep moves, a gap explanation); `search.report` imports this module only when it
draws, so a run without figures never imports matplotlib.

Conventions: every function returns PNG bytes (110 dpi) of a `matplotlib.figure.Figure` drawn
on the Agg canvas ``savefig`` picks (no pyplot, nothing registered globally). Many-panel figures
draw their panels as collections on one axes: a matplotlib ``Axes`` with its ticks costs about
25 ms, and a report can hold a hundred panels.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from casdri.gap_figure import gap_figure

__all__ = ["stage_gains", "threshold", "per_class", "confusion", "gap"]


def _fig_bytes(fig, tight: bool = True) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight" if tight else None)
    return buf.getvalue()


def _subplots(figsize, *args, **kwargs):
    """A `matplotlib.figure.Figure` and its axes (no pyplot: the report only writes PNGs,
    through the Agg canvas ``savefig`` picks)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def stage_gains(table: pd.DataFrame, heldout: bool) -> bytes:
    """Bars of ``table`` (`search.result.SearchResult.stage_table`): tune gain per stage, and
    the pooled held-out gain beside it when ``heldout``."""
    fig, ax = _subplots((7, 3.2))
    xs = np.arange(len(table))
    ax.bar(xs - 0.2, table["tune_gain_db"].fillna(0.0), 0.4, label="tune (final chain)")
    if heldout:
        ax.bar(xs + 0.2, table["heldout_gain_db"].fillna(0.0), 0.4,
               label="held-out (pooled folds)")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(xs, table["stage"])
    ax.set_ylabel("gain (dB CAPI-SDRi)")
    ax.set_title("Gain per stage")
    ax.legend(fontsize=8)
    return _fig_bytes(fig)


def threshold(param: str, moves: dict, names) -> bytes:
    """Tune score against ``param`` per class: ``moves`` ``{class index: sweep Move}`` (the
    final chain's last sweep of each class), ``names`` the class names.

    Small multiples on one axes (a grid of panels, each scaled to its own ranges, printed at
    its edges; the chosen value in red and in the panel's title): a matplotlib ``Axes`` per
    class cost 0.5 s a figure, mostly its ticks, and most of a default search's report.
    """
    n = len(names)
    ncol = 6 if n > 6 else n
    nrow = int(np.ceil(n / ncol))
    fig, ax = _subplots((2.2 * ncol, 1.8 * nrow + 0.4))
    fig.subplots_adjust(left=0.0, right=1.0, bottom=0.0, top=1 - 0.45 / (1.8 * nrow + 0.4))
    ax.set_axis_off()
    ax.set_xlim(0, ncol)
    ax.set_ylim(nrow, 0)  # row 0 on top
    w, h = 0.74, 0.56  # the plot area of a panel, in panel units
    curves, chosen, frames = [], [], []
    small = {"fontsize": 6, "color": "0.3"}
    for c in range(n):
        x0, y0 = c % ncol + 0.2, c // ncol + 0.2
        frames.append([(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h), (x0, y0)])
        m = moves.get(c)
        if m is None:
            ax.text(x0 + w / 2, y0 - 0.04, names[c], ha="center", fontsize=7)
            ax.text(x0 + w / 2, y0 + h / 2, "not swept", ha="center", va="center", fontsize=7)
            continue
        if m.edges is not None:  # the exact sweep's step curve
            edges = np.asarray(m.edges, np.float64)
            xs, ys = np.repeat(edges, 2)[1:-1], np.repeat(np.asarray(m.scores_db, np.float64), 2)
        else:
            xs, ys = np.asarray(m.points, np.float64), np.asarray(m.scores_db, np.float64)
        ok = np.isfinite(xs) & np.isfinite(ys)
        xs, ys = xs[ok], ys[ok]
        if not xs.size:
            continue
        lo, hi, ylo, yhi = xs.min(), xs.max(), ys.min(), ys.max()
        u = (xs - lo) / (hi - lo) if hi > lo else np.full(xs.size, 0.5)
        v = (ys - ylo) / (yhi - ylo) if yhi > ylo else np.full(ys.size, 0.5)
        curves.append(np.c_[x0 + w * u, y0 + h * (1 - v)])
        value = float(np.clip(m.value, lo, hi)) if not np.isnan(m.value) else None
        if value is not None:
            uc = (value - lo) / (hi - lo) if hi > lo else 0.5
            chosen.append([(x0 + w * uc, y0), (x0 + w * uc, y0 + h)])
        ax.text(x0 + w / 2, y0 - 0.04, f"{names[c]}: {m.value:.3g}", ha="center", fontsize=7)
        ax.text(x0, y0 + h + 0.03, f"{lo:.3g}", ha="left", va="top", **small)
        ax.text(x0 + w, y0 + h + 0.03, f"{hi:.3g}", ha="right", va="top", **small)
        if yhi > ylo:
            ax.text(x0 - 0.02, y0, f"{yhi:.3f}", ha="right", va="center", **small)
            ax.text(x0 - 0.02, y0 + h, f"{ylo:.3f}", ha="right", va="center", **small)
        else:  # flat: its one value
            ax.text(x0 - 0.02, y0 + h / 2, f"{ylo:.3f}", ha="right", va="center", **small)
    ax.add_collection(LineCollection(frames, colors="0.75", linewidths=0.6))
    ax.add_collection(LineCollection(curves, colors="C0", linewidths=0.9))
    ax.add_collection(LineCollection(chosen, colors="C3", linewidths=0.8))
    fig.suptitle(f"tune CAPI-SDRi (dB, each panel's range at its left) against {param} per "
                 "class, final chain (red and in the title: chosen)", fontsize=9)
    return _fig_bytes(fig, tight=False)


def per_class(table: pd.DataFrame) -> bytes:
    """Per-class CAPI-SDRi bars of the baseline and the final policy (columns ``class``,
    ``baseline_db``, ``final_db``)."""
    fig, ax = _subplots((7, 0.25 * len(table) + 1.2))
    ys = np.arange(len(table))
    ax.barh(ys - 0.2, table["baseline_db"], 0.4, label="baseline")
    ax.barh(ys + 0.2, table["final_db"], 0.4, label="final policy")
    ax.set_yticks(ys, table["class"], fontsize=7)
    ax.set_xlabel("per-class CAPI-SDRi (dB): mean SDRi over the class's entries")
    ax.set_title("per class, all soundscapes (the final policy in-sample)", fontsize=9)
    ax.legend(fontsize=8)
    ax.invert_yaxis()
    return _fig_bytes(fig)


def confusion(matrix: np.ndarray, labels) -> bytes:
    """Label confusion ``(C + 1, C + 1)`` counts (reference rows, estimated columns), log scale."""
    fig, ax = _subplots((0.32 * len(labels) + 2, 0.32 * len(labels) + 1.5))
    im = ax.imshow(np.log1p(matrix), cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set_xlabel("estimated label")
    ax.set_ylabel("reference label")
    ax.set_title("label confusion of the final policy (log(1+count))", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.04)
    return _fig_bytes(fig)


def gap(explanation) -> bytes:
    """`casdri.gap_figure.gap_figure` of a `casdri.gap.GapExplanation`, as PNG bytes."""
    return _fig_bytes(gap_figure(explanation))

