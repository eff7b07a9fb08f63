"""cache_builder.closure: canonical order and the query closure against an independent,
brute-force enumeration."""
from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cache_builder.closure import (
    canonical_query, proposal_pool, query_closure, sub_multisets, top_classes,
)
from casdri.labels import DCASE2026T4


def _brute(tagger_probs, top_n, n_tracks, oracle=None):
    """Independent enumeration: every multiset of <= K proposals drawn without replacement
    from the list of (tagger, track, rank) proposals, as sorted tuples."""
    proposals = []
    for probs in tagger_probs.values():
        c = probs.shape[1] - 1
        for row in probs:
            cut = sorted(row[:c], reverse=True)[top_n - 1]
            proposals += [k for k in range(c) if row[k] >= cut]
    keys = set()
    for size in range(1, n_tracks + 1):
        for combo in itertools.combinations(proposals, size):
            keys.add(tuple(sorted(combo)))
    if oracle:
        keys.add(tuple(sorted(oracle)))
    return keys


def test_canonical_query_sorts_by_class_index():
    assert canonical_query(["Typing", "AlarmClock", "silence"], DCASE2026T4) == (0, 16)
    assert canonical_query([15, 3, 15]) == (3, 15, 15)


def test_top_classes_ignores_silence_and_keeps_ties():
    p = np.array([[0.1, 0.3, 0.3, 0.9], [0.5, 0.2, 0.2, 0.1], [0.2, 0.5, 0.3, 0.0]])
    assert top_classes(p, 1) == [[1, 2], [0], [1]]
    assert top_classes(p, 2) == [[1, 2], [0, 1, 2], [1, 2]]


def test_sub_multisets_small():
    assert sub_multisets(Counter({3: 2, 1: 1}), 3) == [(1,), (3,), (1, 3), (3, 3), (1, 3, 3)]


def test_pool_multiplicity_capped_at_tracks():
    p = np.zeros((3, 5))
    p[:, 2] = 1.0
    assert proposal_pool({"a": p, "b": p}, 1, 3) == Counter({2: 3})


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 10_000), n_taggers=st.integers(1, 2), n_tracks=st.integers(1, 3),
       top_n=st.integers(1, 2), n_classes=st.integers(2, 6), oracle=st.booleans())
def test_closure_equals_brute_force(seed, n_taggers, n_tracks, top_n, n_classes, oracle):
    rng = np.random.default_rng(seed)
    probs = {}
    for t in range(n_taggers):
        logits = rng.integers(0, 3, size=(n_tracks, n_classes + 1)).astype(float)  # ties
        probs[f"t{t}"] = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    orc = list(rng.integers(0, n_classes, size=rng.integers(0, 4))) if oracle else None
    got = query_closure(probs, top_n, n_tracks, orc, max_slots=3)
    assert len(got) == len(set(got))
    assert all(list(q) == sorted(q) for q in got)
    assert got == sorted(got, key=lambda q: (len(q), q))
    assert set(got) == _brute(probs, top_n, n_tracks, orc)
