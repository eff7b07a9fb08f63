"""``baseline``: the official DCASE 2026 Task 4 rule, replayed from the cache.

Conventions:
    * Per track, the argmax over the C classes + silence of one tagger (ties to the lower
      index, silence last); a silence argmax asks for nothing. The classes of the other
      tracks, sorted ascending, form one query, separated once (separator ``separator``, stage
      ``stage``; the official system is separator 0, stage 0). Every stem keeps its query
      label; stems are scored in slot order.
    * ``tagger=None`` (default) means the tagger named ``4ch`` if the cache has one, else its
      first tagger.

Replaying it equals scoring the stems the baseline writes (tests/test_replay_exact.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numba
import numpy as np

from ._base import Decision, Lookup, PolicyParams, SoundscapeInputs, choice, pick_slots
from .._kernels import D_NST
from ._jit import DECIDE_JIT, one_key

__all__ = ["BaselineParams", "NAME", "PARAMS", "SEARCH_PLAN", "prepare", "kernel_decide",
           "decide", "required_keys", "change_points", "default_tagger"]

NAME = "baseline"


def default_tagger(meta_or_names) -> str:
    names = list(getattr(meta_or_names, "taggers", meta_or_names))
    return "4ch" if "4ch" in names else names[0]


@dataclass(frozen=True)
class BaselineParams(PolicyParams):
    """Parameters of ``baseline`` (encoded ``[tagger, separator, stage]``)."""

    policy = NAME
    tagger: Optional[Union[str, int]] = choice(None, lambda m: tuple(m.taggers),
                                               "tagger whose argmax labels the tracks",
                                               auto=default_tagger)
    separator: int = choice(0, lambda m: tuple(range(min(len(m.separators), 2))),
                            "separator index (0 = the official system)", values=(0, 1))
    stage: int = choice(0, lambda m: tuple(range(m.n_stages)), "refinement stage")


PARAMS = BaselineParams
#: stage name -> the fields that stage may move (`search`)
SEARCH_PLAN = {"select": ("tagger", "separator", "stage"),
               "refine": ("tagger", "separator", "stage")}
#: no thresholds: every parameter is a choice
change_points = None
_F = BaselineParams.field_index()
TAGGER, SEPARATOR, STAGE = _F["tagger"], _F["separator"], _F["stage"]


def _query(probs: np.ndarray) -> tuple[int, ...]:
    C = probs.shape[1] - 1
    return tuple(sorted(int(c) for c in np.argmax(probs, axis=1) if c != C))


def prepare(cache) -> tuple[np.ndarray, np.ndarray]:
    """``pi (S, n_taggers) int64``: the argmax key of each tagger (-1 empty, -2 not cached);
    ``pf (S, 1)`` unused."""
    S = cache.n_soundscapes
    pi = np.zeros((S, len(cache.taggers)), np.int64)
    for t in range(len(cache.taggers)):
        for s in range(S):
            pi[s, t] = cache.find_key(s, _query(cache.tagger_probs[t, s]))
    return pi, np.zeros((S, 1))


@numba.njit(**DECIDE_JIT)
def kernel_decide(X, n0, n1, s, pi, pf, off, tab, dims, wi, wf, dec):  # pragma: no cover
    """The official rule, jitted (signature: `casdri._kernels`): the chosen tagger's key."""
    key_len, tab_cnt = tab[1], tab[5]
    n_st = dims[D_NST]
    o_tag, o_sep, o_st = off[TAGGER], off[SEPARATOR], off[STAGE]
    for n in range(n0, n1):
        j = pi[s, int(X[n, o_tag])]
        g = int(X[n, o_sep]) * n_st + int(X[n, o_st]) if j >= 0 else 0
        g, m, code = one_key(j, g, key_len[j] if j >= 0 else 0,
                             tab_cnt[j, g, 0] if j >= 0 else 0)
        dec[n - n0, 0] = j
        dec[n - n0, 1] = g
        dec[n - n0, 2] = m
        dec[n - n0, 3] = code


def decide(inputs: SoundscapeInputs, params: BaselineParams, lookup: Lookup) -> Decision:
    """The official rule on one soundscape (``lookup`` as in `casdri.policies.refine.decide`)."""
    name = params.tagger
    names = list(inputs.tagger_probs)
    if name is None:
        name = default_tagger(names)
    elif not isinstance(name, str):
        name = names[int(name)]
    query = _query(np.asarray(inputs.tagger_probs[name]))
    if not query:
        return Decision((), (), (), ())
    stems, seps = pick_slots(query, lookup, int(params.separator), int(params.stage),
                             inputs.n_separators)
    return Decision((query,), tuple(stems), tuple(seps), (True,) * len(stems))


def required_keys(inputs: SoundscapeInputs, search_space=None) -> set[tuple[int, ...]]:
    """The argmax query of every tagger (of the taggers in ``search_space`` when given)."""
    names = list(inputs.tagger_probs)
    codes = range(len(names))
    for r in search_space or ():
        if r.name == "tagger":
            codes = [int(c) for c in r.choices]
    return {q for q in (_query(np.asarray(inputs.tagger_probs[names[i]])) for i in codes) if q}
