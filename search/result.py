"""`SearchResult`: what one search produced, its stage table and its printed summary.

Conventions (scores in dB CAPI-SDRi):
    * Held-out: every soundscape is scored once per repeat by the policy tuned without its
      fold; the held-out gain is the mean over repeats of each repeat's pooled gain over the
      ``baseline`` policy, its CI a paired bootstrap over soundscapes of that mean
      (`casdri.stats.paired_bootstrap` with one row per repeat). The repeats' own gains give
      the spread; ``heldout_values`` (per soundscape, averaged over repeats) is for plots.
    * Tune gain: mean over fold chains of tuned − baseline on the chain's tune set; the
      difference tune − held-out is the optimism of tuning.
    * Per stage: the tune gain of the final chain beside the pooled held-out gain (held-out
      values after the stage minus before it, 0 in a fold chain that did not keep it), averaged
      over repeats. A negative held-out gain is flagged.
    * The ``oracle`` policy (true labels) bounds what label decisions can reach;
      ``gap_closed`` = held-out gain / (oracle − baseline).
    * A gain over the baseline is the sum of two parts, each with its paired-bootstrap CI
      (same resamples): the untuned start policy over the baseline (a fixed choice, nothing
      tuned: the folds cannot make it optimistic, and no fold can show how it shifts to other
      data), and tuning, the tuned policy over the start. On the demo cache the start's part
      is what does not carry over to ``eval`` (README, "Search a cache").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from .cv import ChainResult
from .settings import STAGE_ORDER, SearchSettings
from casdri.stats import BootstrapGain, dataset_mean

__all__ = ["SearchResult", "TestFigure", "FeatureGain", "summarize", "start_shift_note",
           "MIN_FOLD_SIZE"]

#: held-out folds smaller than this many soundscapes get a sample-size warning
MIN_FOLD_SIZE = 30


@dataclass(frozen=True)
class TestFigure:
    """The final policy on a test split it never saw (``--test-split``).

    Attributes:
        split: the split name; gain: paired bootstrap of the final policy against the
            baseline on that split's soundscapes (`BootstrapGain`).
        start: the untuned start policy against the baseline there; tuning: the final policy
            against the start there (``gain = start + tuning``; same resamples).
        by_recording: ``(gain, start, tuning)`` again, resampling the split's source
            recordings (`casdri.stats.cluster_weights`); None when the cache has none.
        start_shift: ``(d, ci, ci_recordings)``: the start's gain over the baseline on the
            tune soundscapes minus on this split (dB), with 95% intervals that resample each
            split's soundscapes on their own, and the two splits' recordings (one draw over
            their union; None without recordings) (`casdri.stats.gain_difference`).
    """

    split: str
    gain: BootstrapGain
    start: Optional[BootstrapGain] = None
    tuning: Optional[BootstrapGain] = None
    by_recording: Optional[tuple] = None
    start_shift: Optional[tuple] = None


@dataclass(frozen=True)
class FeatureGain:
    """A knock-out of one decision feature of the policy (``FEATURES``): the tuned policy
    against itself with the feature's fields at their start values. Features tuned jointly
    interact, so the knock-outs of several features need not add up to the tuning gain.

    Attributes:
        feature: its name; fields: the policy fields it holds.
        gain_db: held out: per repeat, the pooled held-out mean of the fold policies minus that
            of the same policies with the feature reset; the mean over repeats.
        changed: held-out soundscapes whose value the reset changes (mean over repeats).
        test_gain_db, test_changed: the same for the final policy on the test split (NaN and
            -1 without one).
    """

    feature: str
    fields: tuple
    gain_db: float
    changed: int
    test_gain_db: float = float("nan")
    test_changed: int = -1


@dataclass
class SearchResult:
    """Everything one search produced (see module conventions).

    Attributes:
        settings: the `search.settings.SearchSettings`.
        stages: the stages of the final chain (``--stage auto``: the ones it kept).
        splits: one `search.folds.Folds` per repeat (``folds`` is the first).
        problem: the problem searched (names, decoding and replays for the report).
        x_start, x_final: encoded start and final settings.
        final: the final `search.cv.ChainResult`; fold_results: every fold chain, repeat by
            repeat (``k`` per repeat).
        baseline_values, oracle_values, start_values, final_values, heldout_values:
            ``(S,)`` per-soundscape values (NaN = None); ``heldout_values`` averages the fold
            policies over repeats (NaN everywhere when ``k == 1``).
        heldout: paired bootstrap of held-out vs baseline (None when ``k == 1``).
        start_gain: paired bootstrap of the start policy vs baseline (untuned), tuning_gain:
            of held-out vs the start policy, on the resamples of ``heldout`` (None when
            ``k == 1``): ``heldout.gain_db == start_gain.gain_db + tuning_gain.gain_db`` (to
            rounding).
        by_recording: ``(heldout, start_gain, tuning_gain)`` with CIs that resample the
            soundscapes' source recordings instead of the soundscapes
            (`casdri.stats.cluster_weights`: what a split of other recordings may bring); None
            without recordings in the cache or without folds.
        features: one `FeatureGain` per decision feature the policy declares (``FEATURES``),
            when there are folds.
        repeat_gains_db: the held-out gain of each repeat.
        tune_gain_db: mean over fold chains of the tune-set gain over baseline (the final
            chain's gain on all soundscapes when ``k == 1``).
        test: the final policy on ``--test-split`` (None without one).
        warnings: plain-language warnings; provenance: cache id / hash, versions, seed, ...
    """

    settings: SearchSettings
    stages: tuple
    splits: list
    problem: object
    x_start: np.ndarray
    x_final: np.ndarray
    final: ChainResult
    fold_results: list
    baseline_values: np.ndarray
    oracle_values: np.ndarray
    start_values: np.ndarray
    final_values: np.ndarray
    heldout_values: np.ndarray
    heldout: Optional[BootstrapGain]
    repeat_gains_db: list
    tune_gain_db: float
    test: Optional[TestFigure] = None
    seconds: float = 0.0
    start_gain: Optional[BootstrapGain] = None
    tuning_gain: Optional[BootstrapGain] = None
    by_recording: Optional[tuple] = None
    features: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    provenance: dict = field(default_factory=dict)

    @property
    def folds(self):
        return self.splits[0]

    @property
    def baseline_db(self) -> float:
        return dataset_mean(self.baseline_values)

    @property
    def oracle_db(self) -> float:
        return dataset_mean(self.oracle_values)

    @property
    def start_db(self) -> float:
        """The start policy (``--policy-in`` or the policy defaults) on every soundscape."""
        return dataset_mean(self.start_values)

    @property
    def final_tune_db(self) -> float:
        """The final policy on every soundscape (its own tune set)."""
        return dataset_mean(self.final_values)

    @property
    def gap_closed(self) -> float:
        """Share of the baseline-to-oracle gap closed by the held-out gain (NaN if no gap)."""
        gap = self.oracle_db - self.baseline_db
        gain = (self.heldout.gain_db if self.heldout is not None
                else self.final_tune_db - self.baseline_db)
        return float(gain / gap) if gap > 0 else float("nan")

    def repeat_chains(self) -> list:
        """The fold chains grouped by repeat: ``[[ChainResult] * k] * repeats``."""
        k = self.folds.k
        return [self.fold_results[i:i + k] for i in range(0, len(self.fold_results), k)]

    def stage_table(self) -> pd.DataFrame:
        """Per stage: tune gain of the final chain, pooled held-out gain, how many fold chains
        kept it, evaluations and time (see module conventions)."""
        seen = set(self.final.stages) | {s for f in self.fold_results for s in f.stages}
        if self.final.selection is not None:
            seen |= set(self.final.selection.alone_gain_db)
        order = [s for s in STAGE_ORDER if s in seen] + sorted(seen - set(STAGE_ORDER))
        S = self.folds.n_soundscapes
        rows = []
        for stage in order:
            rec = next((r for r in self.final.records if r.stage == stage), None)
            held = [_stage_heldout(chains, stage, S) for chains in self.repeat_chains()]
            recs = [r for f in [*self.fold_results, self.final] for r in f.records
                    if r.stage == stage]
            sel = self.final.selection
            rows.append({
                "stage": stage, "engine": rec.engine if rec else "-",
                "kept": (f"{sum(stage in f.stages for f in self.fold_results)}/"
                         f"{len(self.fold_results)} folds" + (", final" if rec else "")),
                "tune_gain_db": rec.gain_db if rec else float("nan"),
                "heldout_gain_db": float(np.mean(held)) if held else float("nan"),
                "inner_alone_db": (sel.alone_gain_db.get(stage, float("nan")) if sel
                                   else float("nan")),
                "settings": sum(r.n_settings for r in recs),
                "clip_evals": sum(r.n_clip_evals for r in recs),
                "seconds": sum(r.seconds for r in recs), "note": rec.note if rec else "",
            })
        return pd.DataFrame(rows)

    def trials_table(self) -> pd.DataFrame:
        """Every trial / sweep move of every chain, one row each."""
        rows = []
        for chain in [*self.fold_results, self.final]:
            for rec in chain.records:
                rows.extend(rec.trials)
        df = pd.DataFrame(rows)
        if "class" in df:
            df["class"] = df["class"].astype("string")
        return df


def _stage_heldout(chains, stage: str, S: int) -> float:
    """Pooled held-out gain of ``stage`` over one repeat's fold chains (0 where not run)."""
    before, after = np.full(S, np.nan), np.full(S, np.nan)
    rank = {s: i for i, s in enumerate(STAGE_ORDER)}
    for f in chains:
        names = f.stages
        if stage in names:
            i = names.index(stage)
            b, a = f.heldout_values[i], f.heldout_values[i + 1]
        else:
            j = sum(rank.get(s, 99) < rank.get(stage, 99) for s in names)
            b = a = f.heldout_values[j]
        before[f.heldout_idx], after[f.heldout_idx] = b, a
    return dataset_mean(after) - dataset_mean(before)


def pooled_heldout(chains, S: int) -> np.ndarray:
    """``(S,)`` held-out values of one repeat's fold chains (the last step of each)."""
    out = np.full(S, np.nan)
    for f in chains:
        out[f.heldout_idx] = f.heldout_values[-1]
    return out


def kept_line(records, rule: str) -> str:
    """One line: which stages of the final chain changed the policy, which kept nothing, and
    why (the acceptance rule's reason, `search.acceptance.Evidence`)."""
    kept = [r.stage for r in records if r.gain_db > 0]
    dropped = []
    for r in records:
        if r.gain_db > 0:
            continue
        why = r.evidence.reason if getattr(r, "evidence", None) is not None else \
            (r.note or "no change passed the rule")
        dropped.append(f"{r.stage} ({why})" if why else r.stage)
    head = f"kept ({rule} rule): " + (", ".join(kept) if kept else "nothing (the start policy)")
    return head + ("; unchanged: " + ", ".join(dropped) if dropped else "")


def _gain_ci(b: BootstrapGain) -> str:
    return f"{b.gain_db:+.3f} dB {_ci(b)}"


def _start_name(result) -> str:
    """How the start policy is named in the gain's parts: untuned (the policy's defaults), or
    read from ``--policy-in`` (perhaps tuned: `search.run` warns)."""
    return "start (--policy-in)" if result.provenance.get("policy_in") else "untuned start"


def _db(v: float) -> str:
    """``+0.123``; below 0.0005 in size, four decimals (``-0.0001``: a sign is never hidden
    behind ``-0.000``); exactly 0 as ``+0.000``."""
    return f"{v:+.4f}" if 0 < abs(v) < 5e-4 else f"{v + 0.0:+.3f}"


def _ci(b: BootstrapGain) -> str:
    return f"[{b.gain_ci_db[0]:+.3f}, {b.gain_ci_db[1]:+.3f}]"


def _recording_line(parts) -> str:
    gain, start, tuning = parts
    return (f"  95% CIs resampling recordings: gain {_ci(gain)}, start {_ci(start)}, tuning "
            f"{_ci(tuning)} (for soundscapes of other recordings)")


def start_shift_note(result: SearchResult, from_file: Optional[bool] = None) -> Optional[str]:
    """A note when the start policy's gain over the baseline differs between the tune
    soundscapes and the test split by more than sampling soundscapes explains: the 95% interval
    of the difference (`TestFigure.start_shift`, each split's soundscapes resampled on their
    own) excludes 0.
    It says whether resampling recordings explains it. None otherwise, without a test split, or
    when the interval is undefined. (On pure noise such an interval excludes 0 about 5 % of the
    time: `gain_difference`'s tests.) ``from_file``: the start came from ``--policy-in``
    (default: what the result's provenance says)."""
    t = result.test
    if t is None or t.start_shift is None or t.start is None:
        return None
    d, (lo, hi), rec = t.start_shift
    if not (np.isfinite(d) and np.isfinite(lo) and np.isfinite(hi)) or lo <= 0.0 <= hi:
        return None
    if rec is None or not np.all(np.isfinite(rec)):
        why = ""
    elif rec[0] <= 0.0 <= rec[1]:
        why = (f", but [{rec[0]:+.3f}, {rec[1]:+.3f}] resampling the splits' recordings: "
               "consistent with the spread between recordings")
    else:
        why = f", and [{rec[0]:+.3f}, {rec[1]:+.3f}] resampling the splits' recordings"
    tuned = "" if t.tuning is None else (
        f" Tuning added {t.tuning.gain_db:+.3f} dB there" + (
            f" (k-fold estimate {result.tuning_gain.gain_db:+.3f} dB)."
            if result.tuning_gain is not None else "."))
    if from_file is None:
        from_file = bool(result.provenance.get("policy_in"))
    if from_file:
        cause = (" The start came from --policy-in: if it was tuned on the tune soundscapes, "
                 "this difference is its selection bias, not a shift between the splits.")
    else:
        cause = (" k-fold validation cannot detect this: the start is not tuned, so every fold "
                 "measures it on soundscapes like the tune split's.")
    return (f"NOTE: the start policy's gain over the baseline is {t.start.gain_db + d:+.3f} dB "
            f"on the tune soundscapes and {t.start.gain_db:+.3f} dB on {t.split!r}: a "
            f"difference of {d:+.3f} dB, 95% CI [{lo:+.3f}, {hi:+.3f}] resampling soundscapes"
            f"{why}.{cause}{tuned}")


def summarize(result: SearchResult) -> list:
    """The printed result, one line each (the CLI prints these)."""
    lines = []
    h, s = result.heldout, result.settings
    lines.append(f"baseline policy          : {result.baseline_db:8.3f} dB CAPI-SDRi "
                 f"({result.folds.n_soundscapes} soundscapes)")
    from_file = bool(result.provenance.get("policy_in"))
    label = "start policy (--policy-in):" if from_file else "start policy (untuned)   :"
    lines.append(f"{label} {result.start_db:8.3f} dB (the stages start here)")
    f = result.folds
    if f.groups is not None and result.fold_results:  # one fold: nothing is held out
        lines.append(f"folds grouped by {f.group_by}: {f.n_groups} groups (soundscapes sharing "
                     f"one are held out together)")
    if result.fold_results:
        tune = np.mean([f.tune_end_db for f in result.fold_results])
        reps = f" x {s.repeats} repeats" if s.repeats > 1 else ""
        lines.append(f"tuned, tune folds        : {tune:8.3f} dB (mean over {result.folds.k} "
                     f"folds{reps}; gain {result.tune_gain_db:+.3f} dB)")
        lines.append(f"tuned, held-out          : {h.tuned_db:8.3f} dB, 95% CI "
                     f"[{h.tuned_ci_db[0]:.3f}, {h.tuned_ci_db[1]:.3f}]")
        lines.append(f"held-out gain vs baseline: {h.gain_db:+8.3f} dB, 95% CI "
                     f"[{h.gain_ci_db[0]:+.3f}, {h.gain_ci_db[1]:+.3f}] (paired bootstrap, "
                     f"{h.n_boot} resamples)" + (" (the start is not held out)" if from_file
                                                  else ""))
        if s.repeats > 1:
            g = np.asarray(result.repeat_gains_db)
            lines.append(f"  over {s.repeats} repeated splits: mean {g.mean():+.3f} dB, sd "
                         f"{g.std(ddof=1):.3f}, range [{g.min():+.3f}, {g.max():+.3f}]")
        if result.start_gain is not None and result.tuning_gain is not None:
            lines.append(f"  = {_start_name(result)} {_gain_ci(result.start_gain)} (all tune "
                         f"soundscapes) + tuning {_gain_ci(result.tuning_gain)} (held out)")
        if result.by_recording is not None:
            lines.append(_recording_line(result.by_recording))
        lines.append(f"optimism (tune - held-out): {result.tune_gain_db - h.gain_db:+7.3f} dB")
    if result.test is not None:
        t = result.test.gain
        est = f"; k-fold estimate {h.gain_db:+.3f} dB" if h is not None else ""
        lines.append(f"realised on {result.test.split!r:<13}: {t.gain_db:+8.3f} dB, 95% CI "
                     f"[{t.gain_ci_db[0]:+.3f}, {t.gain_ci_db[1]:+.3f}] vs baseline "
                     f"({t.n_soundscapes} soundscapes never tuned on{est})")
        if result.test.start is not None and result.test.tuning is not None:
            est = (f" (k-fold estimate {result.tuning_gain.gain_db:+.3f} dB)"
                   if result.tuning_gain is not None else "")
            lines.append(f"  = {_start_name(result)} {_gain_ci(result.test.start)} + tuning "
                         f"{_gain_ci(result.test.tuning)}{est}")
        if result.test.by_recording is not None:
            lines.append(_recording_line(result.test.by_recording))
    lines.append(f"final policy, all (tune) : {result.final_tune_db:8.3f} dB")
    lines.append(f"oracle labelling bound   : {result.oracle_db:8.3f} dB")
    lines.append(f"share of gap closed      : {100 * result.gap_closed:8.1f} %")
    if result.final.selection is not None:
        secs = sum(f.selection.seconds for f in [*result.fold_results, result.final])
        lines.append(f"--stage auto: {result.final.selection.why()} [selection "
                     f"{secs:.1f} s over {len(result.fold_results) + 1} chains]")
    lines.append(kept_line(result.final.records, s.accept))  # what the chosen stages changed
    lines.append("per-stage gains (final chain tune / pooled held-out, dB):")
    for _, r in result.stage_table().iterrows():
        tune = "   -  " if np.isnan(r.tune_gain_db) else f"{r.tune_gain_db:+.3f}"
        held = "" if np.isnan(r.heldout_gain_db) else f" / {r.heldout_gain_db:+.3f}"
        flag = "  HELD-OUT LOSS" if r.heldout_gain_db < 0 else ""
        note = f"  ({r.note})" if r.note else ""
        kept = f"kept {r.kept}; " if s.stage == "auto" else ""
        lines.append(f"  {r.stage:<10} {r.engine:<7} {tune}{held}  [{kept}{int(r.settings)} "
                     f"settings, {r.seconds:.1f} s]{note}{flag}")
    if result.features:
        on_test = result.test is not None and result.features[0].test_changed >= 0
        test = f" / on {result.test.split!r}" if on_test else ""
        lines.append(f"decision features knocked out one at a time (tuned vs the same with the "
                     f"feature at its start value; not additive; held out{test}):")
        for f in result.features:
            t = f" / {_db(f.test_gain_db)}" if on_test else ""
            tc = f" / {f.test_changed}" if on_test else ""
            flag = "  HELD-OUT LOSS" if f.gain_db < 0 else ""
            lines.append(f"  {f.feature:<24} {_db(f.gain_db)}{t} dB  ({f.changed}{tc} "
                         f"soundscapes change){flag}")
    lines.extend(result.warnings)
    return lines
