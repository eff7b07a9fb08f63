"""Mixed-stage combos: per-key tables whose slots come from different refinement stages (for
policies that choose the stage per class, ``staged``). Private; built by `casdri.replay.prepare`
only for a policy that declares ``MIXED_STAGES = True`` on a cache with more than one stage.

Conventions (extending `casdri._kernels`):
    * The first ``G0 = 3 * n_stages`` combos are the uniform ones of `casdri._kernels_capi.
      build_tables` (``g = sel * n_stages + stage``), unchanged. Then, with ``A = n_stages **
      MAXS`` stage assignments, combo ``G0 + sel * A + a`` takes slot ``i``'s stem from the
      uniform combo ``sel * n_stages + st_i``, ``st_i = (a // n_stages**i) % n_stages``
      (``a = Σ_i st_i · n_stages^i``). With one separator only ``sel = 0`` is built
      (selections 1 and 2 serve nothing more there: 2 means 0, 1 is refused), and a policy
      passes ``sel = 0``. An assignment with a nonzero digit beyond the key's slots, or
      whose stems the cache lacks, is marked missing (``tab_cnt[j, g, 0] = -1``).
    * Slot features, Σ SDRi and entries are those of the chosen stems, scored by the one
      `casdri._kernels_capi.clip_capi` (same additions in the same order as the metric).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._jit_cache import njit_cached
from ._kernels_capi import _PJIT, mark_missing, score_subsets

__all__ = ["n_mixed", "build_mixed_tables"]


def n_mixed(n_stages: int, maxs: int, n_separators: int) -> int:
    """Mixed combos appended after the uniform ones (0 for a one-stage cache)."""
    return (3 if n_separators > 1 else 1) * n_stages ** maxs if n_stages > 1 else 0


@njit_cached(**_PJIT)
def build_mixed_tables(key_sc, key_len, key_lab, stem_snr, snr_off, ref_off, ref_lab, snr_mix,
                       n_st, slot_rows, slot_f, tab_sum, tab_cnt):  # pragma: no cover - jitted
    """Fill the mixed combos of the tables (module conventions); the uniform combos must be
    filled already (`casdri._kernels_capi.build_tables` on the same arrays)."""
    maxs = key_lab.shape[1]
    A = n_st ** maxs
    g0 = 3 * n_st
    n_sel = (tab_cnt.shape[1] - g0) // A
    for j in prange(key_sc.shape[0]):
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
        for sel in range(n_sel):
            for a in range(A):
                g = g0 + sel * A + a
                ok = (a // n_st ** n) == 0
                if ok:
                    for i in range(n):
                        gu = sel * n_st + (a // n_st ** i) % n_st
                        if tab_cnt[j, gu, 0] < 0:
                            ok = False
                            break
                        rows[i] = slot_rows[j, gu, i]
                        for f in range(slot_f.shape[3]):
                            slot_f[j, g, i, f] = slot_f[j, gu, i, f]
                if not ok:
                    mark_missing(j, g, tab_cnt, slot_rows, slot_f)
                    continue
                for i in range(n):
                    slot_rows[j, g, i] = rows[i]
                score_subsets(j, g, rows, n, key_lab, rl, sm, stem_snr, snr_off, none, iw, fw,
                              est_rows, est_lab, tab_sum, tab_cnt)
