"""The search's view of a policy on a cache: encoded settings in, per-soundscape CAPI-SDRi out.

Conventions:
    * A *setting* is one encoded parameter vector ``x`` (``(P,) float64``, the policy module's
      ``encode`` layout); many settings stack into ``X`` ``(n, P)``.
    * A `Param` names a block of columns of ``x``: one column for a scalar (``w``), ``C``
      columns for a per-class threshold (one per class, in label-set order). A *global* move of
      a per-class threshold writes the same value into all its columns.
    * Per-soundscape values are ``float64`` dB with NaN for a None clip; a dataset score is
      their mean over non-NaN entries (`casdri.replay.scored_mean`).
    * `Problem` is the interface the stages use (implemented on `casdri.replay` by
      `search.casdri_problem.CasdriProblem`, and by hand-made problems in the tests);
      `Objective` binds a problem to the tune soundscapes and counts evaluations.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Protocol, Sequence

import numpy as np

from casdri.policies import ParamRange
from casdri.replay import scored_mean

__all__ = ["Param", "Problem", "Objective", "with_values"]


Param = ParamRange
"""One policy parameter as the search sees it: `casdri.policies.ParamRange` (one descriptor
from the dataclass field metadata to the Optuna distribution, `search.engines.distribution`).
``columns`` are the encoded vector's ``(k,) int64`` columns (``k = C`` when ``per_class``);
a categorical one has ``choices``, an integer one ``integer``, a numeric one ``low``/``high``."""


class Problem(Protocol):
    """What a stage needs from a policy on a cache."""

    params: dict  # {name: Param}, in policy field order
    plan: dict  # {stage name: (param names)}: what each stage may move (the policy's SEARCH_PLAN)
    n_soundscapes: int
    n_classes: int
    class_names: tuple

    def values(self, X: np.ndarray, idx: Optional[np.ndarray] = None) -> np.ndarray:
        """``(n, len(idx))`` per-soundscape CAPI-SDRi of settings ``X`` on soundscapes ``idx``
        (all when ``None``), NaN for None clips."""

    def pair_values(self, X: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """``(n,)``: setting ``X[i]`` on soundscape ``idx[i]`` (one batch)."""

    def change_points(self, name: str, cls: Optional[int], x: np.ndarray,
                      idx: np.ndarray) -> Optional[tuple]:
        """``(pos, values)``: the values where parameter ``name`` (class ``cls``, or all classes
        together when ``None``) can change the decision of soundscape ``idx[pos[i]]`` with the
        other parameters at ``x`` (a superset is fine; a soundscape never named cannot
        change); ``None`` when the parameter is not a threshold on cached values."""


class Objective:
    """Dataset CAPI-SDRi of settings on a fixed set of tune soundscapes.

    Args:
        problem: the `Problem`.
        mask: ``(S,) bool`` tune soundscapes.

    Attributes:
        n_settings: settings scored so far; n_clip_evals: soundscape-settings replayed (a
            setting `values` scores again is served from the memo and replays nothing;
            `values_moved` keeps no memo).

    Memo: the per-soundscape values of the last `MEMO_SIZE` distinct settings are kept (keyed
    by the setting's bytes) and served again without a replay: a move replays the current
    setting and its candidates several times (its start, each half's choice, the kept
    value). The values are the replay's own (a row replays to the same values alone or in
    any batch), so the memo changes the cost, never a result.
    """

    #: distinct settings whose values are kept (``n_tune`` float64 each)
    MEMO_SIZE = 256

    def __init__(self, problem: Problem, mask: np.ndarray):
        self.problem = problem
        self.mask = np.asarray(mask, dtype=bool)
        self.idx = np.flatnonzero(self.mask)
        self.n_settings = 0
        self.n_clip_evals = 0
        self._memo: OrderedDict = OrderedDict()

    def values(self, X: np.ndarray) -> np.ndarray:
        """``(n, n_tune)`` per-soundscape values on the tune soundscapes."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        self.n_settings += X.shape[0]
        keys = [row.tobytes() for row in X]
        memo = self._memo
        todo = {}  # key -> first row holding it, settings not in the memo (each replayed once)
        for i, k in enumerate(keys):
            if k in memo:
                memo.move_to_end(k)
            elif k not in todo:
                todo[k] = i
        if todo:
            rows = list(todo.values())
            V = self.problem.values(X[rows], self.idx)
            self.n_clip_evals += len(rows) * self.idx.shape[0]
            if len(todo) == len(keys):
                self._remember(keys, V)
                return V
            fresh = dict(zip(todo, V))
        else:
            fresh = {}
        out = np.empty((X.shape[0], self.idx.shape[0]), np.float64)
        for i, k in enumerate(keys):
            out[i] = fresh[k] if k in fresh else memo[k]
        self._remember(list(fresh), list(fresh.values()))
        return out

    def _remember(self, keys, V) -> None:
        memo = self._memo
        for k, v in zip(keys, V):
            v = np.array(v)  # own copy: callers may write into what they were given
            v.flags.writeable = False
            memo[k] = v
            memo.move_to_end(k)
        while len(memo) > self.MEMO_SIZE:
            memo.popitem(last=False)

    def scores(self, X: np.ndarray) -> np.ndarray:
        """``(n,)`` dataset CAPI-SDRi (dB) of each setting; NaN when every clip is None."""
        return scored_mean(self.values(X))

    def score(self, x: np.ndarray) -> float:
        return float(self.scores(np.asarray(x)[None, :])[0])

    def pair_values(self, X: np.ndarray, idx: np.ndarray) -> np.ndarray:
        self.n_clip_evals += int(np.asarray(idx).shape[0])
        return self.problem.pair_values(np.atleast_2d(X), np.asarray(idx))

    def values_moved(self, X: np.ndarray, base: np.ndarray, moved: np.ndarray) -> np.ndarray:
        """``(n, n_tune)`` per-soundscape values of settings ``X`` that differ from one setting
        only in one coordinate, given that setting's values ``base`` (``(n_tune,)``) and the
        tune soundscapes ``moved`` (``(n_tune,) bool``) that the coordinate's change points
        name: replayed there, ``base`` elsewhere (a soundscape they never name cannot
        change: `Problem.change_points`). Equal to `values` (tested); not remembered (each
        call replays), so the full replay of a move a sweep keeps (the check of its change
        points) stays independent of it.
        """
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        moved = np.asarray(moved, dtype=bool)
        self.n_settings += X.shape[0]
        out = np.repeat(np.asarray(base, dtype=np.float64)[None, :], X.shape[0], axis=0)
        sel = self.idx[moved]
        if sel.shape[0]:
            out[:, moved] = self.problem.values(X, sel)
            self.n_clip_evals += X.shape[0] * sel.shape[0]
        return out

    def sums(self, x: np.ndarray, keep: np.ndarray) -> tuple[float, int]:
        """Sum and count of non-None values of setting ``x`` on the tune soundscapes where
        ``keep`` (``(n_tune,) bool``) is true (the clips a sweep does not move)."""
        sel = self.idx[keep]
        if sel.shape[0] == 0:
            return 0.0, 0
        self.n_settings += 1
        x = np.asarray(x, dtype=np.float64)
        have = self._memo.get(x.tobytes())
        if have is not None:
            v = have[np.asarray(keep, bool)]
        else:
            self.n_clip_evals += sel.shape[0]
            v = self.problem.values(x[None, :], sel)[0]
        ok = ~np.isnan(v)
        return float(v[ok].sum()), int(ok.sum())


def with_values(x: np.ndarray, param: Param, values: Sequence[float], cls: Optional[int] = None
                ) -> np.ndarray:
    """``(n, P)`` copies of ``x`` with ``param`` set to each of ``values`` (all its columns,
    or only the column of class ``cls``)."""
    X = np.repeat(np.asarray(x, dtype=np.float64)[None, :], len(values), axis=0)
    cols = param.columns if cls is None else param.columns[[cls]]
    X[:, cols] = np.asarray(values, dtype=np.float64)[:, None]
    return X
