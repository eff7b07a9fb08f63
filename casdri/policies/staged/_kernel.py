"""The jitted side of ``staged``: its kernel inputs (`prepare`: refine's, then per class the
taggers' max probability and the SED activity summary) and its decision (`kernel_decide`:
refine's own jitted decision, then the steps (g), (h) of `casdri.policies.staged`).

Kernel inputs: ``pi`` = refine's; ``pf (S, 8K + C + N_FEATURES * C) float64`` = refine's
``8K`` columns, then ``tag_max[c]`` (max over taggers and tracks of the class-c probability),
then SED feature ``f`` of class ``c`` at column ``8K + C + f * C + c`` (`casdri.sed`
features; NaN: no SED, every SED gate passes).
"""
from __future__ import annotations

import numba
import numpy as np

from ...sed import F_DUR0, F_MAX, N_FEATURES, SED_LEVELS_PCT, summary_of_cache
from ..._kernels import D_C, D_K, D_MAXS, D_NSEP, D_NST, F_ARGMAX, F_SIL
from .._jit import DECIDE_JIT
from ..refine import _kernel as RK
from ._params import StagedParams

__all__ = ["prepare", "kernel_decide", "feature_columns"]

_F = StagedParams.field_index()
SELECT, STAGE, BY_CLASS, RE_STAGE, RE_SIL, RE_OTHER, SED_LEVEL, SED_DUR, SED_MAX, SED_GAP = (
    _F[n] for n in ("select_separator", "stage", "stage_by_class", "reclass_stage",
                    "reclass_silence_thr", "reclass_other", "sed_level", "sed_min_dur_s",
                    "sed_max_gate", "sed_agree_gap"))
_LEVELS = np.array(SED_LEVELS_PCT, np.float64)


def feature_columns(K: int, C: int) -> dict:
    """First ``pf`` column of the taggers' max (``"tag_max"``) and of each SED feature
    (``"sed"``: feature ``f`` of class ``c`` at ``+ f * C + c``)."""
    return {"tag_max": 8 * K, "sed": 8 * K + C}


def prepare(cache) -> tuple[np.ndarray, np.ndarray]:
    """Per-soundscape kernel inputs ``(pi, pf)`` (module docstring)."""
    pi, pf = RK.prepare(cache)
    S, C = cache.n_soundscapes, cache.n_classes
    tag_max = cache.tagger_probs[:, :, :, :C].max(axis=(0, 2)).astype(np.float64)  # (S, C)
    sed = summary_of_cache(cache)                                                # (S, C, F)
    sed_cols = np.transpose(sed, (0, 2, 1)).reshape(S, N_FEATURES * C)
    return pi, np.ascontiguousarray(np.concatenate([pf, tag_max, sed_cols], axis=1))


@numba.njit(**DECIDE_JIT)
def kernel_decide(X, n0, n1, s, pi, pf, off, tab, dims, wi, wf, dec):  # pragma: no cover
    """The staged decision of settings ``X[n0:n1]`` on soundscape ``s`` (signature:
    `casdri._kernels`; rules: `casdri.policies.staged`): refine's decision, then per final
    slot its class's stage (g) and the re-classification and SED gates (h)."""
    RK.kernel_decide(X, n0, n1, s, pi, pf, off, tab, dims, wi, wf, dec)
    key_len, key_lab, slot_f, tab_cnt = tab[1], tab[2], tab[3], tab[5]
    C = dims[D_C]
    n_st = dims[D_NST]
    maxs = dims[D_MAXS]
    n_sep = dims[D_NSEP]
    c_tag = 8 * dims[D_K]
    c_sed = c_tag + C
    o_sel, o_st, o_by = off[SELECT], off[STAGE], off[BY_CLASS]
    o_rs, o_rsil, o_ro = off[RE_STAGE], off[RE_SIL], off[RE_OTHER]
    o_lv, o_dur, o_max, o_gap = off[SED_LEVEL], off[SED_DUR], off[SED_MAX], off[SED_GAP]
    for n in range(n0, n1):
        r = n - n0
        j = dec[r, 0]
        if j < 0 or dec[r, 3] != 0:
            continue
        g = dec[r, 1]
        m = dec[r, 2]
        code = 0
        ns = key_len[j]
        sel = np.int64(X[n, o_sel])
        gst = np.int64(X[n, o_st])
        if n_st > 1:  # (g) stage per class
            a = 0
            p = 1
            mixed = False
            for i in range(ns):
                v = X[n, o_by + key_lab[j, i]]
                st = gst if v < 0.0 else min(np.int64(v), n_st - 1)
                mixed |= st != gst
                a += st * p
                p *= n_st
            if mixed:  # one separator: only selection 0 is built (2 means 0 there)
                g = 3 * n_st + (sel if n_sep > 1 else 0) * n_st ** maxs + a
                if tab_cnt[j, g, 0] < 0:
                    code = 2
        if code == 0:  # (h) re-classification and SED gates on the final slots
            rk = np.int64(X[n, o_rs])
            gr = g if rk < 0 else sel * n_st + rk
            if tab_cnt[j, gr, 0] < 0:
                code = 2
            else:
                other = X[n, o_ro] > 0.5
                lv = 0
                for q in range(_LEVELS.shape[0]):
                    if _LEVELS[q] == X[n, o_lv]:
                        lv = q
                for i in range(ns):
                    c = key_lab[j, i]
                    smax = pf[s, c_sed + F_MAX * C + c]
                    drop = (slot_f[j, gr, i, F_SIL] >= X[n, o_rsil + c]) | \
                        (other & (slot_f[j, gr, i, F_ARGMAX] < 0.5)) | \
                        (pf[s, c_sed + (F_DUR0 + lv) * C + c] < X[n, o_dur + c]) | \
                        (smax < X[n, o_max + c]) | (pf[s, c_tag + c] - smax > X[n, o_gap + c])
                    if drop:
                        m &= ~(np.int64(1) << i)
        dec[r, 1] = g
        dec[r, 2] = m
        dec[r, 3] = code
