"""The gap decomposition on plain per-soundscape inputs (no cache, no audio): states, parts and
their exact attribution to soundscapes and classes. Front ends: `casdri.gap`.

Conventions:
    * A `GapClip` holds one soundscape: its references (labels, ``snr_mix_db``), the system's
      non-silence stems and the oracle stems (labels and **full** ``(n_stems, n_ref)`` SNR
      matrices in dB against every reference). The oracle stems carry exactly the reference
      labels (the oracle labelling bound: the same separator queried with the true labels).
    * Every state is a list of stems (label, SNR row) scored by the metric's own steps
      (`casdri.metric.class_blocks` / `clip_value`); dataset means are the official mean over
      non-None soundscapes, summed in soundscape order (`casdri.replay.scored_mean`).
    * The system state is classified once, from its CAPI pairing (`class_blocks`):
      true positives (matched pairs), same-class excess stems and deficit references (a class
      on both sides with other counts), stems of classes absent from the references (X) and
      references of classes absent from the stems (M). X and M are paired as substitutions
      (wrong class) by the metric's pairing rule on the cached SNRs (`metric._best_pairing`:
      most total SNR, first maximum); the rest of X are other false positives, the rest of
      M missed sources. The oracle stem of a reference is its pair in the oracle state.
    * Corrections, in `PARTS` order (each state is the previous plus one fix):
      1. ``fp_zero_target``: zero-target soundscapes lose every stem (they become None);
      2. ``fp_other``: unpaired X stems are removed;
      3. ``missed``: the oracle stem of each unpaired M reference is added;
      4. ``wrong_class``: each substituted X stem is replaced by the oracle stem of its M
         reference;
      5. ``count``: excess same-class stems are removed; for the deficit references of a
         class, as many of its oracle stems are added, those that with the system's
         true-positive stems give the most total SNR under the metric's pairing;
      6. ``separation``: the true-positive stems of each class are replaced by its remaining
         oracle stems; the state is then the oracle state.
      Part k = mean(state k) - mean(state k-1) in dB; the parts telescope to the gap
      mean(oracle) - mean(system).
    * Attribution (exact, although the set of scored soundscapes changes): with ``n_b`` the
      scored count and ``m_a`` the mean before a step, soundscape s gets
      ``[v_b(s) - v_a(s) - m_a (scored_b(s) - scored_a(s))] / n_b`` (a None value counts 0),
      which sums over soundscapes to ``m_b - m_a``. Within a soundscape, with ``S_c`` / ``N_c``
      the SDRi sum / entries of class c and ``v = S / N``: scored to scored gives class c
      ``(dS_c - v_a dN_c) / N_b``, scored to None ``(m_a N_a,c - S_a,c) / N_a``, None to
      scored ``(S_b,c - m_a N_b,c) / N_b`` (each divided by ``n_b``); they sum to the
      soundscape's share. Soundscapes and classes a step does not change get exactly 0.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from . import metric as _m
from .errors import InputError
from .replay import scored_mean as dataset_mean  # the one dataset-mean rule

__all__ = ["PARTS", "PART_NAMES", "GapClip", "ClipPlan", "plan_clip", "clip_state",
           "scene_type", "state_values", "score_state", "attribute", "dataset_mean"]

PARTS = ("fp_zero_target", "fp_other", "missed", "wrong_class", "count", "separation")
PART_NAMES = {
    "fp_zero_target": "false positives on zero-target soundscapes",
    "fp_other": "other false positives",
    "missed": "missed sources (false negatives)",
    "wrong_class": "wrong class (absent class for a missed one)",
    "count": "same-class count errors",
    "separation": "separation quality of the true positives",
}


@dataclass(frozen=True)
class GapClip:
    """One soundscape's inputs to the decomposition.

    Attributes:
        soundscape: id; ref_labels: ``n_ref`` class names; snr_mix_db: ``(n_ref,)`` dB.
        est_labels: system stems' class names (silence left out); est_snr_db: ``(n_est,
            n_ref) float64`` dB; est_ids: one id per stem (cache row or file name).
        oracle_labels, oracle_snr_db, oracle_ids: the oracle stems, the same way.
    """

    soundscape: str
    ref_labels: tuple
    snr_mix_db: np.ndarray
    est_labels: tuple
    est_snr_db: np.ndarray
    oracle_labels: tuple
    oracle_snr_db: np.ndarray
    est_ids: tuple = ()
    oracle_ids: tuple = ()


@dataclass(frozen=True)
class ClipPlan:
    """The classified system state of one soundscape (indices: stems of ``est``, references).

    Attributes:
        tp: ``(stem, ref)`` matched pairs; excess: same-class stems left unmatched; deficit:
            same-class references left unmatched; fp: unpaired absent-class stems; missed:
            unpaired absent-class references; subs: ``(stem, ref)`` wrong-class pairs;
            oracle_of_ref: oracle stem of each reference; deficit_add: oracle stems the count
            fix adds; tp_swap: ``(stem, oracle stem)`` the separation fix swaps.
    """

    tp: tuple
    excess: tuple
    deficit: tuple
    deficit_add: tuple
    tp_swap: tuple
    fp: tuple
    missed: tuple
    subs: tuple
    oracle_of_ref: tuple
    zero_target: bool = False
    counts: dict = field(default_factory=dict)


def scene_type(ref_labels: Sequence[str]) -> str:
    """``"0 targets"``, ``"1 target"``, ``"2 targets"``, ``"2 targets, duplicate"``, ..."""
    n = len(ref_labels)
    name = f"{n} target" + ("" if n == 1 else "s")
    return name + (", duplicate" if len(set(ref_labels)) < n else "")


def _check(clip: GapClip) -> None:
    n_ref = len(clip.ref_labels)
    for what, labels, snr in (("system", clip.est_labels, clip.est_snr_db),
                              ("oracle", clip.oracle_labels, clip.oracle_snr_db)):
        if np.shape(snr) != (len(labels), n_ref):
            raise InputError(f"{clip.soundscape}: {what} SNR matrix has shape {np.shape(snr)}, "
                             f"expected ({len(labels)}, {n_ref})")
    if sorted(clip.oracle_labels) != sorted(clip.ref_labels):
        raise InputError(f"{clip.soundscape}: the oracle stems are labelled "
                         f"{sorted(clip.oracle_labels)}, the references {sorted(clip.ref_labels)}; "
                         "the oracle state must carry exactly the reference labels")
    bad = [(w, i) for w, s in (("system", clip.est_snr_db), ("oracle", clip.oracle_snr_db))
           for i in range(len(s)) if not np.isfinite(s[i]).all()]
    if bad or not np.isfinite(clip.snr_mix_db).all():
        raise InputError(f"{clip.soundscape}: non-finite SNR ({bad[:1] or 'mixture'}); the "
                         "decomposition needs every stem's SNR against every reference")


def plan_clip(clip: GapClip) -> ClipPlan:
    """Classify the system state of one soundscape (module conventions)."""
    _check(clip)
    if not clip.ref_labels:
        return ClipPlan((), (), (), (), (), tuple(range(len(clip.est_labels))), (), (), (),
                        zero_target=True,
                        counts={"fp_zero_target": len(clip.est_labels)})
    oracle_of_ref = [-1] * len(clip.ref_labels)
    for b in _m.class_blocks(clip.oracle_labels, clip.ref_labels, clip.oracle_snr_db,
                             clip.snr_mix_db):
        for e, r in b.pairs:
            oracle_of_ref[r] = e
    tp, excess, deficit, add, swap, xs, ms = [], [], [], [], [], [], []
    for b in _m.class_blocks(clip.est_labels, clip.ref_labels, clip.est_snr_db,
                             clip.snr_mix_db):
        if b.est_rows and b.ref_rows:
            tp += list(b.pairs)
            excess += [e for e in b.est_rows if e not in {p[0] for p in b.pairs}]
            d = [r for r in b.ref_rows if r not in {p[1] for p in b.pairs}]
            deficit += d
            a = _completion(clip, [e for e, _ in b.pairs], b.label, b.ref_rows, len(d))
            add += a
            rest = [o for o, x in enumerate(clip.oracle_labels) if x == b.label and o not in a]
            swap += list(zip([e for e, _ in b.pairs], rest))
        elif b.est_rows:
            xs += list(b.est_rows)
        else:
            ms += list(b.ref_rows)
    subs = ()
    if xs and ms:
        subs = _m._best_pairing(clip.est_snr_db, sorted(xs), sorted(ms))
    fp = tuple(x for x in sorted(xs) if x not in {p[0] for p in subs})
    missed = tuple(r for r in sorted(ms) if r not in {p[1] for p in subs})
    counts = {"fp_other": len(fp), "missed": len(missed), "wrong_class": len(subs),
              "count": len(excess) + len(deficit), "separation": len(tp)}
    return ClipPlan(tuple(tp), tuple(excess), tuple(deficit), tuple(add), tuple(swap), fp,
                    missed, tuple(subs), tuple(oracle_of_ref), False, counts)


def _completion(clip: GapClip, tp_stems: list, label, ref_rows, n: int) -> list:
    """The ``n`` oracle stems of class ``label`` that, with the system's true-positive stems,
    give the most total SNR under the metric's pairing (first maximum in
    ``itertools.combinations`` order): what the count fix adds for the unmatched references."""
    if n == 0:
        return []
    pool = [o for o, x in enumerate(clip.oracle_labels) if x == label]
    best, best_score = None, -np.inf
    for combo in itertools.combinations(pool, n):
        snr = np.vstack([np.asarray(clip.est_snr_db)[tp_stems],
                         np.asarray(clip.oracle_snr_db)[list(combo)]])
        pairs = _m._best_pairing(snr, list(range(len(snr))), list(ref_rows))
        score = sum(snr[e, r] for e, r in pairs)
        if best is None or score > best_score:
            best, best_score = list(combo), score
    return best


def clip_state(clip: GapClip, plan: ClipPlan, fixes) -> tuple[list, np.ndarray]:
    """``(labels, snr (n, n_ref))`` of the state with the corrections ``fixes`` applied.

    No fix: the system stems in their order. Every fix: the oracle stems in their order.
    """
    fixes = set(fixes)
    if plan.zero_target:
        if "fp_zero_target" in fixes:
            return [], np.zeros((0, 0))
        return list(clip.est_labels), np.asarray(clip.est_snr_db, np.float64)
    if fixes >= set(PARTS[1:]):
        return list(clip.oracle_labels), np.asarray(clip.oracle_snr_db, np.float64)
    drop = set()
    swap = {}  # system stem -> oracle stem replacing it in place
    add = []  # missed references whose oracle stem is appended
    if "fp_other" in fixes:
        drop |= set(plan.fp)
    if "missed" in fixes:
        add += list(plan.missed)
    if "wrong_class" in fixes:
        swap.update({x: plan.oracle_of_ref[r] for x, r in plan.subs})
    if "count" in fixes:
        drop |= set(plan.excess)
    if "separation" in fixes:
        swap.update(dict(plan.tp_swap))
    rows = []
    for i in range(len(clip.est_labels)):
        if i in swap:
            rows.append(("o", swap[i]))
        elif i not in drop:
            rows.append(("e", i))
    rows += [("o", plan.oracle_of_ref[r]) for r in sorted(add)]
    if "count" in fixes:
        rows += [("o", o) for o in plan.deficit_add]
    labels = [clip.est_labels[i] if w == "e" else clip.oracle_labels[i] for w, i in rows]
    snr = np.array([clip.est_snr_db[i] if w == "e" else clip.oracle_snr_db[i] for w, i in rows],
                   np.float64).reshape(len(rows), len(clip.ref_labels))
    return labels, snr


def score_state(clip: GapClip, labels, snr) -> tuple[Optional[float], dict]:
    """``(clip value in dB or None, {class: (Σ SDRi dB, entries)})`` of one state, by the
    metric's own steps (`casdri.metric.class_blocks`, `clip_value`)."""
    blocks = _m.class_blocks(labels, clip.ref_labels, snr, clip.snr_mix_db)
    per = {}
    for b in blocks:
        s, n = per.get(b.label, (0.0, 0))
        per[b.label] = (s + sum(b.sdri_db), n + b.n_entries)
    return _m.clip_value(blocks), per


def state_values(clips: Sequence[GapClip], plans: Sequence[ClipPlan], fixes):
    """``(values (S,) float64 dB NaN = None, [per-class {label: (Σ SDRi, entries)}], mean)``."""
    vals = np.full(len(clips), np.nan)
    per = []
    for i, (clip, plan) in enumerate(zip(clips, plans)):
        v, pc = score_state(clip, *clip_state(clip, plan, fixes))
        if v is not None:
            vals[i] = v
        per.append(pc)
    return vals, per, dataset_mean(vals)


def attribute(va: np.ndarray, pa: list, ma: float, vb: np.ndarray, pb: list):
    """Per-soundscape ``(S,)`` and per-(soundscape, class) shares of ``mean_b - mean_a``
    (module conventions). Returns ``(share (S,), [{label: share}])``."""
    sa, sb = ~np.isnan(va), ~np.isnan(vb)
    nb = int(sb.sum())
    if nb == 0:
        raise InputError("no soundscape is scored after a correction (every soundscape is "
                         "zero-target?): the oracle labelling bound is undefined")
    share = np.zeros(len(va))
    by_class = []
    for s in range(len(va)):
        out = {}
        if sa[s] and sb[s]:
            nbs = sum(n for _, n in pb[s].values())
            for c in set(pa[s]) | set(pb[s]):
                (s0, n0), (s1, n1) = pa[s].get(c, (0.0, 0)), pb[s].get(c, (0.0, 0))
                if (s0, n0) != (s1, n1):
                    out[c] = ((s1 - s0) - va[s] * (n1 - n0)) / nbs / nb
            share[s] = (vb[s] - va[s]) / nb
        elif sa[s]:
            na = sum(n for _, n in pa[s].values())
            out = {c: (ma * n - sm) / na / nb for c, (sm, n) in pa[s].items()}
            share[s] = (ma - va[s]) / nb
        elif sb[s]:
            nbs = sum(n for _, n in pb[s].values())
            out = {c: (sm - ma * n) / nbs / nb for c, (sm, n) in pb[s].items()}
            share[s] = (vb[s] - ma) / nb
        by_class.append(out)
    return share, by_class
