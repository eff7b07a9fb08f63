"""``RefineParams``: the parameter set of ``refine`` (field order = encoded order; the rules
are in `casdri.policies.refine`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .._base import PolicyParams, choice, scalar, threshold

__all__ = ["NAME", "RefineParams", "separator_choices", "stage_choices"]

NAME = "refine"
Thr = Union[float, dict]


def separator_choices(meta) -> tuple:
    """Separator selections a cache can serve: 0, 1 (second separator), 2 (per-slot better)."""
    return (0, 1, 2) if len(meta.separators) > 1 else (0, 2)


def stage_choices(meta) -> tuple:
    """Refinement stages a cache holds."""
    return tuple(range(meta.n_stages))


@dataclass(frozen=True)
class RefineParams(PolicyParams):
    """Parameters of ``refine`` (field order = encoded order; see `casdri.policies.refine`)."""

    policy = NAME
    w: float = scalar(0.5, 0.0, 1.0, "weight of p_4ch in a paired instance's confidence")
    solo_keep_1ch: Thr = threshold(0.5, 0.0, 1.0, "min probability of an unpaired 1ch instance")
    solo_keep_4ch: Thr = threshold(0.5, 0.0, 1.0, "min probability of an unpaired 4ch instance")
    verify_thr: Thr = threshold(0.5, 0.0, 1.0, "retag probability that confirms a stem")
    drop_thr: Thr = threshold(0.0, 0.0, 1.0, "unconfirmed queries below it are dropped")
    energy_gate_db: Thr = threshold(float("-inf"), -80.0, 0.0, "stem energy (dB) below: silence",
                                    off=float("-inf"))
    prob_gate: Thr = threshold(0.0, 0.0, 1.0, "confidence below: silence")
    silence_thr: Thr = threshold(float("inf"), 0.0, 1.0, "retag silence prob at/above: silence",
                                 off=float("inf"))
    verify_mode: str = choice("threshold", ("threshold", "argmax"), "how a stem is confirmed")
    select_separator: int = choice(0, separator_choices, "0 first, 1 second, 2 per-slot better",
                                   values=(0, 1, 2))
    stage: int = choice(0, stage_choices, "refinement stage whose stems are used")
    tagger_silence_margin: float = scalar(
        float("inf"), -1.0, 1.0, "an instance whose fused tagger silence probability exceeds "
        "its confidence by more than this is not proposed", off=float("inf"))
    tagger_silence_gate: Thr = threshold(
        float("inf"), 0.0, 1.0, "fused tagger silence prob of its instance at/above: silence",
        off=float("inf"))
