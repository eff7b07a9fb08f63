"""Change points of the ``refine`` policy's parameters: where a soundscape's decision can flip.

Conventions:
    * With every other parameter fixed, the ``refine`` decision of a soundscape (see
      `casdri.policies.refine`) changes with one parameter only where a comparison it makes
      flips. Per parameter (class ``c``, current combo ``g`` = select_separator x stage):

      ========================  ===============================================================
      ``solo_keep_4ch[c]``      p_4ch of the unpaired 4ch instances of class c
      ``solo_keep_1ch[c]``      p_1ch of the unpaired 1ch instances of class c
      ``verify_thr[c]``         retag probability of class c of the class-c slots of the
                                first query's stems (threshold mode only)
      ``drop_thr[c]``,          confidences of the class-c instances
      ``prob_gate[c]``
      ``energy_gate_db[c]``     stem energy of the class-c slots of the final query's stems
      ``silence_thr[c]``        retag silence probability of those slots
      ``tagger_silence_gate``   fused tagger silence probabilities of the class-c instances
      ``tagger_silence_margin`` silence minus confidence of every instance (margin off)
      ``w``                     crossings of two instances' confidences (linear in w), of
                                one instance's confidence with its class's drop/prob gates,
                                of its silence-minus-confidence with the margin and of its
                                fused silence with its class's tagger-silence gate
      ========================  ===============================================================

      The first query does not depend on verify/drop thresholds and the final one not on the
      gates, so both are fixed during such a sweep; they are read from the policy's own trace
      (the first query is the final one with ``drop_thr = 0``, which drops nothing).
      Instance sets are supersets (every instance of the class), which keeps the sweep exact.
    * Values are read from ``casdri.replay.prepare`` (the tables and per-soundscape fusion
      inputs the kernel itself uses); confidences come from the kernel's own jitted step (a)
      (`casdri.policies.refine._kernel.confidences`), slots from the policy's own trace.
    * Results are flat: ``(pos, values)``, ``pos`` the position of the soundscape in the
      requested ``idx``, vectorised over soundscapes (no Python loop per soundscape).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ..._kernels import F_ENERGY, F_OWN, F_SIL
from ._kernel import confidences
from ._params import RefineParams

__all__ = ["RefineChangePoints"]

# the slot feature each threshold is compared with
_SLOT_FEATURE = {"verify_thr": F_OWN, "energy_gate_db": F_ENERGY, "silence_thr": F_SIL}
_CONF = ("drop_thr", "prob_gate")


class RefineChangePoints:
    """Change points of ``refine`` on one cache.

    Args:
        cache: the `casdri.cache.DecisionCache`.
        prep: ``casdri.replay.prepare(cache, "refine")``.
        trace: ``trace(X (1, P), idx) -> (len(idx), 4)`` decisions (`casdri.replay.trace`).
    """

    def __init__(self, cache, prep: dict, trace: Callable):
        self.S, self.C, self.n_st = cache.n_soundscapes, cache.n_classes, cache.n_stages
        self.lay = RefineParams.layout(cache)
        self.off = RefineParams.offsets(cache)
        self.trace = trace
        pi, pf = prep["policy"]
        self.pi, self.pf = pi, pf
        maxi = 2 * cache.n_tracks
        n_inst = pi[:, 0]
        self.valid = np.arange(maxi)[None, :] < n_inst[:, None]          # (S, maxi)
        self.icls = np.where(self.valid, pi[:, 1:1 + maxi], 0)            # (S, maxi)
        inst = pf[:, :4 * maxi].reshape(-1, maxi, 4).astype(np.float64)  # (_kernel.prepare)
        self.a = np.where(self.valid, inst[:, :, 0], np.nan)              # p_4ch
        self.b = np.where(self.valid, inst[:, :, 1], np.nan)              # p_1ch
        self.paired = ~np.isnan(self.a) & ~np.isnan(self.b)
        self.solo4 = ~np.isnan(self.a) & np.isnan(self.b)
        self.solo1 = np.isnan(self.a) & ~np.isnan(self.b)
        _, self.key_len, self.key_lab, self.slot_f = prep["tab"][:4]
        self.sa = np.where(self.valid, inst[:, :, 2], np.nan)             # silence, 4ch track
        self.sb = np.where(self.valid, inst[:, :, 3], np.nan)             # silence, 1ch track
        self.maxi = maxi
        # the columns step (a) reads (`_kernel.confidences`): its results are memoised on them
        self._conf_cols = np.concatenate([self.lay[f] for f in (
            "w", "solo_keep_1ch", "solo_keep_4ch", "tagger_silence_margin")])
        self._memo: dict = {}

    def _remember(self, key, make):
        """The value of ``make()`` for ``key``, kept for the next calls (a sweep stage asks
        every class of a parameter at the same setting; the last `_MEMO` keys are kept)."""
        got = self._memo.pop(key, None)
        if got is None:
            got = make()
            for a in got if isinstance(got, tuple) else (got,):
                a.flags.writeable = False
        self._memo[key] = got
        while len(self._memo) > self._MEMO:
            self._memo.pop(next(iter(self._memo)))
        return got

    _MEMO = 8

    def _val(self, x, name):
        return x[self.lay[name]]

    def conf(self, x: np.ndarray, margin_off: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(S, maxi)`` instance confidences (NaN: absent or dropped) and fused tagger silence
        probabilities, by the kernel (``margin_off``: with the silence margin switched off)."""
        x = np.array(x, np.float64).reshape(1, -1)
        if margin_off:
            x[0, self.lay["tagger_silence_margin"]] = np.inf

        def make():
            out = np.empty((self.S, self.maxi), np.float64)
            sil = np.empty((self.S, self.maxi), np.float64)
            confidences(x, self.pi, self.pf, self.off, out, sil)
            return out, sil

        return self._remember(("conf", x[0, self._conf_cols].tobytes()), make)

    def __call__(self, name: str, cls: Optional[int], x: np.ndarray,
                 idx: np.ndarray) -> Optional[tuple]:
        """``(pos, values)`` change points of ``name`` (class ``cls``; ``None``: every class,
        for a global move) on soundscapes ``idx``; ``None`` for a categorical parameter."""
        idx = np.asarray(idx, np.int64)
        where = np.full(self.S, -1, np.int64)
        where[idx] = np.arange(idx.shape[0])
        if name == "w":
            return self._w_points(x, where)
        if name in ("solo_keep_1ch", "solo_keep_4ch"):
            m = self.solo1 if name == "solo_keep_1ch" else self.solo4
            v = self.b if name == "solo_keep_1ch" else self.a
            return self._select(m, v, self.icls, cls, where)
        if name in _CONF:
            cf, _ = self.conf(x)
            return self._select(~np.isnan(cf), cf, self.icls, cls, where)
        if name == "tagger_silence_gate":
            cf, sil = self.conf(x)
            return self._select(~np.isnan(cf), sil, self.icls, cls, where)
        if name == "tagger_silence_margin":
            cf, sil = self.conf(x, margin_off=True)
            return self._select(~np.isnan(cf), sil - cf, self.icls, None, where)
        if name in _SLOT_FEATURE:
            if name == "verify_thr" and float(x[self.lay["verify_mode"][0]]) > 0.5:
                return np.zeros(0, np.int64), np.zeros(0)  # argmax mode: threshold not read
            return self._slot_points(x, idx, _SLOT_FEATURE[name], cls,
                                     first_query=name == "verify_thr")
        return None

    def _slot_points(self, x, idx, feature, cls, first_query):
        """Feature values of the (class-``cls``) slots of the first or final query."""
        if first_query:
            x = x.copy()
            x[self.lay["drop_thr"]] = 0.0
        x = np.asarray(x, np.float64)
        dec = self._remember(("trace", x.tobytes(), idx.tobytes()),
                             lambda: np.asarray(self.trace(x[None, :], idx)))
        j, g = dec[:, 0], dec[:, 1]
        pos = np.flatnonzero(j >= 0)
        j, g = j[pos], g[pos]
        maxs = self.key_lab.shape[1]
        labs = self.key_lab[j]                                            # (n, MAXS)
        ok = np.arange(maxs)[None, :] < self.key_len[j][:, None]
        if cls is not None:
            ok &= labs == cls
        vals = self.slot_f[j, g][:, :, feature]                          # (n, MAXS)
        r, i = np.nonzero(ok)
        return pos[r], vals[r, i]

    def _select(self, mask, values, classes, cls, where):
        m = mask if cls is None else mask & (classes == cls)
        s, i = np.nonzero(m)
        p = where[s]
        ok = p >= 0
        return p[ok], values[s[ok], i[ok]]

    def _w_points(self, x: np.ndarray, where: np.ndarray) -> tuple:
        """Crossings in w of paired lines ``b + w (a - b)`` with each other, with the constant
        confidences of kept solos and with the drop / probability gates of their class; of
        their silence-minus-confidence lines with the margin, and of their fused silence lines
        ``sb + w (sa - sb)`` with their class's tagger-silence gate."""
        cf, _ = self.conf(x)
        slope = np.where(self.paired, self.a - self.b, np.nan)             # (S, maxi)
        icpt = np.where(self.paired, self.b, np.nan)
        const = np.where(self.paired, np.nan, cf)                           # solos (kept)
        gates = np.stack([self._val(x, t)[self.icls] for t in _CONF], axis=-1)  # (S, maxi, 2)
        s_slope = np.where(self.paired, self.sa - self.sb, np.nan)
        margin = float(x[self.lay["tagger_silence_margin"][0]])
        s_gate = self._val(x, "tagger_silence_gate")[self.icls]
        with np.errstate(divide="ignore", invalid="ignore"):
            pair = (icpt[:, None, :] - icpt[:, :, None]) / (slope[:, :, None] - slope[:, None, :])
            solo = (const[:, None, :] - icpt[:, :, None]) / slope[:, :, None]
            gate = (gates - icpt[:, :, None]) / slope[:, :, None]
            marg = (margin - (self.sb - icpt)) / (s_slope - slope)
            sgate = (s_gate - self.sb) / s_slope
        parts = [pair.reshape(self.S, -1), solo.reshape(self.S, -1), gate.reshape(self.S, -1),
                 marg, sgate]
        allp = np.concatenate(parts, axis=1)
        ok = np.isfinite(allp) & (allp > 0.0) & (allp < 1.0) & (where >= 0)[:, None]
        s, k = np.nonzero(ok)
        return where[s], allp[s, k]
