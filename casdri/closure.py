"""The query closure: every query a policy can send to a separator for one soundscape
(torch-free; the cache builder and the policies' ``required_keys`` both use it).

Conventions:
    * A **query** is a multiset of class indices in **canonical order: sorted ascending by
      class index** (``(3, 15, 15)``); slot ``i`` of a separation holds the stem for
      ``query[i]`` (`casdri.schema.QUERY_ORDER_RULE`). The live pipeline
      (`cache_builder.apply`) sorts the same way before it calls a separator, so the cache and
      the live run address the same stems.
    * The **proposal pool** of a soundscape: for each tagger and each track, the ``top_n``
      non-silence classes by softmax probability, whatever the silence probability; a class
      tied with the ``top_n``-th is included too, so no tie-breaking rule of a policy can
      leave the closure. Probabilities are the float32 values the cache stores. A class
      enters the pool as many times as there are (tagger, track) proposals of it, capped at
      ``n_tracks``: a policy that mixes taggers per track or takes the union of both
      taggers' detections can then never ask for a multiset outside it.
    * The **closure** is every sub-multiset of the pool of size ``1..n_tracks``, plus the
      oracle label multiset when oracle targets exist (and are at most ``n_slots``). It is
      listed sorted by (size, query).
"""
from __future__ import annotations

import itertools
from collections import Counter
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from .labels import SILENCE, LabelSet

__all__ = ["canonical_query", "top_classes", "proposal_pool", "sub_multisets",
           "query_closure", "CLOSURE_RULE"]

#: recorded in cache metadata
CLOSURE_RULE = ("per (tagger, track): top_n non-silence classes; pool multiplicity = number of "
                "(tagger, track) proposals capped at n_tracks; all sub-multisets of size "
                "1..n_tracks; plus the oracle label multiset")


def canonical_query(labels: Iterable, label_set: Optional[LabelSet] = None) -> tuple[int, ...]:
    """Canonical form of a query: class indices sorted ascending, silence dropped.

    Args:
        labels: class indices, or class names (then ``label_set`` is needed).
        label_set: `LabelSet` that maps names to indices.

    Example:
        >>> from casdri.labels import DCASE2026T4
        >>> canonical_query(["Speech", "silence", "AlarmClock", "Speech"], DCASE2026T4)
        (0, 15, 15)
    """
    out = []
    for x in labels:
        if isinstance(x, str):
            if x == SILENCE:
                continue
            if label_set is None:
                raise ValueError("class names need a label_set")
            out.append(label_set.index(x))
        else:
            out.append(int(x))
    return tuple(sorted(out))


def top_classes(probs: np.ndarray, top_n: int) -> list[list[int]]:
    """Top-``top_n`` non-silence classes per track, plus any class tied with the last one.

    Args:
        probs: ``(n_tracks, C + 1)`` softmax (silence last).
        top_n: proposals per track.

    Returns:
        Per track, class indices best first (equal values by class index).
    """
    p = np.asarray(probs)[:, :-1]
    order = np.argsort(-p, axis=1, kind="stable")
    out = []
    for row, idx in zip(p, order):
        cut = row[idx[min(top_n, len(idx)) - 1]]
        out.append([int(k) for k in idx if row[k] >= cut])
    return out


def proposal_pool(tagger_probs: Mapping[str, np.ndarray], top_n: int,
                  n_tracks: int) -> Counter:
    """Pool multiset ``{class: multiplicity}`` of one soundscape (see module conventions)."""
    pool: Counter = Counter()
    for probs in tagger_probs.values():
        for row in top_classes(probs, top_n):
            pool.update(row)
    return Counter({k: min(v, n_tracks) for k, v in pool.items()})


def sub_multisets(pool: Counter, max_size: int) -> list[tuple[int, ...]]:
    """Every sub-multiset of ``pool`` of size ``1..max_size``, canonical, sorted by (size, q)."""
    classes = sorted(pool)
    out = []
    for counts in itertools.product(*(range(pool[c] + 1) for c in classes)):
        size = sum(counts)
        if 1 <= size <= max_size:
            out.append(tuple(c for c, n in zip(classes, counts) for _ in range(n)))
    return sorted(out, key=lambda q: (len(q), q))


def query_closure(tagger_probs: Mapping[str, np.ndarray], top_n: int, n_tracks: int,
                  oracle: Optional[Sequence[int]] = None,
                  max_slots: Optional[int] = None) -> list[tuple[int, ...]]:
    """All queries of one soundscape, each once, canonical, sorted by (size, query).

    Args:
        tagger_probs: tagger name → ``(n_tracks, C + 1)`` softmax.
        top_n: proposals per (tagger, track).
        n_tracks: K, the largest proposal query.
        oracle: oracle class indices (any order), or ``None`` without oracle targets.
        max_slots: separator slots; an oracle query larger than this is left out.

    Example:
        >>> p = np.full((2, 4), 0.1); p[0, 1] = p[1, 1] = 0.7
        >>> query_closure({"t": p}, top_n=1, n_tracks=2, oracle=[2, 0])
        [(1,), (0, 2), (1, 1)]
    """
    keys = set(sub_multisets(proposal_pool(tagger_probs, top_n, n_tracks), n_tracks))
    if oracle is not None and len(oracle):
        q = canonical_query(oracle)
        if max_slots is None or len(q) <= max_slots:
            keys.add(q)
    return sorted(keys, key=lambda q: (len(q), q))
