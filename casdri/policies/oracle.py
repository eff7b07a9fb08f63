"""``oracle``: the reference labels as queries, the oracle labelling bound.

Conventions: the query is the soundscape's oracle labels sorted ascending (a zero-target
clip asks for nothing); stems come from ``select_separator`` / ``stage`` as in
`casdri.policies.refine` ((f) then (e)); no gates: every stem keeps its label. The cache must
hold the oracle key (``closure.oracle``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ._base import Decision, Lookup, PolicyParams, SoundscapeInputs, choice, pick_slots
from .._kernels import D_NST
from ._jit import DECIDE_JIT, one_key
from .refine._params import separator_choices, stage_choices

__all__ = ["OracleParams", "NAME", "PARAMS", "SEARCH_PLAN", "prepare", "kernel_decide",
           "decide", "required_keys", "change_points"]

NAME = "oracle"


@dataclass(frozen=True)
class OracleParams(PolicyParams):
    """Parameters of ``oracle`` (encoded ``[select_separator, stage]``)."""

    policy = NAME
    select_separator: int = choice(0, separator_choices, "0 first, 1 second, 2 per-slot better",
                                   values=(0, 1, 2))
    stage: int = choice(0, stage_choices, "refinement stage whose stems are used")


PARAMS = OracleParams
#: stage name -> the fields that stage may move (`search`)
SEARCH_PLAN = {"select": ("select_separator", "stage"), "refine": ("select_separator", "stage")}
#: no thresholds: every parameter is a choice
change_points = None
_F = OracleParams.field_index()
SELECT, STAGE = _F["select_separator"], _F["stage"]


def prepare(cache) -> tuple[np.ndarray, np.ndarray]:
    """``pi (S, 1) int64``: the oracle key (-1 zero-target, -2 not cached)."""
    S = cache.n_soundscapes
    pi = np.zeros((S, 1), np.int64)
    for s in range(S):
        r0, r1 = cache.ref_offsets[s], cache.ref_offsets[s + 1]
        pi[s, 0] = cache.find_key(s, cache.ref_labels[r0:r1])
    return pi, np.zeros((S, 1))


@numba.njit(**DECIDE_JIT)
def kernel_decide(X, n0, n1, s, pi, pf, off, tab, dims, wi, wf, dec):  # pragma: no cover
    """The oracle key, jitted (signature: `casdri._kernels`)."""
    key_len, tab_cnt = tab[1], tab[5]
    n_st = dims[D_NST]
    j = pi[s, 0]
    o_sel, o_st = off[SELECT], off[STAGE]
    for n in range(n0, n1):
        g = int(X[n, o_sel]) * n_st + int(X[n, o_st]) if j >= 0 else 0
        g, m, code = one_key(j, g, key_len[j] if j >= 0 else 0,
                             tab_cnt[j, g, 0] if j >= 0 else 0)
        dec[n - n0, 0] = j
        dec[n - n0, 1] = g
        dec[n - n0, 2] = m
        dec[n - n0, 3] = code


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
