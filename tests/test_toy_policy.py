"""Adding a policy touches one file: a toy policy is defined here, registered, replayed (jitted
== plain-Python ``decide`` == the metric's rule through the shared tables) and searched end to
end, with no other file changed (the walkthrough of `casdri.policies`).

The toy ``top1`` policy: per track, the first tagger's most probable non-silence class is a
query candidate when its probability is ``>= thr[c]``; the candidates, sorted, form one query
separated once (separator ``separator``, stage 0); a stem whose energy is below
``energy_gate_db`` is labelled silence.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Union

import numba
import numpy as np
import pytest

from casdri._kernels import D_K, D_NST, F_ENERGY
from casdri.policies import (Decision, PolicyParams, get_policy, load_policy_yaml, pick_slots,
                             register_policy)
from casdri.policies._base import choice, scalar, threshold
from casdri.policies._jit import DECIDE_JIT
from casdri.replay import decisions, replay_matrix, replay_pairs
from casdri.synthetic import make_synthetic_cache, random_settings
from search.casdri_problem import CasdriProblem
from search.run import run_search

from .test_policies import _check_decide


class Top1:
    """The toy policy plug-in (a class used as a namespace; a module works the same)."""

    NAME = "top1"

    @dataclass(frozen=True)
    class PARAMS(PolicyParams):
        policy = "top1"
        thr: Union[float, dict] = threshold(0.0, 0.0, 1.0, "min probability of a candidate")
        energy_gate_db: float = scalar(-80.0, -80.0, 0.0, "stem energy (dB) below: silence")
        separator: int = choice(0, lambda m: tuple(range(min(len(m.separators), 2))),
                                "separator index")

    SEARCH_PLAN = {"gates": ("energy_gate_db",), "per-class": ("thr",),
                   "select": ("separator",), "refine": ("thr", "energy_gate_db", "separator")}

    @staticmethod
    def _tracks(probs):
        probs = np.asarray(probs)
        C = probs.shape[1] - 1
        cls = np.argmax(probs[:, :C], axis=1)
        return cls, probs[np.arange(len(cls)), cls].astype(np.float64)

    @staticmethod
    def prepare(cache):
        """``pi (S, K + 2^K)`` = (class per track, key per subset of tracks); ``pf (S, K)``."""
        S, K = cache.n_soundscapes, cache.n_tracks
        pi = np.zeros((S, K + (1 << K)), np.int64)
        pf = np.zeros((S, K), np.float64)
        for s in range(S):
            cls, p = Top1._tracks(cache.tagger_probs[0, s])
            pi[s, :K], pf[s] = cls, p
            for bits in range(1 << K):
                pi[s, K + bits] = cache.find_key(s, [cls[t] for t in range(K) if bits >> t & 1])
        return pi, pf

    @staticmethod
    @numba.njit(**DECIDE_JIT)
    def kernel_decide(X, n0, n1, s, pi, pf, off, tab, dims, wi, wf, dec):  # pragma: no cover
        key_len, slot_f, tab_cnt = tab[1], tab[3], tab[5]
        K = dims[D_K]
        for n in range(n0, n1):
            bits = 0
            for t in range(K):
                bits |= np.int64(pf[s, t] >= X[n, off[0] + pi[s, t]]) << t
            j = pi[s, K + bits]
            g = int(X[n, off[2]]) * dims[D_NST]
            m = 0
            code = 0
            if j < -1:
                code = 1
            elif j >= 0:
                if tab_cnt[j, g, 0] < 0:
                    code = 2
                else:
                    for i in range(key_len[j]):
                        m |= np.int64(slot_f[j, g, i, F_ENERGY] >= X[n, off[1]]) << i
            dec[n - n0, 0] = j
            dec[n - n0, 1] = g
            dec[n - n0, 2] = m
            dec[n - n0, 3] = code

    @staticmethod
    def decide(inputs, params, lookup):
        cls, p = Top1._tracks(next(iter(inputs.tagger_probs.values())))
        thr = params.per_class("thr", inputs.label_set)
        query = tuple(sorted(int(c) for c, v in zip(cls, p) if v >= thr[c]))
        if not query:
            return Decision((), (), (), ())
        stems, seps = pick_slots(query, lookup, int(params.separator), 0, inputs.n_separators)
        keep = tuple(st.energy_db >= params.energy_gate_db for st in stems)
        return Decision((query,), tuple(stems), tuple(seps), keep)

    @staticmethod
    def required_keys(inputs, search_space=None):
        cls, _ = Top1._tracks(next(iter(inputs.tagger_probs.values())))
        K = len(cls)
        return {q for q in (tuple(sorted(int(cls[t]) for t in range(K) if b >> t & 1))
                            for b in range(1, 1 << K))}

    @staticmethod
    def change_points(cache, prep, trace):
        pi, pf = prep["policy"]
        K = cache.n_tracks
        slot_f, key_len = prep["tab"][3], prep["tab"][1]
        lay = Top1.PARAMS.layout(cache)

        def points(name, cls, x, idx):
            idx = np.asarray(idx, np.int64)
            if name == "thr":  # the track probabilities of class cls
                hit = np.ones((len(idx), K), bool) if cls is None else pi[idx, :K] == cls
                pos, t = np.nonzero(hit)
                return pos, pf[idx][pos, t]
            if name == "energy_gate_db":  # the energies of the final query's stems
                dec = trace(x[None, :], idx)
                pos, vals = [], []
                for p, (j, g) in enumerate(dec[:, :2]):
                    for i in range(key_len[j] if j >= 0 else 0):
                        pos.append(p)
                        vals.append(slot_f[j, g, i, F_ENERGY])
                return np.asarray(pos, np.int64), np.asarray(vals, np.float64)
            assert name in lay
            return None
        return points


@pytest.fixture(scope="module")
def toy():
    return register_policy(Top1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_synthetic_cache(tmp_path_factory.mktemp("toy"), n_soundscapes=60, seed=4,
                                n_parts=1)


def test_toy_policy_replays_exactly(toy, cache):
    assert get_policy("top1") is toy
    rng = np.random.default_rng(0)
    X = random_settings(cache, toy, 40, rng)
    _check_decide(cache, "top1", X[:6])  # jitted decision == plain-Python decide, per stem
    a = replay_matrix(cache, toy, X, parallel=True)
    b = replay_matrix(cache, toy, X, parallel=False)
    assert np.array_equal(a.values, b.values, equal_nan=True)
    idx = rng.integers(0, cache.n_soundscapes, len(X))
    assert np.array_equal(replay_pairs(cache, toy, X, idx), a.values[np.arange(len(X)), idx],
                          equal_nan=True)
    d = decisions(cache, toy, Top1.PARAMS())  # thr 0, no gate: every track asks, all kept
    assert len(d) == cache.n_soundscapes * cache.n_tracks and "silence" not in set(d.label)


def test_toy_policy_is_searched_end_to_end(toy, cache):
    problem = CasdriProblem(cache, "top1")
    assert problem.plan["per-class"] == ("thr",)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a sweep that misses a change point
        res = run_search(cache, stage="refine", policy="top1", folds=2, n_boot=200, seed=0)
    assert res.problem.policy == "top1" and len(res.fold_results) == 2
    assert res.final_tune_db >= res.start_db - 1e-12  # a stage never ends below its start
    assert np.isfinite(res.heldout.gain_db)
    mod, params = load_policy_yaml(problem.policy_yaml(res.x_final, {"test": True}))
    assert mod is toy and np.array_equal(params.encode(cache), res.x_final)
