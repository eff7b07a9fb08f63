"""``staged``: ``refine`` with the stage chosen per class, re-classification by any stage's
classifier, and frame-level SED gates (the multi-stage and SED-guided systems of DCASE 2025/2026
Task 4, as decisions on cached outputs).

Conventions:
    * Parameters: every `RefineParams` field (same meaning, same encoded columns), then the
      `StagedParams` ones; their defaults are off, so ``StagedParams()`` (and any setting whose
      staged fields are at their defaults) decides exactly as ``refine`` does.
    * Stages: ``stage`` (refine's) is the stage the refine steps (c) verify and (d) gate on;
      ``stage_by_class`` says from which stage the final stems of each class come.
    * SED features are the cache's activity summary (`casdri.sed`: the first SED model; the
      live pipeline computes the same summary from its SED model's output). A soundscape
      without SED has NaN features and every SED gate passes.

Decision, in this exact order (the jitted `kernel_decide` in ``_kernel.py`` and `decide` below
implement it independently and are tested equal):

(a)-(d) ``refine``'s decision (`casdri.policies.refine`), unchanged: the final query, its
    stems at stage ``stage`` (for the verification and refine's gates), the keep mask.
(g) Stage per class: slot ``i`` of class ``c`` takes the stem of stage
    ``stage_by_class[c]`` (a whole number; ``-1``: ``stage``; above the cache's last stage:
    the last), of the same separator selection (``select_separator``; ``2`` picks per slot
    and stage the stem whose retag probability of its class is higher). When every slot
    keeps ``stage``, the stems are refine's. The query is looked up at each stage it needs.
(h) Re-classification and SED gates on the final slots (a gate turns a kept slot to silence;
    no re-separation): with the *re-classifying* stems = the final stems
    (``reclass_stage = -1``) or the stems of stage ``reclass_stage`` (same separator
    selection), slot ``i`` of class ``c`` is silence when
      - their retag silence probability (min over tracks) is ``>= reclass_silence_thr[c]``;
      - or ``reclass_other = 1`` and their retag argmax over the C classes (max over tracks,
        ties to the lower index) is another class;
      - or the SED active duration of ``c`` at level ``sed_level`` (percent) is
        ``< sed_min_dur_s[c]`` seconds;
      - or the max SED frame probability of ``c`` is ``< sed_max_gate[c]``;
      - or the taggers' max probability of ``c`` (over taggers and tracks) minus its max SED
        frame probability is ``> sed_agree_gap[c]`` (SED-vs-tagger agreement).
    Comparisons are in float64 on the cached float32 / float16 values; a NaN feature (no
    SED) compares false, so its gate passes.
"""
from __future__ import annotations

import numpy as np

from ...sed import F_DUR0, F_MAX, SED_LEVELS_PCT
from .._base import Decision, Lookup, SoundscapeInputs, pick_slots
from .. import refine
from ._change_points import StagedChangePoints
from ._kernel import kernel_decide, prepare
from ._params import MAX_STAGE, NAME, STAGED_FIELDS, StagedParams

__all__ = ["NAME", "PARAMS", "START", "StagedParams", "SEARCH_PLAN", "FEATURES",
           "MIXED_STAGES", "prepare", "kernel_decide", "decide", "required_keys",
           "change_points", "final_stages", "MAX_STAGE", "STAGED_FIELDS"]

PARAMS = StagedParams
#: the search's untuned start: refine's (every staged field off)
START = StagedParams()
#: the replay appends the mixed-stage combos to its tables (`casdri._kernels_stage`)
MIXED_STAGES = True

_GATES = ("reclass_silence_thr", "sed_min_dur_s", "sed_max_gate", "sed_agree_gap")
#: stage name -> the fields that stage may move (`search`): refine's plan plus the staged fields
SEARCH_PLAN = {
    **refine.SEARCH_PLAN,
    "gates": refine.SEARCH_PLAN["gates"] + _GATES,
    "per-class": refine.SEARCH_PLAN["per-class"] + ("stage_by_class",) + _GATES,
    "select": refine.SEARCH_PLAN["select"] + ("reclass_stage", "reclass_other", "sed_level"),
    "refine": tuple(StagedParams.field_index()),
}
#: decision features whose held-out worth the search reports (`search.result`)
FEATURES = {
    **refine.FEATURES,
    "per-class stage choice": ("stage_by_class",),
    "re-classification": ("reclass_stage", "reclass_silence_thr", "reclass_other"),
    "SED gates": ("sed_level", "sed_min_dur_s", "sed_max_gate", "sed_agree_gap"),
}


def change_points(cache, prep: dict, trace) -> StagedChangePoints:
    """The change points of every threshold on ``cache`` (see ``_change_points.py``)."""
    return StagedChangePoints(cache, prep, trace)


def final_stages(query, params: StagedParams, label_set, n_stages: int) -> list[int]:
    """Step (g): the stage of each slot of ``query``."""
    by = params.per_class("stage_by_class", label_set)
    gst = int(params.stage)
    return [gst if by[c] < 0 else min(int(by[c]), n_stages - 1) for c in query]


def decide(inputs: SoundscapeInputs, params: StagedParams, lookup: Lookup) -> Decision:
    """The staged decision of one soundscape in plain Python (module docstring order).

    Args:
        inputs: the soundscape's tagger outputs and SED summary (`SoundscapeInputs`).
        params: `StagedParams`.
        lookup: ``lookup(query, separator, stage) -> [SlotStem]`` (one per slot).

    Raises:
        CacheKeyError: from ``lookup`` when a query (at a stage) is not available.
    """
    d = refine.decide(inputs, params, lookup)
    if not d.stems:
        return d
    ls, n_st, n_sep = inputs.label_set, inputs.n_stages, inputs.n_separators
    sel = int(params.select_separator)
    query = tuple(st.label for st in d.stems)
    stems, seps = list(d.stems), list(d.separators)
    stages = final_stages(query, params, ls, n_st)
    for st in sorted(set(stages) - {int(params.stage)}):  # (g)
        alt, alt_seps = pick_slots(query, lookup, sel, st, n_sep)
        for i, k in enumerate(stages):
            if k == st:
                stems[i], seps[i] = alt[i], alt_seps[i]
    rk = int(params.reclass_stage)  # (h)
    judge = stems if rk < 0 else pick_slots(query, lookup, sel, rk, n_sep)[0]
    v = {name: params.per_class(name, ls) for name in _GATES}
    lv = SED_LEVELS_PCT.index(int(params.sed_level))
    keep = list(d.keep)
    for i, c in enumerate(query):
        st = judge[i]
        drop = st.retag_silence_min >= v["reclass_silence_thr"][c] or (
            int(params.reclass_other) == 1 and int(np.argmax(st.retag_max)) != c)
        if inputs.sed_summary is not None:
            f = inputs.sed_summary[c]
            tag = max(float(np.max(p[:, c])) for p in inputs.tagger_probs.values())
            drop = drop or f[F_DUR0 + lv] < v["sed_min_dur_s"][c] or \
                f[F_MAX] < v["sed_max_gate"][c] or tag - f[F_MAX] > v["sed_agree_gap"][c]
        keep[i] = keep[i] and not drop
    return Decision(d.queries, tuple(stems), tuple(seps), tuple(keep))


def required_keys(inputs: SoundscapeInputs, search_space=None) -> set[tuple[int, ...]]:
    """Every query staged can ask for: refine's (the stages add lookups of the same queries)."""
    return refine.required_keys(inputs, search_space)
