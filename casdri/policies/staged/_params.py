"""``StagedParams``: ``refine``'s parameters (same fields, same order, same encoded columns)
followed by the ``staged`` ones (field order = encoded order; the rules are in
`casdri.policies.staged`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ...sed import SED_LEVELS_PCT
from .._base import choice, threshold
from ..refine._params import RefineParams

__all__ = ["NAME", "StagedParams", "MAX_STAGE", "STAGED_FIELDS"]

NAME = "staged"
Thr = Union[float, dict]
#: the last stage a per-class stage or the re-classifying stage can name (a cache with more
#: stages uses its last one for larger values of ``stage_by_class``)
MAX_STAGE = 7


@dataclass(frozen=True)
class StagedParams(RefineParams):
    """Parameters of ``staged``: every `RefineParams` field, then these (defaults: off, so a
    default ``staged`` decides as ``refine`` does, bit for bit)."""

    policy = NAME
    stage_by_class: Thr = threshold(
        -1.0, -1.0, float(MAX_STAGE), "stage whose stems a final slot of the class takes "
        "(-1: refine's `stage`; above the cache's last stage: its last)", integer=True)
    reclass_stage: int = choice(
        -1, tuple(range(-1, MAX_STAGE + 1)), "stage whose classifier re-classifies the final "
        "slots (-1: each slot's own final stage)")
    reclass_silence_thr: Thr = threshold(
        float("inf"), 0.0, 1.0, "re-classifying stage's retag silence prob at/above: silence",
        off=float("inf"))
    reclass_other: int = choice(
        0, (0, 1), "1: silence a slot whose re-classifying stage names another class (argmax)")
    sed_level: int = choice(
        SED_LEVELS_PCT[len(SED_LEVELS_PCT) // 2], SED_LEVELS_PCT,
        "frame level (percent) of the SED active duration that sed_min_dur_s reads")
    sed_min_dur_s: Thr = threshold(
        0.0, 0.0, 30.0, "SED active duration (s) of the class below: silence (0: off)")
    sed_max_gate: Thr = threshold(
        0.0, 0.0, 1.0, "max SED frame probability of the class below: silence (0: off)")
    sed_agree_gap: Thr = threshold(
        float("inf"), -1.0, 1.0, "the taggers' max probability of the class minus its max SED "
        "probability above: silence (SED-vs-tagger agreement)", off=float("inf"))

    @classmethod
    def _valid_codes(cls, name: str, codes: tuple, meta) -> tuple:
        if name == "reclass_stage" and meta is not None:
            return tuple(c for c in codes if c < meta.n_stages)
        return super()._valid_codes(name, codes, meta)


#: the fields ``staged`` adds to refine's (in encoded order)
STAGED_FIELDS = tuple(n for n in StagedParams.field_index() if n not in
                      RefineParams.field_index())
