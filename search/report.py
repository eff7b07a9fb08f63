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

from casdri._cli import lazy_import
from casdri._io import atomic_write_bytes, deferred_interrupts
from casdri.gap import explain
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
            "repeat_gains_db": [_f(g) for g in result.repeat_gains_db],
            **_parts(result.start_gain, result.tuning_gain),
            "by_recording": _by_recording(result.by_recording)},
        "features": {f.feature: {"fields": list(f.fields), "heldout_gain_db": _f(f.gain_db),
                                 "heldout_changed": f.changed,
                                 "test_gain_db": _f(f.test_gain_db),
                                 "test_changed": f.test_changed if f.test_changed >= 0
                                 else None} for f in result.features},
        "test": None if t is None else {
            "split": t.split, "gain_db": _f(t.gain.gain_db),
            "gain_ci95_db": [_f(v) for v in t.gain.gain_ci_db],
            "capi_sdri_db": _f(t.gain.tuned_db), "n_soundscapes": t.gain.n_soundscapes,
            **_parts(t.start, t.tuning), "by_recording": _by_recording(t.by_recording),
            "start_shift": None if t.start_shift is None else {
                "difference_db": _f(t.start_shift[0]),
                "ci95_db": [_f(v) for v in t.start_shift[1]],
                "recording_ci95_db": None if t.start_shift[2] is None
                else [_f(v) for v in t.start_shift[2]]}},
    }


def _parts(start, tuning) -> dict:
    """The two parts of a gain over the baseline (`search.result` conventions): the untuned
    start's and tuning's, each with its 95% CI."""
    return {f"{name}_gain_db": None if b is None else {
        "gain_db": _f(b.gain_db), "ci95_db": [_f(v) for v in b.gain_ci_db]}
        for name, b in (("start", start), ("tuning", tuning))}


def _by_recording(parts) -> Optional[dict]:
    """The 95% CIs of (gain, start, tuning) that resample source recordings, or None."""
    if parts is None:
        return None
    return {f"{name}_ci95_db": [_f(v) for v in b.gain_ci_db]
            for name, b in zip(("gain", "start", "tuning"), parts)}


def _f(v) -> Optional[float]:
    v = float(v)
    return None if np.isnan(v) else round(v, 6)


def _last_moves(result: SearchResult) -> dict:
    """``{param: {cls: Move}}``: the last sweep of each per-class coordinate, final chain."""
    out: dict = {}
    for rec in result.final.records:
        for m in rec.moves:
            if m.cls is not None and m.engine in ("sweep", "grid") and m.points.size:
                out.setdefault(m.param, {})[m.cls] = m
    return out


#: seconds `_figures` waits for a worker's threshold figures before drawing them itself
FIGURES_TIMEOUT_S = 120.0


def _figures(result: SearchResult, draw, executor=None) -> list:
    """``(key, file name, PNG bytes)`` of every figure of the report, in report order, drawn
    by ``draw`` (the `search.figures` module). With an ``executor`` (the search's worker
    processes, idle once the chains are done), one worker draws the threshold figures while
    this process draws the others (`_draw_thresholds`: the same bytes, with matplotlib's
    settings as the worker imported them); should it fail, or not answer within
    `FIGURES_TIMEOUT_S`, they are drawn here."""
    names = list(result.problem.class_names)
    thresholds = [(f"score against {param}", f"threshold_{param}.png", (param, moves, names))
                  for param, moves in _last_moves(result).items()]
    remote = None
    if executor is not None and thresholds:
        try:
            remote = executor.submit(_draw_thresholds, [args for *_, args in thresholds])
        except Exception:  # noqa: BLE001 - (a broken pool) drawn here instead
            remote = None
    head = [("gain per stage", "gain_per_stage.png",
             draw.stage_gains(result.stage_table(), bool(result.fold_results)))]
    tail = []
    prob = result.problem
    if hasattr(prob, "per_class_table"):
        tail.append(("per-class CAPI-SDRi", "per_class.png", draw.per_class(
            prob.per_class_table(result.x_final))))
    if hasattr(prob, "cache"):  # casdri.gap: where the dB go, by part and class
        tail.append(("gap to the oracle labelling bound", "gap.png", draw.gap(
            explain(prob.cache, prob.policy, result.x_final))))
    if hasattr(prob, "confusion"):
        tail.append(("label confusion", "confusion.png",
                     draw.confusion(*prob.confusion(result.x_final))))
    drawn = None
    if remote is not None:
        try:
            drawn = remote.result(timeout=FIGURES_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - the worker died, failed or hangs: draw them here
            drawn = None
    if drawn is None:
        drawn = [draw.threshold(*args) for *_, args in thresholds]
    return head + [(key, name, data) for (key, name, _), data in zip(thresholds, drawn)] + tail


def _draw_thresholds(jobs: list) -> list:
    """PNG bytes of `search.figures.threshold` for each ``(param, moves, names)`` (in a worker
    process: `_figures`)."""
    draw = lazy_import("search.figures")
    return [draw.threshold(*args) for args in jobs]


def write_outputs(result: SearchResult, out_dir, figures: bool = True,
                  executor=None) -> Outputs:
    """Write policy, trials and report into ``out_dir`` (created); returns the paths.

    ``executor``: the search's worker processes (a ``concurrent.futures``-style executor, as
    `search._prestart.prestart` returns), which draw some figures while this process draws
    the rest; None draws every figure here. The files are the same either way, unless the
    caller changed matplotlib's settings (``rcParams``) in this process: a worker draws with
    the settings it imported.

    Every file is rendered in memory first (the figures take seconds) and only then written,
    each atomically and all in one `casdri._io.deferred_interrupts` block: a run stopped by
    Ctrl-C or SIGTERM leaves the folder holding the earlier run's files or this run's complete
    set (a signal during the writes takes effect after the last one), never a new policy
    beside an old report. PNG files in ``OUT/figures`` that this run did not write (an
    earlier run's) are deleted in the same block, so the folder shows only figures the report
    lists; their paths are in ``["removed"]``.

    Raises:
        InputError: see `check_out_dir`.
    """
    out = check_out_dir(out_dir)
    trials = io.BytesIO()
    result.trials_table().to_parquet(trials, index=False)
    files = [("policy", "policy.yaml", policy_document(result).encode()),
             ("trials", "trials.parquet", trials.getvalue())]
    figs = {}
    if figures:  # matplotlib is imported only here (search.figures): --no-figures skips it
        for key, name, data in _figures(result, lazy_import("search.figures"), executor):
            figs[key] = (name, data)
            files.append((key, f"figures/{name}", data))
    files.append(("report", "report.md", _markdown(result, figs).encode()))
    written = Outputs()
    keep = {name for name, _ in figs.values()}
    with deferred_interrupts():
        for key, name, data in files:
            written[key] = atomic_write_bytes(out / name, data)
        stale = sorted(p for p in (out / "figures").glob("*.png") if p.name not in keep)
        for p in stale:
            p.unlink()
    written["removed"] = stale
    return written


def _rule(s) -> str:
    """The acceptance rule in one phrase (`search.acceptance`)."""
    if s.accept == "margin":
        return f"margin rule ({s.margin} dB)"
    return (f"evidence rule (alpha {s.alpha}, stage alpha {s.stage_alpha}, at least "
            f"{s.min_changed} soundscapes changed)")


def _stage_rows(st: pd.DataFrame, auto: bool) -> pd.DataFrame:
    """The report's stage table: ``kept`` (the chains whose stage list holds the stage) is
    `--stage auto`'s choice, so it is shown, renamed, only for auto; every run shows what the
    stage did to the final policy (the console's ``(result dropped: ...)`` note)."""
    out = st.drop(columns=["note"])
    out = (out.rename(columns={"kept": "chosen by auto"}) if auto
           else out.drop(columns=["kept", "inner_alone_db"]))
    out.insert(2, "final chain", [
        "changed the policy" if g > 0 else
        ("not in the final chain" if np.isnan(g) else "unchanged" + (f" ({n})" if n else ""))
        for g, n in zip(st["tune_gain_db"], st["note"])])
    return out


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
    how = (f"`--stage auto` (chose `{chain}` by a {s.inner_folds}-fold inner cross-validation "
           "inside every tune set)" if s.stage == "auto" else f"Stages `{chain}`")
    lines += [f"{how}, {f.k} folds ({grouping}stratified by number of sources)"
              f"{f' x {s.repeats} repeats' if s.repeats > 1 else ''}, {s.n_trials} Optuna "
              f"trials per joint stage ({s.sampler}), {_rule(s)}, seed {s.seed}, "
              f"{result.seconds:.1f} s.", ""]
    lines += ["## Result", "", "```", *summarize(result), "```", ""]
    for w in result.warnings:
        lines += [f"> **{w}**", ""]
    st = result.stage_table()
    lines += ["## Stages", "", "Tune gain of the final chain beside the pooled held-out gain "
              "(per stage, averaged over repeats); **negative held-out gains are flagged**. "
              "`final chain`: whether the stage's result changed the final policy, or why not.",
              "", _md_table(_stage_rows(st, s.stage == "auto")), ""]
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
