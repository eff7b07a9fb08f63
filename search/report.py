"""Outputs of a search: the policy YAML, the trials table (Parquet) and a Markdown report with
matplotlib PNG figures. Every file is written atomically (temp file, then ``os.replace``).

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
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import yaml

from .run import SearchResult, summarize

__all__ = ["write_outputs", "atomic_write_bytes", "Outputs"]


class Outputs(dict):
    """``{kind: Path}`` of the files written (``policy``, ``trials``, ``report``, figures)."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


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
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _fig_stage_gains(result: SearchResult) -> bytes:
    plt = _plt()
    st = result.stage_table()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    xs = np.arange(len(st))
    ax.bar(xs - 0.2, st["tune_gain_db"], 0.4, label="tune (final chain)")
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
    plt = _plt()
    n = len(names)
    ncol = 6 if n > 6 else n
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.2 * ncol, 1.8 * nrow + 0.4), squeeze=False,
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
        if m.edges is not None:
            ax.stairs(m.scores_db, m.edges, lw=0.9, baseline=None)
        else:
            ax.plot(m.points, m.scores_db, lw=0.9)
        ax.axvline(m.value, color="C3", lw=0.8)
    fig.suptitle(f"tune CAPI-SDRi (dB) against {param} per class, final chain (red: chosen)",
                 fontsize=9)
    return _fig_bytes(fig, tight=False)


def _fig_per_class(table: pd.DataFrame) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(table) + 1.2))
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
    plt = _plt()
    fig, ax = plt.subplots(figsize=(0.32 * len(labels) + 2, 0.32 * len(labels) + 1.5))
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
    h = result.heldout
    return {
        "stages": list(result.stages),
        "seed": result.settings.seed, "folds": result.folds.k,
        "margin_db": result.settings.margin, "trials": result.settings.n_trials,
        "sampler": result.settings.sampler,
        "baseline_db": _f(result.baseline_db), "final_tune_db": _f(result.final_tune_db),
        "tune_gain_db": _f(result.tune_gain_db), "oracle_db": _f(result.oracle_db),
        "heldout": None if h is None else {
            "capi_sdri_db": _f(h.tuned_db), "ci95_db": [_f(v) for v in h.tuned_ci_db],
            "gain_db": _f(h.gain_db), "gain_ci95_db": [_f(v) for v in h.gain_ci_db],
            "n_boot": h.n_boot, "gap_closed": _f(result.gap_closed)},
    }


def _f(v) -> Optional[float]:
    v = float(v)
    return None if np.isnan(v) else round(v, 6)


def write_outputs(result: SearchResult, out_dir, figures: bool = True) -> Outputs:
    """Write policy, trials and report into ``out_dir`` (created); returns the paths."""
    out = Path(out_dir)
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
            from casdri.gap import explain
            from casdri.gap_figure import gap_figure

            _plt()
            figs["gap to the oracle labelling bound"] = ("gap.png", _fig_bytes(gap_figure(
                explain(prob.cache, prob.policy, result.x_final))))
        if hasattr(prob, "confusion"):
            matrix, labels = prob.confusion(result.x_final)
            figs["label confusion"] = ("confusion.png", _fig_confusion(matrix, labels))
        for key, (name, data) in figs.items():
            written[key] = atomic_write_bytes(out / "figures" / name, data)
    written["report"] = atomic_write_bytes(out / "report.md", _markdown(result, figs).encode())
    return written


def _markdown(result: SearchResult, figs: dict) -> str:
    s = result.settings
    prov = result.provenance
    lines = ["# casdri-search report", ""]
    if prov.get("cache_path") or prov.get("cache_id"):
        lines += [f"Cache `{prov.get('cache_path')}` (id `{prov.get('cache_id')}`, hash "
                  f"`{prov.get('cache_hash')}`), {result.folds.n_soundscapes} soundscapes.", ""]
    lines += [f"Stages `{' → '.join(result.stages)}`, {result.folds.k} folds (stratified by "
              f"number of sources), {s.n_trials} Optuna trials per joint stage ({s.sampler}), "
              f"margin {s.margin} dB, seed {s.seed}, {result.seconds:.1f} s.", ""]
    lines += ["## Result", "", "```", *summarize(result), "```", ""]
    for w in result.warnings:
        lines += [f"> **{w}**", ""]
    lines += ["## Stages", "", _md_table(result.stage_table().drop(columns=["note"])), ""]
    lines += ["## Folds", "", "Soundscapes per fold and number of sources:", ""]
    fs = pd.DataFrame(result.folds.summary()).fillna(0).astype(int).sort_index()
    fs.columns = [f"fold {c}" for c in fs.columns]
    fs.index.name = "sources"
    lines += [_md_table(fs.reset_index(), "{}"), ""]
    if figs:
        lines += ["## Figures", ""]
        for key, (name, _) in figs.items():
            lines += [f"### {key}", "", f"![{key}](figures/{name})", ""]
    if s.storage:
        from .engines import dashboard_target

        lines += ["## Study", "", f"Studies `{s.study_name}.<fold>.<stage>` in `{s.storage}`; "
                  "open them with:", "", "```", f"optuna-dashboard {dashboard_target(s.storage)}",
                  "```", ""]
    return "\n".join(lines)
