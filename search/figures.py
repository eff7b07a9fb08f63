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

__all__ = ["stage_gains", "threshold", "threshold_figure", "per_class", "confusion", "gap",
           "MIN_SPAN_DB"]


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


#: the smallest score span a threshold panel stretches to its height (dB): flatter curves are
#: drawn flat, not as full steps
MIN_SPAN_DB = 1e-3


def threshold(param: str, moves: dict, names) -> bytes:
    """Tune score against ``param`` per class: ``moves`` ``{class index: sweep Move}`` (the
    final chain's last sweep of each class), ``names`` the class names (`threshold_figure`).
    """
    return _fig_bytes(threshold_figure(param, moves, names), tight=False)


def threshold_figure(param: str, moves: dict, names) -> Figure:
    """The `threshold` figure: small multiples on one axes.

    A grid of panels, 6 a row, each scaled to its own ranges (printed at its edges; a score
    span under `MIN_SPAN_DB` is centred, not stretched); the curve breaks where a score or an
    edge is not finite; the chosen value is a red line (at the range's end when it is off,
    ±inf) and in the panel's title. Drawn as three `LineCollection` (frames, curves, chosen
    values) on one axes: an ``Axes`` per class cost 0.5 s a figure, mostly its ticks.
    """
    n = len(names)
    ncol = 6 if n > 6 else n
    nrow = int(np.ceil(n / ncol))
    fig, ax = _subplots((max(2.2 * ncol, 9.0), 1.8 * nrow + 0.4))
    fig.subplots_adjust(left=0.0, right=1.0, bottom=0.0, top=1 - 0.45 / (1.8 * nrow + 0.4))
    ax.set_axis_off()
    ax.set_xlim(0, max(ncol, 9.0 / 2.2))
    ax.set_ylim(nrow, 0)  # row 0 on top
    w, h = 0.74, 0.56  # the plot area of a panel, in panel units
    curves, chosen, frames = [], [], []
    small = {"fontsize": 6, "color": "0.3"}
    for c in range(n):
        x0, y0 = c % ncol + 0.2, c // ncol + 0.2
        frames.append([(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h), (x0, y0)])
        m = moves.get(c)
        if m is not None and m.edges is not None:  # the exact sweep's step curve
            edges = np.asarray(m.edges, np.float64)
            xs, ys = np.repeat(edges, 2)[1:-1], np.repeat(np.asarray(m.scores_db, np.float64), 2)
        elif m is not None:
            xs, ys = np.asarray(m.points, np.float64), np.asarray(m.scores_db, np.float64)
        ok = np.isfinite(xs) & np.isfinite(ys) if m is not None else np.zeros(0, bool)
        if not ok.any():
            ax.text(x0 + w / 2, y0 - 0.04, names[c], ha="center", fontsize=7)
            ax.text(x0 + w / 2, y0 + h / 2, "not swept" if m is None else "no finite score",
                    ha="center", va="center", fontsize=7)
            continue
        lo, hi = xs[ok].min(), xs[ok].max()
        ylo, yhi = ys[ok].min(), ys[ok].max()
        if yhi - ylo < MIN_SPAN_DB:
            mid = 0.5 * (ylo + yhi)
            ylo, yhi = mid - MIN_SPAN_DB / 2, mid + MIN_SPAN_DB / 2
        u = (xs - lo) / (hi - lo) if hi > lo else np.full(xs.size, 0.5)
        v = (ys - ylo) / (yhi - ylo)
        pts = np.c_[x0 + w * u, y0 + h * (1 - v)]
        runs = np.split(np.arange(xs.size), np.flatnonzero(np.diff(ok.astype(np.int8))) + 1)
        curves += [pts[r] for r in runs if ok[r[0]]]  # the finite runs, each its own line
        if not np.isnan(m.value):
            uc = (float(np.clip(m.value, lo, hi)) - lo) / (hi - lo) if hi > lo else 0.5
            chosen.append([(x0 + w * uc, y0), (x0 + w * uc, y0 + h)])
        ax.text(x0 + w / 2, y0 - 0.04, f"{names[c]}: {m.value:.3g}", ha="center", fontsize=7)
        ax.text(x0, y0 + h + 0.03, f"{lo:.3g}", ha="left", va="top", **small)
        ax.text(x0 + w, y0 + h + 0.03, f"{hi:.3g}", ha="right", va="top", **small)
        ax.text(x0 - 0.02, y0, f"{yhi:.3f}", ha="right", va="center", **small)
        ax.text(x0 - 0.02, y0 + h, f"{ylo:.3f}", ha="right", va="center", **small)
    ax.add_collection(LineCollection(frames, colors="0.75", linewidths=0.6, label="frames"))
    ax.add_collection(LineCollection(curves, colors="C0", linewidths=0.9, label="curves"))
    ax.add_collection(LineCollection(chosen, colors="C3", linewidths=0.8, label="chosen"))
    fig.suptitle(f"tune CAPI-SDRi (dB, each panel's range at its left) against {param} per "
                 "class, final chain\n(red and in the title: the chosen value)", fontsize=9)
    return fig


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

