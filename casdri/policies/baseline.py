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

import numpy as np

from .. import _kernels as K_
from ._base import Decision, Lookup, PolicyParams, SoundscapeInputs, choice, pick_slots

__all__ = ["BaselineParams", "NAME", "KERNEL_ID", "prepare", "decide", "required_keys",
           "default_tagger"]

NAME = "baseline"
KERNEL_ID = K_.POLICY_BASELINE


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
                            "separator index (0 = the official system)")
    stage: int = choice(0, lambda m: tuple(range(m.n_stages)), "refinement stage")


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
