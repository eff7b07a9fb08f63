"""Outputs of a search: the policy YAML, the trials table (Parquet) and a Markdown report with
matplotlib PNG figures. Every file is written atomically (`casdri._io.atomic_write_bytes`).

Conventions:
    * ``OUT/policy.yaml``: ``refine`` parameters plus a ``provenance`` block (cache id and hash,
      stages, tune and held-out scores with their CI, seed, versions).
    * ``OUT/trials.parquet``: one row per Optuna trial, enumerated choice or sweep move, with
      its chain (``fold``), ``stage``, ``engine`` and tune ``score_db``.
    * ``OUT/report.md`` and ``OUT/figures/*.png``: gain per stage, score against each
      threshold per class (the final chain's last sweep of it), per-class CAPI-SDRi of the
      baseline and the final policy, and the label confusion of the final policy.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure

from casdri._io import atomic_write_bytes
from casdri.gap import explain
from casdri.gap_figure import gap_figure
from casdri.errors import InputError

from .engines import dashboard_target
from .result import SearchResult, summarize

__all__ = ["write_outputs", "check_out_dir", "Outputs"]


class Outputs(dict):
    """``{kind: Path}`` of the files written (``policy``, ``trials``, ``report``, figures) and
    ``removed``: the stale figures of an earlier run deleted from ``OUT/figures``."""


def check_out_dir(out_dir) -> Path:
    """The output folder, checked before any work.

    Raises:
        InputError: an empty name, or a path that exists and is not a folder.
    """
    if out_dir is None or str(out_dir).strip() == "":
        raise InputError("--out is empty; name an output folder (e.g. --out casdri-search-out)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder; choose a folder name")
    if (out / "figures").exists() and not (out / "figures").is_dir():
        raise InputError(f"--out {out}: {out / 'figures'} is not a folder; remove it")
    return out


def _md_table(df: pd.DataFrame, floatfmt: str = "{:+.3f}") -> str:
    cols = list(df.columns)
    out = ["| " + " | ".join(map(str, cols)) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, (float, np.floating)):
                fmt = "{:.2f}" if c == "seconds" else floatfmt
                cells.append("" if np.isnan(v) else fmt.format(v))
            else:
                cells.append(str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _fig_bytes(fig, tight: bool = True) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight" if tight else None)
    return buf.getvalue()


def _subplots(figsize, *args, **kwargs):
    """A `matplotlib.figure.Figure` and its axes (no pyplot: the report only writes PNGs,
    through the Agg canvas ``savefig`` picks)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def _fig_stage_gains(result: SearchResult) -> bytes:
    st = result.stage_table()
    fig, ax = _subplots((7, 3.2))
    xs = np.arange(len(st))
    ax.bar(xs - 0.2, st["tune_gain_db"].fillna(0.0), 0.4, label="tune (final chain)")
    if result.fold_results:
        ax.bar(xs + 0.2, st["heldout_gain_db"].fillna(0.0), 0.4, label="held-out (pooled folds)")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(xs, st["stage"])
    ax.set_ylabel("gain (dB CAPI-SDRi)")
    ax.set_title("Gain per stage")
    ax.legend(fontsize=8)
    return _fig_bytes(fig)


def _last_moves(result: SearchResult) -> dict:
    """``{param: {cls: Move}}``: the last sweep of each per-class coordinate, final chain."""
    out: dict = {}
    for rec in result.final.records:
        for m in rec.moves:
            if m.cls is not None and m.engine in ("sweep", "grid") and m.points.size:
                out.setdefault(m.param, {})[m.cls] = m
    return out


def _fig_threshold(param: str, moves: dict, names) -> bytes:
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


def _fig_per_class(table: pd.DataFrame) -> bytes:
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


def _fig_confusion(matrix: np.ndarray, labels) -> bytes:
    fig, ax = _subplots((0.32 * len(labels) + 2, 0.32 * len(labels) + 1.5))
    im = ax.imshow(np.log1p(matrix), cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set_xlabel("estimated label")
    ax.set_ylabel("reference label")
    ax.set_title("label confusion of the final policy (log(1+count))", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.04)
    return _fig_bytes(fig)


def policy_document(result: SearchResult) -> str:
    """The policy YAML text: the problem's own parameter YAML plus ``provenance``."""
    prov = dict(result.provenance)
    prov.update(_scores(result))
    prob = result.problem
    if hasattr(prob, "policy_yaml"):
        return prob.policy_yaml(result.x_final, prov)
    doc = {"policy": "refine", "params": {k: np.asarray(result.x_final)[p.columns].tolist()
                                          for k, p in prob.params.items()},
           "provenance": prov}
    return yaml.safe_dump(doc, sort_keys=False)


def _scores(result: SearchResult) -> dict:
    h, t = result.heldout, result.test
    sel = result.final.selection
    return {
        "stage": result.settings.stage, "stages": list(result.stages),
        "selection": None if sel is None else {
            "kept": list(sel.stages),
            "inner_gain_db": {k: _f(v) for k, v in sel.inner_gain_db.items()},
            "alone_gain_db": {k: _f(v) for k, v in sel.alone_gain_db.items()},
            "variant": dict(sel.variant)},
        "seed": result.settings.seed, "folds": result.folds.k,
        "repeats": result.settings.repeats, "group_by": result.folds.group_by,
        "margin_db": result.settings.margin, "trials": result.settings.n_trials,
        "sampler": result.settings.sampler,
        "baseline_db": _f(result.baseline_db), "final_tune_db": _f(result.final_tune_db),
        "tune_gain_db": _f(result.tune_gain_db), "oracle_db": _f(result.oracle_db),
        "heldout": None if h is None else {
            "capi_sdri_db": _f(h.tuned_db), "ci95_db": [_f(v) for v in h.tuned_ci_db],
            "gain_db": _f(h.gain_db), "gain_ci95_db": [_f(v) for v in h.gain_ci_db],
            "n_boot": h.n_boot, "gap_closed": _f(result.gap_closed),
            "repeat_gains_db": [_f(g) for g in result.repeat_gains_db]},
        "test": None if t is None else {
            "split": t.split, "gain_db": _f(t.gain.gain_db),
            "gain_ci95_db": [_f(v) for v in t.gain.gain_ci_db],
            "capi_sdri_db": _f(t.gain.tuned_db), "n_soundscapes": t.gain.n_soundscapes},
    }


def _f(v) -> Optional[float]:
    v = float(v)
    return None if np.isnan(v) else round(v, 6)


def write_outputs(result: SearchResult, out_dir, figures: bool = True) -> Outputs:
    """Write policy, trials and report into ``out_dir`` (created); returns the paths.

    PNG files in ``OUT/figures`` that this run did not write (an earlier run's) are deleted,
    so the folder shows only figures the report lists; their paths are in ``["removed"]``.

    Raises:
        InputError: see `check_out_dir`.
    """
    out = check_out_dir(out_dir)
    written = Outputs()
    written["policy"] = atomic_write_bytes(out / "policy.yaml", policy_document(result).encode())
    trials = result.trials_table()
    buf = io.BytesIO()
    trials.to_parquet(buf, index=False)
    written["trials"] = atomic_write_bytes(out / "trials.parquet", buf.getvalue())
    figs = {}
    if figures:
        figs["gain per stage"] = ("gain_per_stage.png", _fig_stage_gains(result))
        names = result.problem.class_names
        for param, moves in _last_moves(result).items():
            figs[f"score against {param}"] = (f"threshold_{param}.png",
                                              _fig_threshold(param, moves, names))
        prob = result.problem
        if hasattr(prob, "per_class_table"):
            table = prob.per_class_table(result.x_final)
            figs["per-class CAPI-SDRi"] = ("per_class.png", _fig_per_class(table))
        if hasattr(prob, "cache"):  # casdri.gap: where the dB go, by part and class
            figs["gap to the oracle labelling bound"] = ("gap.png", _fig_bytes(gap_figure(
                explain(prob.cache, prob.policy, result.x_final))))
        if hasattr(prob, "confusion"):
            matrix, labels = prob.confusion(result.x_final)
            figs["label confusion"] = ("confusion.png", _fig_confusion(matrix, labels))
        for key, (name, data) in figs.items():
            written[key] = atomic_write_bytes(out / "figures" / name, data)
    keep = {name for name, _ in figs.values()}
    stale = sorted(p for p in (out / "figures").glob("*.png") if p.name not in keep)
    for p in stale:
        p.unlink()
    written["removed"] = stale
    written["report"] = atomic_write_bytes(out / "report.md", _markdown(result, figs).encode())
    return written


def _markdown(result: SearchResult, figs: dict) -> str:
    s = result.settings
    prov = result.provenance
    lines = ["# casdri-search report", ""]
    if prov.get("cache_path") or prov.get("cache_id"):
        lines += [f"Cache `{prov.get('cache_path')}` (id `{prov.get('cache_id')}`, hash "
                  f"`{prov.get('cache_hash')}`), {result.folds.n_soundscapes} soundscapes.", ""]
    f = result.folds
    grouping = (f"grouped by {f.group_by} ({f.n_groups} groups), " if f.groups is not None
                else "")
    chain = " → ".join(result.stages) or "none (the start policy)"
    how = (f"`--stage auto` (kept `{chain}` by a {s.inner_folds}-fold inner cross-validation "
           "inside every tune set)" if s.stage == "auto" else f"Stages `{chain}`")
    lines += [f"{how}, {f.k} folds ({grouping}stratified by number of sources)"
              f"{f' x {s.repeats} repeats' if s.repeats > 1 else ''}, {s.n_trials} Optuna "
              f"trials per joint stage ({s.sampler}), margin {s.margin} dB, seed {s.seed}, "
              f"{result.seconds:.1f} s.", ""]
    lines += ["## Result", "", "```", *summarize(result), "```", ""]
    for w in result.warnings:
        lines += [f"> **{w}**", ""]
    st = result.stage_table()
    lines += ["## Stages", "", "Tune gain of the final chain beside the pooled held-out gain "
              "(per stage, averaged over repeats); **negative held-out gains are flagged**.", "",
              _md_table(st.drop(columns=["note"])), ""]
    for _, r in st[st["heldout_gain_db"] < 0].iterrows():
        lines += [f"> **Stage `{r.stage}` loses {r.heldout_gain_db:+.3f} dB held out.**", ""]
    lines += ["## Folds", "", "Soundscapes per fold and number of sources:", ""]
    fs = pd.DataFrame(result.folds.summary()).fillna(0).astype(int).sort_index()  # repeat 0
    fs.columns = [f"fold {c}" for c in fs.columns]
    fs.index.name = "sources"
    lines += [_md_table(fs.reset_index(), "{}"), ""]
    if figs:
        lines += ["## Figures", ""]
        for key, (name, _) in figs.items():
            lines += [f"### {key}", "", f"![{key}](figures/{name})", ""]
    if s.storage:
        lines += ["## Study", "", f"Studies `{s.study_name}.<fold>.<stage>` in `{s.storage}`; "
                  "open them with:", "", "```", f"optuna-dashboard {dashboard_target(s.storage)}",
                  "```", ""]
    return "\n".join(lines)
