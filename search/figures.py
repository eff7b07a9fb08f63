"""The PNG figures of a search report, drawn with matplotlib from plain inputs (tables,
arrays, sweep moves, a gap explanation); `search.report` imports this module only when it
draws, so a run without figures never imports matplotlib.

Conventions: every function returns PNG bytes (110 dpi) of a `matplotlib.figure.Figure` drawn
on the Agg canvas ``savefig`` picks (no pyplot, nothing registered globally).
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
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
    final chain's last sweep of each class), ``names`` the class names."""
    n = len(names)
    ncol = 6 if n > 6 else n
    nrow = int(np.ceil(n / ncol))
    fig, axes = _subplots((2.2 * ncol, 1.8 * nrow + 0.4), nrow, ncol, squeeze=False,
                          sharey=False)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.07, top=1 - 0.45 / (1.8 * nrow + 0.4),
                        wspace=0.35, hspace=0.55)
    for c in range(nrow * ncol):
        ax = axes[c // ncol][c % ncol]
        if c >= n:
            ax.axis("off")
            continue
        ax.set_title(names[c], fontsize=7, pad=2)
        ax.tick_params(labelsize=6, length=2, pad=1)
        ax.locator_params(nbins=3)
        m = moves.get(c)
        if m is None:
            ax.text(0.5, 0.5, "not swept", ha="center", va="center", fontsize=7,
                    transform=ax.transAxes)
            continue
        if m.edges is not None:  # the step curve as a line: a StepPatch costs 5x to draw
            edges = np.asarray(m.edges, np.float64)
            ax.plot(np.repeat(edges, 2)[1:-1], np.repeat(np.asarray(m.scores_db), 2), lw=0.9)
        else:
            ax.plot(m.points, m.scores_db, lw=0.9)
        ax.axvline(m.value, color="C3", lw=0.8)
    fig.suptitle(f"tune CAPI-SDRi (dB) against {param} per class, final chain (red: chosen)",
                 fontsize=9)
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

