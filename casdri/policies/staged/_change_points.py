"""Change points of the ``staged`` policy's thresholds.

Conventions:
    * Refine's fields: refine's own change points (`casdri.policies.refine._change_points`) of
      the setting with every staged field at its default (off). Steps (g), (h) of
      `casdri.policies.staged` are a function of refine's decision and the staged fields
      alone, so the staged decision can flip in a refine threshold only where refine's does.
    * ``sed_min_dur_s[c]``: the SED active durations of class c (at the setting's
      ``sed_level``) of every requested soundscape; ``sed_max_gate[c]``: the max SED frame
      probabilities of class c; ``sed_agree_gap[c]``: the taggers' max minus the SED max of
      class c (supersets: every soundscape, whether or not it has a class-c slot).
    * ``reclass_silence_thr[c]``: the re-classifying stems' retag silence probabilities of the
      class-c slots of the final query, read from the policy's own trace (the final query and
      stems do not depend on the gates of step (h)).
    * ``stage_by_class`` is a whole number (searched on its integers) and choices have none.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ...sed import F_DUR0, F_MAX, N_FEATURES, SED_LEVELS_PCT
from ..._kernels import F_SIL
from ..refine._change_points import RefineChangePoints
from ._kernel import feature_columns
from ._params import STAGED_FIELDS, StagedParams

__all__ = ["StagedChangePoints"]


class StagedChangePoints:
    """Change points of ``staged`` on one cache.

    Args:
        cache: the `casdri.cache.DecisionCache`.
        prep: ``casdri.replay.prepare(cache, "staged")``.
        trace: ``trace(X (1, P), idx) -> (len(idx), 4)`` decisions (`casdri.replay.trace`).
    """

    def __init__(self, cache, prep: dict, trace: Callable):
        self.refine = RefineChangePoints(cache, prep, trace)
        self.trace = trace
        self.S, self.C, self.n_st = cache.n_soundscapes, cache.n_classes, cache.n_stages
        self.lay = StagedParams.layout(cache)
        self.default = StagedParams().encode(cache)
        self.own = np.concatenate([self.lay[n] for n in STAGED_FIELDS])
        _, pf = prep["policy"]
        cols = feature_columns(cache.n_tracks, self.C)
        sed = pf[:, cols["sed"]:cols["sed"] + N_FEATURES * self.C].reshape(
            self.S, N_FEATURES, self.C)
        self.sed_max = sed[:, F_MAX]                                        # (S, C)
        self.sed_dur = sed[:, F_DUR0:]                                      # (S, L, C)
        self.gap = pf[:, cols["tag_max"]:cols["tag_max"] + self.C] - self.sed_max
        _, self.key_len, self.key_lab, self.slot_f = prep["tab"][:4]

    def _per_soundscape(self, values: np.ndarray, cls: Optional[int], idx: np.ndarray):
        v = values[idx] if cls is None else values[idx, cls][:, None]       # (n, C or 1)
        pos, k = np.nonzero(np.isfinite(v))
        return pos, v[pos, k]

    def __call__(self, name: str, cls: Optional[int], x: np.ndarray,
                 idx: np.ndarray) -> Optional[tuple]:
        """``(pos, values)`` change points of ``name`` (class ``cls``; ``None``: every class)
        on soundscapes ``idx``; ``None`` for a choice or ``stage_by_class``."""
        idx = np.asarray(idx, np.int64)
        if name not in STAGED_FIELDS:
            x0 = np.array(x, np.float64)
            x0[self.own] = self.default[self.own]
            return self.refine(name, cls, x0, idx)
        if name == "sed_min_dur_s":
            lv = SED_LEVELS_PCT.index(int(x[self.lay["sed_level"][0]]))
            return self._per_soundscape(self.sed_dur[:, lv], cls, idx)
        if name == "sed_max_gate":
            return self._per_soundscape(self.sed_max, cls, idx)
        if name == "sed_agree_gap":
            return self._per_soundscape(self.gap, cls, idx)
        if name == "reclass_silence_thr":
            return self._reclass_points(x, cls, idx)
        return None

    def _reclass_points(self, x, cls, idx):
        dec = self.trace(np.asarray(x, np.float64)[None, :], idx)
        j, g = dec[:, 0], dec[:, 1]
        pos = np.flatnonzero(j >= 0)
        j, g = j[pos], g[pos]
        rk = int(x[self.lay["reclass_stage"][0]])
        if rk >= 0:
            g = np.full_like(g, int(x[self.lay["select_separator"][0]]) * self.n_st + rk)
        maxs = self.key_lab.shape[1]
        ok = np.arange(maxs)[None, :] < self.key_len[j][:, None]
        if cls is not None:
            ok &= self.key_lab[j] == cls
        vals = self.slot_f[j, g][:, :, F_SIL]
        r, i = np.nonzero(ok)
        return pos[r], vals[r, i]
