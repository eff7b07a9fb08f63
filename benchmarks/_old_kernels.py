"""FROZEN COPY of `casdri._kernels` as of main 05b1ac1 (before the policy plug-ins), kept only
so that `benchmarks/bench_replay.py` can measure old against new in one run. Not used by casdri.

Jitted replay: the policy decisions and the parallel drivers (the CAPI-SDRi of a clip and
the per-key tables live in `casdri._kernels_capi`, re-exported here). No I/O, no pandas, no
validation (see `casdri.replay` for the facade and `casdri.cache` for the arrays).

Conventions:
    * Flat arrays with offsets, as built by `casdri.cache.load_cache`: soundscape ``s`` owns
      references ``ref_off[s]:ref_off[s+1]``; stem row ``r`` owns SNRs
      ``stem_snr[snr_off[r] : snr_off[r] + n_ref(s)]`` (dB, one per reference).
    * A *key* ``j`` is one cached query of one soundscape (``key_sc[j]``), its ``key_len[j]``
      slots hold classes ``key_lab[j, :key_len[j]]`` (sorted ascending).
    * A *combo* ``g = sel * n_stages + stage`` names where a key's stems come from: ``sel`` 0 =
      separator 0, 1 = separator 1, 2 = per slot the stem with the higher retag probability of
      its query class (tie: separator 0). ``G = 3 * n_stages`` combos.
    * A *keep mask* ``m`` has bit ``i`` set when slot ``i`` keeps its label (else silence).
    * Tables per (key, combo, mask): ``tab_sum`` (Σ SDRi, dB) and ``tab_cnt`` (entries; 0 =
      the clip scores None; ``tab_cnt[j, g, 0] = -1`` marks a combo the cache cannot serve);
      per (key, mask) ``tab_lab`` = (tp, fp, fn).
    * Decision result ``(j, g, m, code)``: ``j = -1`` is the empty query (no stems), ``code`` 0
      ok, 1 = query not in the cache (``j`` = -2), 2 = separator/stage combo missing.
    * Paper symbols: E/R = stem/reference rows of one class, k = min(|E|, |R|).

fastmath stays off: the replay must equal `casdri.metric.capi_sdri_from_snr` (same additions
in the same order), and the parallel drivers must equal the serial ones bit for bit.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from casdri._kernels_capi import _JIT, _PJIT, F_ARGMAX, F_ENERGY, F_OWN, F_SIL

__all__ = ["replay_par", "replay_ser", "POLICY_BASELINE", "POLICY_REFINE", "POLICY_ORACLE",
           "BLOCK"]

#: dims vector layout (int64) passed to the drivers
D_C, D_K, D_NST, D_MAXS, D_M, D_MAXI, D_NSEP = range(7)
POLICY_BASELINE, POLICY_REFINE, POLICY_ORACLE = 0, 1, 2


# ----------------------------------------------------------------------------- decisions
# Encoded layouts (columns of a setting X[n]), fixed by the policy modules' field order
# (tests/test_policies.py checks it):
#   baseline: [tagger, separator, stage]
#   oracle:   [select_separator, stage]
#   refine:   [w, solo_keep_1ch(C), solo_keep_4ch(C), verify_thr(C), drop_thr(C),
#              energy_gate_db(C), prob_gate(C), silence_thr(C), verify_mode, select_separator,
#              stage]
# Per-soundscape policy inputs pi (S, Wi) int64 and pf (S, Wf) float64:
#   baseline pi = key per tagger; oracle pi = [oracle key];
#   refine pi = [n_inst, inst_cls(MAXI), subset key(2^MAXI)], pf = [p_4ch(MAXI), p_1ch(MAXI)].
#
# Speed: each policy's decision is written in the body of its own loop over (soundscape,
# setting) and reads only arrays bound once per block. A decision in a separate function
# would make Numba incref/decref every array argument at every call (atomics that also
# contend between threads): 5-10x slower.


# ----------------------------------------------------------------------------- drivers

#: settings per block at most: the block's rows of X stay in L2 while one soundscape's tables
#: sit in L1; a large block amortises filling L1 with each soundscape's tables
BLOCK = 256


@numba.njit(**_JIT)
def _block(pid, X, n0, n1, sidx, pi, pf, tab, dims, val, lab, want_lab, tot, err, dec,
           want_dec):  # pragma: no cover - jitted
    """Settings ``n0:n1`` of policy ``pid`` on the soundscapes ``sidx`` (soundscape outer,
    setting inner): decide ``(j, g, m, code)``, then score it from the tables."""
    key_len, key_lab, slot_f, tab_sum, tab_cnt, tab_lab, n_ref = (tab[1], tab[2], tab[3],
                                                                 tab[4], tab[5], tab[6], tab[7])
    C = dims[D_C]
    K = dims[D_K]
    n_st = dims[D_NST]
    maxi = dims[D_MAXI]
    conf = np.empty(max(maxi, 1), np.float64)
    sel = np.empty(max(maxi, 1), np.int64)
    for n in range(n0, n1):
        for k in range(4):
            tot[n, k] = 0
        err[n, 0] = -1
    for p in range(sidx.shape[0]):
        s = sidx[p]
        n_inst = pi[s, 0]
        for n in range(n0, n1):
            j = -1
            g = 0
            m = 0
            code = 0
            if pid != POLICY_REFINE:  # baseline / oracle: one key, every slot kept
                j = pi[s, int(X[n, 0]) if pid == POLICY_BASELINE else 0]
                off = 1 if pid == POLICY_BASELINE else 0
                if j < -1:
                    code = 1
                elif j >= 0:
                    g = int(X[n, off]) * n_st + int(X[n, off + 1])
                    if tab_cnt[j, g, 0] < 0:
                        code = 2
                    else:
                        m = (1 << key_len[j]) - 1
            while pid == POLICY_REFINE:  # one pass; `break` = decision made
                w = X[n, 0]
                for i in range(n_inst):  # (a) fusion
                    c = pi[s, 1 + i]
                    a = pf[s, i]
                    b = pf[s, maxi + i]
                    if a == a and b == b:
                        conf[i] = w * a + (1.0 - w) * b
                    elif a == a:
                        conf[i] = a if a >= X[n, 1 + C + c] else np.nan
                    else:
                        conf[i] = b if b >= X[n, 1 + c] else np.nan
                bits = 0
                k = 0
                for _ in range(K):  # K most confident, ties to the lower instance
                    best = -1
                    bc = 0.0
                    for i in range(n_inst):
                        ci = conf[i]
                        if (bits >> i) & 1 or ci != ci:
                            continue
                        if best < 0 or ci > bc:
                            best = i
                            bc = ci
                    if best < 0:
                        break
                    bits |= 1 << best
                    sel[k] = best
                    k += 1
                if k == 0:
                    break
                for a2 in range(1, k):  # slot order: class asc, confidence desc, instance asc
                    v = sel[a2]
                    q = a2 - 1
                    while q >= 0:
                        u = sel[q]
                        cu = pi[s, 1 + u]
                        cv = pi[s, 1 + v]
                        if cu > cv or (cu == cv and (conf[u] < conf[v] or
                                                     (conf[u] == conf[v] and u > v))):
                            sel[q + 1] = u
                            q -= 1
                        else:
                            break
                    sel[q + 1] = v
                j = pi[s, 1 + maxi + bits]  # (b) separate
                if j < 0:
                    code = 1
                    m = bits
                    break
                g = int(X[n, 2 + 7 * C]) * n_st + int(X[n, 3 + 7 * C])
                if tab_cnt[j, g, 0] < 0:
                    code = 2
                    break
                argmax_mode = X[n, 1 + 7 * C] > 0.5
                dropped = 0
                for i in range(k):  # (c) verify the (f)+(e) stems, drop unsure unconfirmed
                    c = key_lab[j, i]  # (branch-free: thresholds vary from setting to setting)
                    ok = (argmax_mode & (slot_f[j, g, i, F_ARGMAX] > 0.5)) | \
                        ((not argmax_mode) & (slot_f[j, g, i, F_OWN] >= X[n, 1 + 2 * C + c]))
                    dropped |= np.int64((not ok) & (conf[sel[i]] < X[n, 1 + 3 * C + c])) << i
                if dropped:
                    bits = 0
                    k2 = 0
                    for i in range(k):
                        if not (dropped >> i) & 1:
                            sel[k2] = sel[i]
                            bits |= 1 << sel[i]
                            k2 += 1
                    k = k2
                    if k == 0:
                        j = -1
                        g = 0
                        break
                    j = pi[s, 1 + maxi + bits]
                    if j < 0:
                        code = 1
                        m = bits
                        break
                    if tab_cnt[j, g, 0] < 0:
                        code = 2
                        break
                for i in range(k):  # (d) gates (no NaN here: >= is "not <")
                    c = key_lab[j, i]
                    keep = (slot_f[j, g, i, F_ENERGY] >= X[n, 1 + 4 * C + c]) & \
                        (conf[sel[i]] >= X[n, 1 + 5 * C + c]) & \
                        (slot_f[j, g, i, F_SIL] < X[n, 1 + 6 * C + c])
                    m |= np.int64(keep) << i
                break
            # ---- score (j, g, m, code) from the tables
            if want_dec:
                dec[p, 0] = j
                dec[p, 1] = g
                dec[p, 2] = m
                dec[p, 3] = code
            if code != 0:
                val[n, p] = np.nan
                if err[n, 0] < 0:
                    err[n, 0] = p
                    err[n, 1] = code
                    err[n, 2] = j
                continue
            if j < 0:
                v = 0.0 if n_ref[s] > 0 else np.nan
                tp = 0
                fp = 0
                fn = n_ref[s]
            else:
                cnt = tab_cnt[j, g, m]
                v = tab_sum[j, g, m] / cnt if cnt > 0 else np.nan
                tp = tab_lab[j, m, 0]
                fp = tab_lab[j, m, 1]
                fn = tab_lab[j, m, 2]
            val[n, p] = v
            if fp == 0 and fn == 0:
                tot[n, 0] += 1
            tot[n, 1] += tp
            tot[n, 2] += fp
            tot[n, 3] += fn
            if want_lab:
                lab[n, p, 0] = tp
                lab[n, p, 1] = fp
                lab[n, p, 2] = fn


@numba.njit(**_PJIT)
def replay_par(pid, X, sidx, pi, pf, tab, dims, val, lab, want_lab, tot, err,
               block):  # pragma: no cover - jitted
    """Settings ``X (n, P)`` on soundscapes ``sidx``, parallel over blocks of settings.

    ``block`` settings per task (`BLOCK` at most; smaller keeps every thread busy).
    Out: ``val (n, len(sidx))`` clip values (NaN = None), ``lab (n, len(sidx), 3)`` tp/fp/fn
    when ``want_lab`` (else ignored), ``tot (n, 4)`` (n_acc, tp, fp, fn), ``err (n, 3)``
    (first failing position or -1, code, key). Every cell is computed by the same code as in
    `replay_ser`, so both give identical results.
    """
    dec = np.zeros((1, 4), np.int64)
    nb = (X.shape[0] + block - 1) // block
    for b in prange(nb):
        _block(pid, X, b * block, min((b + 1) * block, X.shape[0]), sidx, pi, pf, tab, dims,
               val, lab, want_lab, tot, err, dec, False)


@numba.njit(**_JIT)
def replay_ser(pid, X, sidx, pi, pf, tab, dims, val, lab, want_lab, tot, err,
               block):  # pragma: no cover - jitted
    """`replay_par` on one thread (same per-cell code)."""
    dec = np.zeros((1, 4), np.int64)
    nb = (X.shape[0] + block - 1) // block
    for b in range(nb):
        _block(pid, X, b * block, min((b + 1) * block, X.shape[0]), sidx, pi, pf, tab, dims,
               val, lab, want_lab, tot, err, dec, False)
