"""``oracle``: the reference labels as queries, the oracle labelling bound.

Conventions: the query is the soundscape's oracle labels sorted ascending (a zero-target
clip asks for nothing); stems come from ``select_separator`` / ``stage`` as in
`casdri.policies.refine` ((f) then (e)); no gates: every stem keeps its label. The cache must
hold the oracle key (``closure.oracle``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _kernels as K_
from ._base import Decision, Lookup, PolicyParams, SoundscapeInputs, choice, pick_slots
from .refine import _separator_choices, _stages

__all__ = ["OracleParams", "NAME", "KERNEL_ID", "prepare", "decide", "required_keys"]

NAME = "oracle"
KERNEL_ID = K_.POLICY_ORACLE


@dataclass(frozen=True)
class OracleParams(PolicyParams):
    """Parameters of ``oracle`` (encoded ``[select_separator, stage]``)."""

    policy = NAME
    select_separator: int = choice(0, _separator_choices, "0 first, 1 second, 2 per-slot better")
    stage: int = choice(0, _stages, "refinement stage whose stems are used")


def prepare(cache) -> tuple[np.ndarray, np.ndarray]:
    """``pi (S, 1) int64``: the oracle key (-1 zero-target, -2 not cached)."""
    S = cache.n_soundscapes
    pi = np.zeros((S, 1), np.int64)
    for s in range(S):
        pi[s, 0] = cache.find_key(s, cache.ref_labels[cache.ref_offsets[s]:cache.ref_offsets[s + 1]])
    return pi, np.zeros((S, 1))


def decide(inputs: SoundscapeInputs, params: OracleParams, lookup: Lookup) -> Decision:
    """Oracle labels as one query (``lookup`` as in `casdri.policies.refine.decide`)."""
    query = tuple(sorted(inputs.ref_labels or ()))
    if not query:
        return Decision((), (), (), ())
    stems, seps = pick_slots(query, lookup, int(params.select_separator), int(params.stage),
                             inputs.n_separators)
    return Decision((query,), tuple(stems), tuple(seps), (True,) * len(stems))


def required_keys(inputs: SoundscapeInputs, search_space=None) -> set[tuple[int, ...]]:
    """The oracle key (empty set for a zero-target clip)."""
    q = tuple(sorted(inputs.ref_labels or ()))
    return {q} if q else set()
