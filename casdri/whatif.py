"""What if: the value of fixing each error type, before working on it.

Conventions:
    * Each scenario changes the system state of every soundscape in one way and scores it
      with the metric's own steps on the cached SNRs (`casdri._gap_states.score_state`); the
      table gives the dataset CAPI-SDRi (official mean over non-None soundscapes) and its gain
      over the system, in dB. Scenarios are **not** additive (the telescoping parts of
      `casdri.gap` are).
    * Scenarios: each correction of `casdri._gap_states.PARTS` applied alone (the first is
      "zero-target soundscapes made perfect"); every label error fixed with the system's
      true-positive stems kept; one class oracle-labelled (its stems removed, the oracle stems
      of its references added); and, on a cache, the best separator per slot (each stem may be
      swapped for another separator's stem of the same query, stage and slot; per soundscape
      the best combination, an upper bound of any separator selection rule).
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from . import _gap_states as _gap
from .cache import load_cache
from .gap import explain

__all__ = ["what_if", "what_if_clips"]


def _mean(clips, states) -> float:
    vals = np.full(len(clips), np.nan)
    for i, (clip, (labels, snr)) in enumerate(zip(clips, states)):
        v, _ = _gap.score_state(clip, labels, snr)
        vals[i] = np.nan if v is None else v
    return _gap.dataset_mean(vals)


def _class_oracle(clip, c):
    keep = [i for i, x in enumerate(clip.est_labels) if x != c]
    add = [i for i, x in enumerate(clip.oracle_labels) if x == c]
    labels = [clip.est_labels[i] for i in keep] + [clip.oracle_labels[i] for i in add]
    snr = np.concatenate([np.asarray(clip.est_snr_db)[keep], np.asarray(clip.oracle_snr_db)[add]])
    return labels, snr.reshape(len(labels), len(clip.ref_labels))


def what_if_clips(explanation) -> pd.DataFrame:
    """Scenarios that need no cache, from a `casdri.gap.GapExplanation`.

    Returns:
        DataFrame ``scenario``, ``capi_sdri_db``, ``gain_db`` (over the system).
    """
    clips, plans = list(explanation.clips), list(explanation.plans)
    base = explanation.system_db
    rows = []
    for p in _gap.PARTS:
        name = ("zero-target soundscapes made perfect (silent)" if p == "fp_zero_target"
                else f"fix only: {_gap.PART_NAMES[p]}")
        rows.append((name, _gap.state_values(clips, plans, {p})[2]))
    rows.append(("every label error fixed (true-positive stems kept)",
                 _gap.state_values(clips, plans, _gap.PARTS[:-1])[2]))
    classes = sorted({x for c in clips for x in (*c.est_labels, *c.ref_labels)})
    for c in classes:
        rows.append((f"{c} oracle-labelled", _mean(clips, [_class_oracle(k, c) for k in clips])))
    t = pd.DataFrame(rows, columns=["scenario", "capi_sdri_db"])
    t["gain_db"] = t["capi_sdri_db"] - base
    return t


def _best_separator_state(cache, clip):
    rows = [int(r) for r in clip.est_ids]
    if not rows or not clip.ref_labels:
        return list(clip.est_labels), np.asarray(clip.est_snr_db)
    alts = []
    for r in rows:
        j, st, sl = cache.stem_key[r], cache.stem_stage[r], cache.stem_slot[r]
        alts.append([int(cache.key_stem[j, sp, st]) + int(sl)
                     for sp in range(len(cache.separators)) if cache.key_stem[j, sp, st] >= 0])
    best, best_v = None, -np.inf
    for combo in itertools.product(*alts):
        snr = np.array([cache.stem_snr_db[cache.stem_snr_offsets[r]:cache.stem_snr_offsets[r + 1]]
                        for r in combo], np.float64)
        v, _ = _gap.score_state(clip, list(clip.est_labels), snr)
        if v is not None and v > best_v:
            best, best_v = snr, v
    return list(clip.est_labels), best


def what_if(cache, policy="baseline", params=None, oracle=None, mask=None,
            explanation=None) -> pd.DataFrame:
    """Counterfactual replays of a policy on a cache in one call (module conventions).

    Args:
        cache, policy, params, oracle, mask: as `casdri.gap.explain`.
        explanation: its result, when already computed (saves the work).

    Returns:
        DataFrame ``scenario``, ``capi_sdri_db``, ``gain_db`` (over the system), dB.

    Example:
        >>> from casdri.synthetic import make_synthetic_cache
        >>> t = what_if(make_synthetic_cache(n_soundscapes=20, seed=3))
        >>> t.scenario.iloc[0]
        'zero-target soundscapes made perfect (silent)'
    """

    if explanation is None:
        explanation = explain(cache, policy, params, oracle, mask)
    if not hasattr(cache, "key_codes"):

        cache = load_cache(cache)
    t = what_if_clips(explanation)
    clips = list(explanation.clips)
    v = _mean(clips, [_best_separator_state(cache, c) for c in clips])
    extra = pd.DataFrame([("best separator per slot (labels kept)", v,
                           v - explanation.system_db)], columns=t.columns)
    return pd.concat([t, extra], ignore_index=True)
