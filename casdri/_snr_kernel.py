"""Numba kernel for the pairwise SNR energies (private; use `casdri.metric.snr_db`).

Conventions: inputs are C-contiguous ``(n_rows, n_samples)`` float32 or float64 arrays;
outputs are float64 energies (sums of squares).

Precision: every sum is accumulated in float64. The sums are compiled with the fast-math flags
``reassoc`` and ``contract`` only, so that LLVM may vectorise them (SIMD lanes summed at the
end, fused multiply-add);
this changes a float64 sum by about 1e-14 relative (about 1e-13 dB), eight orders of magnitude
under the 1e-4 dB at which casdri is tested against the float32 official metric, and it is
deterministic for a given machine. No other fast-math flag is used (no ``nnan``/``ninf``:
NaN and Inf propagate). The replay kernels (`casdri._kernels`) use no fast-math at all.
"""
from __future__ import annotations

import numpy as np

from ._jit_cache import njit_cached

_SUM_JIT = dict(fastmath={"reassoc", "contract"}, error_model="numpy", nogil=True)


@njit_cached(**_SUM_JIT)
def _sum_sq_diff(r, e):  # pragma: no cover - jitted
    s = 0.0
    for t in range(r.shape[0]):
        d = np.float64(r[t]) - np.float64(e[t])
        s += d * d
    return s


@njit_cached(**_SUM_JIT)
def _sum_sq(r):  # pragma: no cover - jitted
    s = 0.0
    for t in range(r.shape[0]):
        x = np.float64(r[t])
        s += x * x
    return s


@njit_cached(**_SUM_JIT)
def _pair_energies(est, ref, noise, ref_energy):  # pragma: no cover - jitted
    """Fill ``noise[i, j] = Σ_t (ref[j,t] − est[i,t])²`` and ``ref_energy[j] = Σ_t ref[j,t]²``."""
    for j in range(ref.shape[0]):
        ref_energy[j] = _sum_sq(ref[j])
        for i in range(est.shape[0]):
            noise[i, j] = _sum_sq_diff(ref[j], est[i])


def pair_energies(est: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(noise [n_est, n_ref], ref_energy [n_ref])`` float64 energies.

    Args:
        est: ``(n_est, n_samples)`` float32 or float64, C-contiguous.
        ref: ``(n_ref, n_samples)`` same dtype, C-contiguous.
    """
    noise = np.zeros((est.shape[0], ref.shape[0]), dtype=np.float64)
    ref_energy = np.zeros(ref.shape[0], dtype=np.float64)
    if ref.shape[0] and ref.shape[1]:
        _pair_energies(est, ref, noise, ref_energy)
    return noise, ref_energy


@njit_cached(**_SUM_JIT)
def _indexed_energies(est, ref, est_idx, ref_idx, noise):  # pragma: no cover - jitted
    """``noise[k] = Σ_t (ref[ref_idx[k], t] − est[est_idx[k], t])²`` for a list of pairs."""
    for k in range(est_idx.shape[0]):
        noise[k] = _sum_sq_diff(ref[ref_idx[k]], est[est_idx[k]])


@njit_cached(**_SUM_JIT)
def _row_energies(x, rows, out):  # pragma: no cover - jitted
    """``out[k] = Σ_t x[rows[k], t]²``."""
    for k in range(rows.shape[0]):
        out[k] = _sum_sq(x[rows[k]])


def indexed_energies(est: np.ndarray, ref: np.ndarray, est_idx: np.ndarray,
                     ref_idx: np.ndarray) -> np.ndarray:
    """Noise energies of the listed ``(est_idx[k], ref_idx[k])`` pairs, float64 ``(n_pairs,)``.

    Rows are read in place (no copies): the arrays must be C-contiguous and of one dtype.
    """
    out = np.zeros(len(est_idx), dtype=np.float64)
    if len(est_idx) and est.shape[1]:
        _indexed_energies(est, ref, np.asarray(est_idx, np.int64), np.asarray(ref_idx, np.int64),
                          out)
    return out


def row_energies(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``Σ_t x[row, t]²`` of the listed rows, float64 ``(n_rows,)``; NaN/Inf propagate."""
    out = np.zeros(len(rows), dtype=np.float64)
    if len(rows) and x.shape[1]:
        _row_energies(x, np.asarray(rows, np.int64), out)
    return out
