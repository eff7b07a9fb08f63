"""A hand-made `search.objective.Problem` with a known optimum, and the stages run on it.

The toy policy keeps a candidate detection of class c when its fused probability
``w * p1 + (1 - w) * p2`` reaches ``prob_gate[c]``; a kept true detection scores its SDRi, a
kept false one a 0 entry, a missed reference a 0 entry (the CAPI-SDRi rule with one stem per
detection). It is independent of casdri's replay, so the stage logic is tested on its own.
"""
from __future__ import annotations

import numpy as np
import pytest

from search.folds import stratified_folds
from search.moves import best_move
from search.objective import Objective, Param
from search.settings import SearchSettings
from search.stages import StageContext, run_chain, run_stage


class ToyProblem:
    """S soundscapes, C classes, a few candidates each; params ``w`` (grid) and ``prob_gate``."""

    def __init__(self, n_soundscapes=120, n_classes=4, seed=0, planted=(0.3, 0.5, 0.7, 0.6)):
        rng = np.random.default_rng(seed)
        self.n_soundscapes, self.n_classes = n_soundscapes, n_classes
        self.class_names = tuple(f"c{i}" for i in range(n_classes))
        self.params = {
            "w": Param("w", np.array([0]), 0.0, 1.0),
            "prob_gate": Param("prob_gate", np.arange(1, 1 + n_classes), 0.0, 1.0, per_class=True),
        }
        # the search plan (stage -> parameters it may move), as a policy's SEARCH_PLAN gives it
        self.plan = {"fusion": ("w",), "gates": ("prob_gate",), "per-class": ("prob_gate",)}
        rows = []  # (soundscape, class, p1, p2, true, sdri)
        self.n_ref = np.zeros(n_soundscapes, np.int64)
        for s in range(n_soundscapes):
            for _ in range(rng.integers(0, 4)):
                c = int(rng.integers(n_classes))
                true = rng.random() < 0.6
                # true detections sit above the planted threshold, false ones below (mostly)
                base = planted[c] + (0.25 if true else -0.25) + 0.1 * rng.standard_normal()
                p1 = np.clip(base + 0.05 * rng.standard_normal(), 0, 1)
                p2 = np.clip(base + 0.3 * rng.standard_normal(), 0, 1)
                rows.append((s, c, p1, p2, true, rng.uniform(5, 15)))
                self.n_ref[s] += true
        self.rows = np.array(rows, dtype=np.float64).reshape(-1, 6)
        self._by = [self.rows[self.rows[:, 0] == s] for s in range(n_soundscapes)]
        self.start = np.concatenate([[0.5], np.full(n_classes, 0.5)])

    def _clip(self, x, s):
        r = self._by[s]
        fused = x[0] * r[:, 2] + (1 - x[0]) * r[:, 3]
        keep = fused >= x[1 + r[:, 1].astype(int)]
        true = r[:, 4] > 0
        n_entries = int((keep & ~true).sum() + self.n_ref[s])
        if n_entries == 0:
            return np.nan
        return float(r[keep & true, 5].sum() / n_entries)

    def values(self, X, idx=None):
        idx = np.arange(self.n_soundscapes) if idx is None else np.asarray(idx)
        X = np.atleast_2d(X)
        return np.array([[self._clip(x, s) for s in idx] for x in X]).reshape(X.shape[0], -1)

    def pair_values(self, X, idx):
        return np.array([self._clip(x, s) for x, s in zip(np.atleast_2d(X), idx)])

    def change_points(self, name, cls, x, idx):
        if name != "prob_gate":
            return None
        pos, vals = [], []
        for k, s in enumerate(idx):
            r = self._by[s]
            if cls is not None:
                r = r[r[:, 1] == cls]
            pos.append(np.full(r.shape[0], k))
            vals.append(x[0] * r[:, 2] + (1 - x[0]) * r[:, 3])
        return np.concatenate(pos).astype(np.int64), np.concatenate(vals)


@pytest.fixture(scope="module")
def toy():
    return ToyProblem()


def test_sparse_sweep_equals_fine_grid(toy):
    obj = Objective(toy, np.ones(toy.n_soundscapes, bool))
    x = toy.start
    p = toy.params["prob_gate"]
    for c in range(toy.n_classes):
        m = best_move(obj, x, p, c, obj.score(x), margin=0.0)
        grid = np.linspace(0, 1, 401)
        X = np.repeat(x[None], grid.size, 0)
        X[:, 1 + c] = grid
        brute = obj.scores(X)
        assert m.best_score_db >= np.nanmax(brute) - 1e-12
        assert m.best_score_db == pytest.approx(np.nanmax(brute), abs=1e-9) or \
            m.best_score_db > np.nanmax(brute)


def test_stages_never_worse_and_recover_planted(toy):
    obj = Objective(toy, np.ones(toy.n_soundscapes, bool))
    ctx = StageContext(obj, SearchSettings(margin=0.0, accept="margin", n_trials=8, seed=1))
    recs = run_chain(["per-class", "refine"], toy.start, ctx)
    for r in recs:
        assert r.end_score_db >= r.start_score_db
    x = recs[-1].x_end
    # planted thresholds separate true from false detections: the tuned gates lie between
    assert np.all(np.abs(x[1:] - np.array([0.3, 0.5, 0.7, 0.6])) < 0.25)
    assert obj.score(x) > obj.score(toy.start)


def test_noop_stage_is_recorded(toy):
    obj = Objective(toy, np.ones(toy.n_soundscapes, bool))
    rec = run_stage("select", toy.start, StageContext(obj))
    assert rec.engine == "none" and rec.gain_db == 0.0 and "moves nothing" in rec.note


def test_fusion_stage_is_seeded(toy):
    obj = Objective(toy, np.ones(toy.n_soundscapes, bool))
    a = run_stage("fusion", toy.start, StageContext(obj, SearchSettings(n_trials=6, seed=3)))
    b = run_stage("fusion", toy.start, StageContext(obj, SearchSettings(n_trials=6, seed=3)))
    assert [t["param_w"] for t in a.trials] == [t["param_w"] for t in b.trials]
    assert np.array_equal(a.x_end, b.x_end)
    assert a.end_score_db >= a.start_score_db


def test_stages_are_seeded_by_name_not_by_position(toy, monkeypatch):
    import search.settings as st

    obj = Objective(toy, np.ones(toy.n_soundscapes, bool))
    ctx = StageContext(obj, SearchSettings(seed=3), fold="fold-1")
    before = {s: ctx.stage_seed(s) for s in st.STAGE_ORDER}
    monkeypatch.setattr(st, "STAGE_ORDER", ("new-stage", *reversed(st.STAGE_ORDER)))
    assert {s: ctx.stage_seed(s) for s in before} == before  # a new stage changes no other
    assert len(set(before.values())) == len(before)
    assert StageContext(obj, SearchSettings(seed=3), fold="fold-2").stage_seed("gates") \
        != before["gates"]


def test_auto_on_toy_keeps_what_helps_held_out(toy):
    from search.run import search_problem

    base = toy.values(np.concatenate([[0.5], np.zeros(toy.n_classes)])[None, :])[0]
    s = SearchSettings(stage="auto", folds=3, inner_folds=3, n_trials=8, n_boot=200,
                       auto_stages=("select", "per-class"), margin=0.0, accept="margin")
    r = search_problem(toy, toy.start, toy.n_ref, base, base, s)
    sel = r.final.selection
    assert sel.stages == ("per-class",)  # the planted per-class gates help unseen clips
    assert sel.alone_gain_db["per-class"] > 0 and sel.alone_gain_db["select"] == 0.0
    assert r.heldout.gain_db > 0


def test_folds_on_toy(toy):
    f = stratified_folds(toy.n_ref, k=5, seed=0)
    assert sorted(np.concatenate([np.flatnonzero(f.held_out(i)) for i in range(5)]).tolist()) \
        == list(range(toy.n_soundscapes))


class _SilentPart(ToyProblem):
    """The toy, but soundscapes ``silent`` score None under every setting (zero-target
    soundscapes without a false positive)."""

    def __init__(self, silent, **kw):
        super().__init__(**kw)
        self.silent = set(int(s) for s in silent)

    def _clip(self, x, s):
        return np.nan if int(s) in self.silent else super()._clip(x, s)


def test_a_fold_that_tunes_on_no_scored_soundscape_is_named_and_the_figures_stay_finite():
    from search.run import search_problem

    silent = np.arange(30)
    toy = _SilentPart(silent, n_soundscapes=60)
    groups = np.where(np.isin(np.arange(60), silent), 0, 1)  # two groups: two folds
    base = toy.values(np.concatenate([[0.5], np.zeros(toy.n_classes)])[None, :])[0]
    s = SearchSettings(stage="per-class", folds=2, n_boot=100, accept="margin", margin=0.0)
    # the fold that holds out the scored half tunes on the silent half only
    r = search_problem(toy, toy.start, toy.n_ref, base, base, s, groups=groups,
                       group_by="room")
    empty = [f.fold for f in r.fold_results if not np.isfinite(f.tune_start_db)]
    assert len(empty) == 1
    assert any(f"({empty[0]}) had no scored soundscape in their tune set" in w
               for w in r.warnings)
    assert np.isfinite(r.tune_gain_db)
