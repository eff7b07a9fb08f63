"""Jitted CAPI-SDRi of a clip from cached SNRs, and the per-key tables the replay reads
(private; `casdri._kernels` re-exports what `casdri.replay` uses). No I/O, no validation.

Conventions: see `casdri._kernels` (flat arrays with offsets, keys, combos, keep masks).
fastmath stays off: the sums must equal `casdri.metric.capi_sdri_from_snr` (same additions in
the same order). ``_JIT`` is the one place that sets the flags of every replay kernel.
"""
from __future__ import annotations

import numpy as np

from ._jit_cache import njit_cached
from .cache import key_code_sorted

_JIT = dict(fastmath=False, error_model="numpy", nogil=True)
_PJIT = dict(_JIT, parallel=True)

#: columns of slot_f[..., :]
F_OWN, F_ENERGY, F_SIL, F_ARGMAX = range(4)
#: columns of the per-class accumulator
A_SUM, A_ENT, A_TP, A_FP, A_FN = range(5)


# ----------------------------------------------------------------------------- CAPI of a clip


@njit_cached(**_JIT)
def _best_pairing(E, nE, R, nR, k, est_rows, stem_snr, snr_off, comb, idx, used, bperm,
                  bcomb, part):  # pragma: no cover - jitted
    """Official search: combinations of R (outer) x permutations of E (inner), first max."""
    for i in range(k):
        comb[i] = i
    have = False
    best = 0.0
    while True:
        for i in range(nE):
            used[i] = 0
        d = 0
        idx[0] = -1
        part[0] = 0.0
        while d >= 0:
            if idx[d] >= 0:
                used[idx[d]] = 0
            v = idx[d] + 1
            while v < nE and used[v]:
                v += 1
            if v >= nE:
                idx[d] = -1
                d -= 1
                continue
            idx[d] = v
            used[v] = 1
            part[d + 1] = part[d] + stem_snr[snr_off[est_rows[E[v]]] + R[comb[d]]]
            if d + 1 == k:
                if not have or part[k] > best:
                    have = True
                    best = part[k]
                    for t in range(k):
                        bperm[t] = idx[t]
                        bcomb[t] = comb[t]
            else:
                d += 1
                idx[d] = -1
        i = k - 1
        while i >= 0 and comb[i] == nR - k + i:
            i -= 1
        if i < 0:
            break
        comb[i] += 1
        for t in range(i + 1, k):
            comb[t] = comb[t - 1] + 1


@njit_cached(**_JIT)
def clip_capi(est_rows, est_lab, n_est, ref_lab, snr_mix, stem_snr, snr_off, cls_acc, iw,
              fw):  # pragma: no cover - jitted
    """CAPI-SDRi sums of one clip (the rule of `casdri.metric.capi_sdri_from_snr`).

    Args:
        est_rows: ``(>= n_est,) int64`` stem rows; est_lab: their classes (-1 = silence).
        ref_lab, snr_mix: ``(n_ref,)`` reference classes and mixture SNR (dB) of the clip.
        stem_snr, snr_off: flat SNRs and per-row offsets.
        cls_acc: ``(C, 5) float64`` per-class accumulator (sum SDRi, entries, tp, fp, fn),
            or ``(0, 5)`` to skip.
        iw: int64 scratch ``>= 7 * max(n_est, n_ref)``; fw: float64 scratch ``>= n + 1``.

    Returns:
        ``(total_db, count, tp, fp, fn)``; the clip value is ``total / count`` (None when
        ``count == 0``). Classes are summed in order of first appearance (stems, then
        references), as `casdri.metric.class_blocks`.
    """
    n_ref = ref_lab.shape[0]
    nm = max(n_est, n_ref)
    E = iw[0:nm]
    R = iw[nm:2 * nm]
    comb = iw[2 * nm:3 * nm]
    idx = iw[3 * nm:4 * nm]
    used = iw[4 * nm:5 * nm]
    bperm = iw[5 * nm:6 * nm]
    bcomb = iw[6 * nm:7 * nm]
    track = cls_acc.shape[0] > 0
    total = 0.0
    count = 0
    tp = 0
    fp = 0
    fn = 0
    for e0 in range(n_est):
        c = est_lab[e0]
        if c < 0:
            continue
        first = True
        for e2 in range(e0):
            if est_lab[e2] == c:
                first = False
                break
        if not first:
            continue
        nE = 0
        for e in range(e0, n_est):
            if est_lab[e] == c:
                E[nE] = e
                nE += 1
        nR = 0
        for r in range(n_ref):
            if ref_lab[r] == c:
                R[nR] = r
                nR += 1
        k = min(nE, nR)
        block = 0.0
        if k > 0:
            _best_pairing(E, nE, R, nR, k, est_rows, stem_snr, snr_off, comb, idx, used,
                          bperm, bcomb, fw)
            for i in range(k):
                r = R[bcomb[i]]
                block += stem_snr[snr_off[est_rows[E[bperm[i]]]] + r] - snr_mix[r]
        total += block
        ent = max(nE, nR)
        count += ent
        tp += k
        fp += nE - k
        fn += nR - k
        if track:
            cls_acc[c, A_SUM] += block
            cls_acc[c, A_ENT] += ent
            cls_acc[c, A_TP] += k
            cls_acc[c, A_FP] += nE - k
            cls_acc[c, A_FN] += nR - k
    for r0 in range(n_ref):
        c = ref_lab[r0]
        seen = False
        for r2 in range(r0):
            if ref_lab[r2] == c:
                seen = True
                break
        for e in range(n_est):
            if est_lab[e] == c:
                seen = True
                break
        if seen:
            continue
        nR = 0
        for r in range(r0, n_ref):
            if ref_lab[r] == c:
                nR += 1
        count += nR
        fn += nR
        if track:
            cls_acc[c, A_ENT] += nR
            cls_acc[c, A_FN] += nR
    return total, count, tp, fp, fn


@njit_cached(**_JIT)
def label_counts(est_lab, n_est, ref_lab):  # pragma: no cover - jitted
    """``(tp, fp, fn)`` of multisets (silence = -1 ignored); acc is ``fp == fn == 0``."""
    tp = 0
    ne = 0
    for e0 in range(n_est):
        c = est_lab[e0]
        if c < 0:
            continue
        ne += 1
        first = True
        for e2 in range(e0):
            if est_lab[e2] == c:
                first = False
                break
        if not first:
            continue
        a = 0
        for e in range(e0, n_est):
            if est_lab[e] == c:
                a += 1
        b = 0
        for r in range(ref_lab.shape[0]):
            if ref_lab[r] == c:
                b += 1
        tp += min(a, b)
    return tp, ne - tp, ref_lab.shape[0] - tp


# ----------------------------------------------------------------------------- tables


@njit_cached(**_JIT)
def mark_missing(j, g, tab_cnt, slot_rows, slot_f):  # pragma: no cover - jitted
    """Combo ``g`` of key ``j`` has no stems in the cache: ``tab_cnt[j, g, 0] = -1``."""
    tab_cnt[j, g, :] = -1
    slot_rows[j, g, :] = -1
    slot_f[j, g, :, :] = np.nan


@njit_cached(**_JIT)
def score_subsets(j, g, rows, n, key_lab, rl, sm, stem_snr, snr_off, none, iw, fw, est_rows,
                  est_lab, tab_sum, tab_cnt):  # pragma: no cover - jitted
    """``tab_sum/tab_cnt[j, g, m]`` for every kept subset ``m`` of the key's ``n`` slots,
    whose stems are the rows ``rows[:n]`` (scored by `clip_capi`)."""
    for m in range(1 << n):
        ne = 0
        for i in range(n):
            if (m >> i) & 1:
                est_rows[ne] = rows[i]
                est_lab[ne] = key_lab[j, i]
                ne += 1
        total, cnt, tp, fp, fn = clip_capi(est_rows, est_lab, ne, rl, sm, stem_snr, snr_off,
                                           none, iw, fw)
        tab_sum[j, g, m] = total
        tab_cnt[j, g, m] = cnt


# Serial: compiled with ``parallel=True`` it took 2.5-3 s longer to compile (a first run pays
# it) and saved 0.015 s per load of the demo cache, 0.06 s at 1,512 soundscapes.
@njit_cached(**_JIT)
def build_tables(key_sc, key_len, key_lab, key_stem, retag_max, energy_db, sil_min, snr_off,
                 stem_snr, ref_off, ref_lab, snr_mix, slot_rows, slot_f, tab_sum, tab_cnt,
                 tab_lab):  # pragma: no cover - jitted
    """Fill the per-(key, combo, slot) stem rows and features and the per-mask tables.

    Args:
        key_stem: ``(NK, n_sep, n_stages) int64`` row of slot 0 (-1: not cached).
        retag_max: ``(N, C) float32``; energy_db ``(N,)`` dB; sil_min ``(N,) float32``.
        slot_rows: out ``(NK, G, MAXS) int64``; slot_f: out ``(NK, G, MAXS, 4) float64``;
        tab_sum/tab_cnt: out ``(NK, G, M)``; tab_lab: out ``(NK, M, 3)``.
    """
    n_sep = key_stem.shape[1]
    n_st = key_stem.shape[2]
    maxs = key_lab.shape[1]
    C = retag_max.shape[1]
    for j in range(key_sc.shape[0]):
        s = key_sc[j]
        n = key_len[j]
        rl = ref_lab[ref_off[s]:ref_off[s + 1]]
        sm = snr_mix[ref_off[s]:ref_off[s + 1]]
        nm = max(n, rl.shape[0]) + 1
        iw = np.empty(7 * nm, np.int64)
        fw = np.empty(nm + 1, np.float64)
        rows = np.empty(maxs, np.int64)
        est_rows = np.empty(maxs, np.int64)
        est_lab = np.empty(maxs, np.int64)
        none = np.zeros((0, 5), np.float64)
        for m in range(1 << n):
            ne = 0
            for i in range(n):
                if (m >> i) & 1:
                    est_lab[ne] = key_lab[j, i]
                    ne += 1
            tp, fp, fn = label_counts(est_lab, ne, rl)
            tab_lab[j, m, 0] = tp
            tab_lab[j, m, 1] = fp
            tab_lab[j, m, 2] = fn
        for sel in range(3):
            for st in range(n_st):
                g = sel * n_st + st
                a = key_stem[j, 0, st]
                b = key_stem[j, 1, st] if n_sep > 1 else -1
                ok = True
                for i in range(n):
                    c = key_lab[j, i]
                    if sel == 0 or (sel == 2 and n_sep == 1):
                        r = a + i if a >= 0 else -1
                    elif sel == 1:
                        r = b + i if b >= 0 else -1
                    elif a < 0 or b < 0:
                        r = -1
                    else:
                        r = b + i if retag_max[b + i, c] > retag_max[a + i, c] else a + i
                    if r < 0:
                        ok = False
                        break
                    rows[i] = r
                if not ok:
                    mark_missing(j, g, tab_cnt, slot_rows, slot_f)
                    continue
                for i in range(n):
                    r = rows[i]
                    c = key_lab[j, i]
                    slot_rows[j, g, i] = r
                    slot_f[j, g, i, F_OWN] = retag_max[r, c]
                    slot_f[j, g, i, F_ENERGY] = energy_db[r]
                    slot_f[j, g, i, F_SIL] = sil_min[r]
                    best = 0
                    for c2 in range(1, C):
                        if retag_max[r, c2] > retag_max[r, best]:
                            best = c2
                    slot_f[j, g, i, F_ARGMAX] = 1.0 if best == c else 0.0
                score_subsets(j, g, rows, n, key_lab, rl, sm, stem_snr, snr_off, none, iw, fw,
                              est_rows, est_lab, tab_sum, tab_cnt)


#: ``key_code(labels, n, C)``: the rule of `casdri.cache.key_code_sorted`, jitted
key_code = njit_cached(**_JIT)(key_code_sorted)


@njit_cached(**_JIT)
def find_key(key_codes, lo, hi, code):  # pragma: no cover - jitted
    """Index of ``code`` in the sorted ``key_codes[lo:hi]``, or -2."""
    end = hi
    while lo < hi:
        mid = (lo + hi) >> 1
        if key_codes[mid] < code:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < end and key_codes[lo] == code else -2
