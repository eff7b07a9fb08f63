"""The jitted side of ``refine``: its per-soundscape kernel inputs (`prepare`) and its decision
(`kernel_decide`, inlined into the drivers of `casdri._kernels`), reading settings at the
column offsets of `RefineParams` (never hard-coded ones).

Kernel inputs: ``pi (S, 1 + 2K + 2^(2K)) int64`` = (n_inst, instance classes, subset of
instances → key); ``pf (S, 8K) float32``: instance ``i``'s (p_4ch, p_1ch, s_4ch, s_1ch) at
columns ``4i .. 4i + 3``, the class and silence probabilities of its tracks (NaN: absent), the
cache's float32 values unchanged (the kernel computes in float64); one instance's four values
are adjacent, so a decision reads one or two cache lines of ``pf``. MAXI = 2K instances at most
(each track of each tagger role proposes one class).
"""
from __future__ import annotations

import numba
import numpy as np

from ..._kernels import D_K, D_MAXI, D_NST, F_ARGMAX, F_ENERGY, F_OWN, F_SIL, find_key, key_code
from ..._jit_cache import njit_cached
from ..._kernels_capi import _JIT
from .._jit import DECIDE_JIT
from ._params import RefineParams

__all__ = ["prepare", "fusion_roles", "kernel_decide", "confidences", "fusion_instances",
           "subset_keys"]

#: an index known not to be negative, as Numba's unsigned type: indexing with it skips the
#: negative-index test a signed index gets (`kernel_decide`)
U = np.uint64

#: field positions (index into the offsets vector the kernel receives)
_F = RefineParams.field_index()
W, SOLO_1CH, SOLO_4CH, VERIFY_THR, DROP_THR, ENERGY_GATE, PROB_GATE, SILENCE_THR, VERIFY_MODE, \
    SELECT, STAGE, TAG_SIL_MARGIN, TAG_SIL_GATE = (_F[n] for n in (
        "w", "solo_keep_1ch", "solo_keep_4ch", "verify_thr", "drop_thr", "energy_gate_db",
        "prob_gate", "silence_thr", "verify_mode", "select_separator", "stage",
        "tagger_silence_margin", "tagger_silence_gate"))


def fusion_roles(taggers) -> tuple[int, int]:
    """``(index of the 4ch role, index of the 1ch role or -1)`` among tagger names."""
    taggers = list(taggers)
    if "4ch" in taggers and "1ch" in taggers:
        return taggers.index("4ch"), taggers.index("1ch")
    return 0, (1 if len(taggers) > 1 else -1)


def prepare(cache) -> tuple[np.ndarray, np.ndarray]:
    """Per-soundscape kernel inputs ``(pi, pf)`` (module docstring)."""
    ia, ib = fusion_roles(cache.taggers)
    S, K = cache.n_soundscapes, cache.n_tracks
    maxi = 2 * K
    probs_a = np.ascontiguousarray(cache.tagger_probs[ia])
    probs_b = np.ascontiguousarray(cache.tagger_probs[ib if ib >= 0 else ia])
    n = np.zeros(S, np.int64)
    cls = np.zeros((S, maxi), np.int64)
    p = np.zeros((S, maxi, 4), np.float32)
    fusion_instances(probs_a, probs_b, ib >= 0, n, cls, p)
    sub = np.zeros((S, 1 << maxi), np.int64)
    subset_keys(n, cls, cache.key_offsets, cache.key_codes, cache.n_classes, K, sub)
    pi = np.ascontiguousarray(np.concatenate([n[:, None], cls, sub], axis=1))
    pf = np.ascontiguousarray(p.reshape(S, 4 * maxi))
    return pi, pf


@njit_cached(**_JIT)
def fusion_instances(probs_a, probs_b, use_b, out_n, out_cls, out_p):  # pragma: no cover
    """Per soundscape, the fused instances of two taggers (step (a) of `casdri.policies.refine`).

    Args:
        probs_a, probs_b: ``(S, K, C + 1) float32`` softmax of the 4ch and 1ch roles.
        use_b: False when the cache has one tagger (every instance is a 4ch solo).
        out_n: ``(S,)``; out_cls ``(S, 2K)``; out_p ``(S, 2K, 4) float32`` (p_4ch, p_1ch,
            and the silence probabilities of the same tracks, s_4ch, s_1ch; NaN absent).
    """
    S, K, C1 = probs_a.shape
    C = C1 - 1
    top = np.empty((2, K), np.int64)
    pt = np.empty((2, K), np.float64)
    st = np.empty((2, K), np.float64)
    la = np.empty(K, np.float64)
    lb = np.empty(K, np.float64)
    sa = np.empty(K, np.float64)
    sb = np.empty(K, np.float64)
    for s in range(S):
        for t in range(K):
            for role in range(2):
                p = probs_a[s, t] if role == 0 else probs_b[s, t]
                best = 0
                for c in range(1, C):
                    if p[c] > p[best]:
                        best = c
                top[role, t] = best if (role == 0 or use_b) else -1
                pt[role, t] = p[best]
                st[role, t] = p[C]
        n = 0
        for c in range(C):
            na = 0
            nb = 0
            for t in range(K):  # insertion into descending lists, stable (track order)
                for role in range(2):
                    if top[role, t] != c:
                        continue
                    lst = la if role == 0 else lb
                    sil = sa if role == 0 else sb
                    m = na if role == 0 else nb
                    v = pt[role, t]
                    q = m
                    while q > 0 and lst[q - 1] < v:
                        lst[q] = lst[q - 1]
                        sil[q] = sil[q - 1]
                        q -= 1
                    lst[q] = v
                    sil[q] = st[role, t]
                    if role == 0:
                        na += 1
                    else:
                        nb += 1
            for r in range(max(na, nb)):
                out_cls[s, n] = c
                out_p[s, n, 0] = la[r] if r < na else np.nan
                out_p[s, n, 1] = lb[r] if r < nb else np.nan
                out_p[s, n, 2] = sa[r] if r < na else np.nan
                out_p[s, n, 3] = sb[r] if r < nb else np.nan
                n += 1
        out_n[s] = n
        for i in range(n, out_cls.shape[1]):
            out_cls[s, i] = -1
            out_p[s, i, :] = np.nan


@njit_cached(**_JIT)
def subset_keys(n_inst, inst_cls, key_off, key_codes, C, K, out):  # pragma: no cover
    """``out[s, bits]``: key of the instances in ``bits`` (-1 empty, -2 not cached, -3 never
    asked: more than K instances or bits beyond ``n_inst[s]``)."""
    lab = np.empty(inst_cls.shape[1], np.int64)
    for s in range(inst_cls.shape[0]):
        for m in range(out.shape[1]):
            if m == 0:
                out[s, m] = -1
                continue
            if (m >> n_inst[s]) != 0:
                out[s, m] = -3
                continue
            n = 0
            for i in range(n_inst[s]):
                if (m >> i) & 1:
                    lab[n] = inst_cls[s, i]
                    n += 1
            if n > K:
                out[s, m] = -3
                continue
            out[s, m] = find_key(key_codes, key_off[s], key_off[s + 1],
                                 key_code(lab, n, C))


# ----------------------------------------------------------------------------- decision


@numba.njit(**DECIDE_JIT)
def _fused(w, a, b):  # pragma: no cover - jitted
    """``w·a + (1 − w)·b`` of a paired instance, else the one present value."""
    if a == a and b == b:
        return w * a + (1.0 - w) * b
    return a if a == a else b


@numba.njit(**DECIDE_JIT)
def _confidence(w, a, b, keep_4ch, keep_1ch):  # pragma: no cover - jitted
    """Step (a) for one instance before the silence margin: fused confidence, NaN for a
    dropped solo (scalars only, so that inlining it costs no reference counting)."""
    if a == a and b == b:
        return w * a + (1.0 - w) * b
    if a == a:
        return a if a >= keep_4ch else np.nan
    return b if b >= keep_1ch else np.nan


@numba.njit(**DECIDE_JIT)
def _silenced(conf, sil, margin):  # pragma: no cover - jitted
    """The silence margin of step (a): NaN (not proposed) when the instance's fused tagger
    silence ``sil`` exceeds its confidence by more than ``margin``, else ``conf``."""
    return np.nan if sil - conf > margin else conf


@numba.njit(**DECIDE_JIT)
def kernel_decide(X, n0, n1, s, pi, pf, off, tab, dims, wi, wf, dec):  # pragma: no cover
    """The refine decision of settings ``X[n0:n1]`` on soundscape ``s`` → ``dec[n - n0] =
    (j, g, m, code)`` (signature: `casdri._kernels`; rules: `casdri.policies.refine`).

    Scratch (indexed in place, never viewed: see `casdri.policies._jit`): ``wf[i]`` the
    confidence of instance ``i`` (NaN: not proposed); ``wi[k]`` the instance of slot ``k``.
    The fused tagger silence of an instance is computed where it is read, and only for a rule
    that is on: in (a) when the margin is not +inf, in (d) per slot when its class's tagger
    silence gate is not +inf (+inf is off: the slot passes it without a read, as in `decide`).

    Indices computed from data are cast to unsigned (`U`): Numba tests every signed index
    for a negative value (Python's wrap-around), and these cannot be negative. The tests cost
    6-9 % of a dense refine replay (benchmarks/bench_replay.py). Precondition: settings the
    facade checked (`casdri.replay.encode_settings`: choices are valid codes, so the combo
    ``g`` is in range; ``j`` is cast only after its ``j < 0`` test); a driver called with
    unchecked settings could read outside its arrays.
    """
    key_lab, slot_f, tab_cnt = tab[2], tab[3], tab[5]
    K = dims[D_K]
    maxi = dims[D_MAXI]
    n_st = dims[D_NST]
    su = U(s)
    n_inst = pi[su, 0]
    o_w, o_s1, o_s4 = off[W], off[SOLO_1CH], off[SOLO_4CH]
    o_tm, o_tg = off[TAG_SIL_MARGIN], off[TAG_SIL_GATE]
    o_ver, o_drop, o_mode = off[VERIFY_THR], off[DROP_THR], off[VERIFY_MODE]
    o_en, o_pg, o_sil = off[ENERGY_GATE], off[PROB_GATE], off[SILENCE_THR]
    o_sel, o_st = off[SELECT], off[STAGE]
    for n in range(n0, n1):
        nu = U(n)
        j = -1
        g = 0
        m = 0
        code = 0
        while True:  # one pass; `break` = decision made
            w = X[n, o_w]
            margin = X[n, o_tm]
            margin_on = margin < np.inf  # off (+inf): no silence can exceed it, skip fusing
            for i in range(n_inst):  # (a) fusion
                c = pi[su, U(1 + i)]
                conf = _confidence(w, pf[su, U(4 * i)], pf[su, U(4 * i + 1)],
                                   X[nu, U(o_s4 + c)], X[nu, U(o_s1 + c)])
                if margin_on:  # a branch, so that an off margin costs nothing per instance
                    conf = _silenced(conf, _fused(w, pf[su, U(4 * i + 2)],
                                                  pf[su, U(4 * i + 3)]), margin)
                wf[U(i)] = conf
            # The K most confident, in one pass over the instances: wi[:k] stays sorted by
            # confidence desc, then instance asc (a later instance enters only by beating one).
            k = 0
            for i in range(n_inst):
                ci = wf[U(i)]
                if ci != ci:
                    continue
                if k == K:  # full: i replaces the last only if it beats it (a tie keeps it)
                    if not ci > wf[U(wi[K - 1])]:
                        continue
                    q = K - 1
                else:
                    q = k
                    k += 1
                while q > 0 and wf[U(wi[q - 1])] < ci:
                    wi[q] = wi[q - 1]
                    q -= 1
                wi[q] = i
            if k == 0:
                break
            # Slot order (class asc, confidence desc, instance asc): a stable insertion sort
            # by class keeps the list's order within a class.
            bits = 0
            for a2 in range(k):
                v = wi[a2]
                bits |= 1 << v
                cv = pi[su, U(1 + v)]
                q = a2 - 1
                while q >= 0 and pi[su, U(1 + wi[q])] > cv:
                    wi[q + 1] = wi[q]
                    q -= 1
                wi[q + 1] = v
            j = pi[su, U(1 + maxi + bits)]  # (b) separate
            if j < 0:
                code = 1
                m = bits
                break
            g = int(X[n, o_sel]) * n_st + int(X[n, o_st])
            ju, gu = U(j), U(g)
            if tab_cnt[ju, gu, 0] < 0:
                code = 2
                break
            argmax_mode = X[n, o_mode] > 0.5
            dropped = 0
            for i in range(k):  # (c) verify the (f)+(e) stems, drop unsure unconfirmed
                iu = U(i)  # (branch-free: thresholds vary from setting to setting)
                c = key_lab[ju, iu]
                ok = (argmax_mode & (slot_f[ju, gu, iu, F_ARGMAX] > 0.5)) | \
                    ((not argmax_mode) & (slot_f[ju, gu, iu, F_OWN] >= X[nu, U(o_ver + c)]))
                dropped |= np.int64((not ok) & (wf[U(wi[i])] < X[nu, U(o_drop + c)])) << i
            if dropped:
                bits = 0
                k2 = 0
                for i in range(k):
                    if not (dropped >> i) & 1:
                        wi[k2] = wi[i]
                        bits |= 1 << wi[i]
                        k2 += 1
                k = k2
                if k == 0:
                    j = -1
                    g = 0
                    break
                j = pi[su, U(1 + maxi + bits)]
                if j < 0:
                    code = 1
                    m = bits
                    break
                ju = U(j)
                if tab_cnt[ju, gu, 0] < 0:
                    code = 2
                    break
            for i in range(k):  # (d) gates (no NaN here: >= is "not <")
                iu = U(i)
                c = key_lab[ju, iu]
                u = wi[i]
                keep = (slot_f[ju, gu, iu, F_ENERGY] >= X[nu, U(o_en + c)]) & \
                    (wf[U(u)] >= X[nu, U(o_pg + c)]) & \
                    (slot_f[ju, gu, iu, F_SIL] < X[nu, U(o_sil + c)])
                gate = X[nu, U(o_tg + c)]
                if gate < np.inf:  # +inf: off, and the silence is not read
                    keep &= _fused(w, pf[su, U(4 * u + 2)], pf[su, U(4 * u + 3)]) < gate
                m |= np.int64(keep) << i
            break
        r = n - n0
        dec[r, 0] = j
        dec[r, 1] = g
        dec[r, 2] = m
        dec[r, 3] = code


@njit_cached(**_JIT)
def confidences(X, pi, pf, off, out, sil):  # pragma: no cover - jitted
    """``out (S, MAXI)``: step (a) confidences of setting ``X[0]`` per soundscape and
    instance (NaN: absent or dropped), and ``sil (S, MAXI)`` their fused tagger silence
    probabilities, by the very expressions of `kernel_decide`."""
    maxi = out.shape[1]
    w = X[0, off[W]]
    for s in range(out.shape[0]):
        for i in range(maxi):
            out[s, i] = np.nan
            sil[s, i] = np.nan
        for i in range(pi[s, 0]):
            c = pi[s, 1 + i]
            si = _fused(w, pf[s, 4 * i + 2], pf[s, 4 * i + 3])
            sil[s, i] = si
            conf = _confidence(w, pf[s, 4 * i], pf[s, 4 * i + 1], X[0, off[SOLO_4CH] + c],
                               X[0, off[SOLO_1CH] + c])
            out[s, i] = _silenced(conf, si, X[0, off[TAG_SIL_MARGIN]])
