"""A vectorised Parzen estimator for Optuna's TPE sampler (`search.engines.BatchTPESampler`).

Optuna's TPE models the good and the bad trials each as a mixture of product kernels: a
truncated normal per float parameter, a smoothed one-hot per categorical one. Optuna 4-5
evaluates the truncated normal's ``log Phi`` one element at a time in Python
(``np.frompyfunc``), which made it most of a ``--stage gates`` search. `VectorParzenEstimator`
keeps Optuna's fitted mixture (the same kernels, weights and bandwidths) and evaluates it with
SciPy's vectorised special functions (``log_ndtr``, ``ndtr``, ``ndtri_exp``), drawing its random
numbers in Optuna's order; the per-kernel normalisers are computed once per estimator, not once
per call.

Conventions:
    * Covered: mixtures of plain float kernels (``FloatDistribution`` without ``log`` or
      ``step``) and categorical ones, the only kinds `search.engines.distribution` makes. Any
      other kind falls back to Optuna's own code, unchanged.
    * Equal to Optuna's estimator to rounding: ``log_pdf`` within 1e-9 (natural log) and
      ``sample`` (same random state) within about 1e-12 of the parameter's range
      (`tests/test_search_parzen.py`; `tests/test_search_engines.py` compares whole studies),
      so the sampler follows TPE's rule; its trials may differ from the plain sampler's in the
      last bits.
    * It relies on Optuna's private estimator and on its order of random draws (categorical
      parameters first, then one array for the floats), verified for Optuna 4.5 to 5.x
      (`optuna_supported`); `search.engines.BatchTPESampler` uses Optuna's own estimator on
      any other version, or when these private modules cannot be imported.

Source of the kernel model: Optuna ``optuna/samplers/_tpe`` (``_ParzenEstimator``,
``_MixtureOfProductDistribution``), and Watanabe, "Tree-structured Parzen estimator:
understanding its algorithm components" (2023).
"""
from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator
from optuna.samplers._tpe.probability_distributions import (
    _BatchedCategoricalDistributions,
    _BatchedTruncNormDistributions,
)
from scipy.special import log_ndtr, ndtr, ndtri_exp

__all__ = ["VectorParzenEstimator", "log_gauss_mass", "truncnorm_ppf", "optuna_supported",
           "OPTUNA_VERSIONS"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)

#: Optuna versions ``[from, to)`` whose estimator and order of draws this module follows
OPTUNA_VERSIONS = ((4, 5), (6, 0))


def optuna_supported(version: str | None = None) -> bool:
    """Whether the installed Optuna (or ``version``) is in `OPTUNA_VERSIONS`."""
    parts = (version or optuna.__version__).split(".")[:2]
    try:
        have = tuple(int("".join(ch for ch in p if ch.isdigit()) or 0) for p in parts)
    except ValueError:
        return False
    return OPTUNA_VERSIONS[0] <= have < OPTUNA_VERSIONS[1]


def log_gauss_mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``log(Phi(b) - Phi(a))``, the log probability of ``[a, b]`` under the standard normal.

    Args:
        a, b: float64 arrays of the same shape, ``a <= b`` (standardised bounds).

    Returns:
        float64 array of that shape. Stable in both tails: an interval left of 0 is computed
        from ``log_ndtr`` of its ends, one right of 0 by symmetry, one around 0 as
        ``log1p(-Phi(a) - Phi(-b))`` (the method of SciPy's ``truncnorm``).
    """
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    out = np.empty(a.shape)
    left, right = b <= 0, a > 0
    centre = ~(left | right)

    def tail(lo, hi):  # lo <= hi <= 0
        lp, lq = log_ndtr(hi), log_ndtr(lo)
        return lp + np.log1p(-np.exp(lq - lp))

    out[left] = tail(a[left], b[left])
    out[right] = tail(-b[right], -a[right])
    out[centre] = np.log1p(-ndtr(a[centre]) - ndtr(-b[centre]))
    return out


def truncnorm_ppf(q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Inverse CDF of the standard normal truncated to ``[a, b]``.

    Args:
        q: quantiles in [0, 1]; a, b: standardised bounds, ``a < b``; float64 arrays of one
            shape.

    Returns:
        float64 array ``x`` in ``[a, b]`` with ``(Phi(x) - Phi(a)) / (Phi(b) - Phi(a)) = q``,
        solved in log space on the left tail (``a < 0``) and by symmetry on the right.
    """
    q, a, b = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (q, a, b)))
    mass = log_gauss_mass(a, b)
    out = np.empty(q.shape)
    left = a < 0
    right = ~left
    with np.errstate(divide="ignore"):  # q = 0 or 1: log 0 = -inf, the bound itself
        out[left] = ndtri_exp(np.logaddexp(log_ndtr(a[left]), np.log(q[left]) + mass[left]))
        out[right] = -ndtri_exp(np.logaddexp(log_ndtr(-b[right]),
                                             np.log1p(-q[right]) + mass[right]))
    return np.clip(out, a, b)


class VectorParzenEstimator(_ParzenEstimator):
    """Optuna's ``_ParzenEstimator`` with vectorised ``sample`` and ``log_pdf`` (see the module).

    Built by Optuna's ``TPESampler`` through its ``_parzen_estimator_cls`` hook, with the same
    arguments; ``sample(rng, size)`` returns ``{param: (size,) float64}``, ``log_pdf`` takes such
    a dict and returns ``(size,)`` float64 log densities.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        mix = self._mixture_distribution
        kinds = [type(d) for d in mix.distributions]
        self._vector = all(k in (_BatchedTruncNormDistributions,
                                 _BatchedCategoricalDistributions) for k in kinds)
        if not self._vector:
            return
        self._cat = [i for i, k in enumerate(kinds) if k is _BatchedCategoricalDistributions]
        self._num = [i for i, k in enumerate(kinds) if k is _BatchedTruncNormDistributions]
        dists = mix.distributions
        k = len(mix.weights)
        self._mu = np.array([dists[i].mu for i in self._num], np.float64).reshape(-1, k)
        self._sigma = np.array([dists[i].sigma for i in self._num], np.float64).reshape(-1, k)
        self._low = np.array([dists[i].low for i in self._num], np.float64)[:, None]
        self._high = np.array([dists[i].high for i in self._num], np.float64)[:, None]
        a, b = (self._low - self._mu) / self._sigma, (self._high - self._mu) / self._sigma
        with np.errstate(divide="ignore"):  # a zero weight (Optuna's endpoints) is log 0
            self._log_norm = (np.log(mix.weights) - _LOG_SQRT_2PI * len(self._num)
                              - (log_gauss_mass(a, b) + np.log(self._sigma)).sum(axis=0))
            self._log_cat = [np.log(dists[i].weights) for i in self._cat]

    def sample(self, rng: np.random.RandomState, size: int) -> dict[str, np.ndarray]:
        if not self._vector:
            return super().sample(rng, size)
        mix = self._mixture_distribution
        active = rng.choice(len(mix.weights), p=mix.weights, size=size)
        out = np.empty((size, len(mix.distributions)))
        for i in self._cat:  # Optuna's order of draws: the categorical ones first, in order
            cum = np.cumsum(mix.distributions[i].weights[active, :], axis=-1)
            cum[:, -1] = 1.0
            out[:, i] = np.sum(cum < rng.rand(size)[:, None], axis=-1)
        if self._num:
            mu, sigma = self._mu[:, active], self._sigma[:, active]
            q = rng.uniform(low=0.0, high=1.0, size=mu.shape)
            x = truncnorm_ppf(q, (self._low - mu) / sigma, (self._high - mu) / sigma)
            out[:, self._num] = (x * sigma + mu).T
        return self._untransform(out)

    def log_pdf(self, samples_dict: dict[str, np.ndarray]) -> np.ndarray:
        if not self._vector:
            return super().log_pdf(samples_dict)
        x = self._transform(samples_dict)  # (n, params)
        lp = np.broadcast_to(self._log_norm, (len(x), self._log_norm.size)).copy()
        for i, log_w in zip(self._cat, self._log_cat):
            lp += log_w[:, x[:, i].astype(np.int64)].T
        if self._num:
            xn = x[:, self._num].T[:, :, None]  # (params, n, 1)
            z = (xn - self._mu[:, None, :]) / self._sigma[:, None, :]
            lp -= 0.5 * np.einsum("pnk,pnk->nk", z, z)
            outside = ((xn < self._low[:, :, None]) | (xn > self._high[:, :, None])).any(axis=0)
            lp[outside[:, 0]] = -np.inf
        top = lp.max(axis=1)
        top[np.isneginf(top)] = 0.0
        with np.errstate(divide="ignore"):
            return np.log(np.exp(lp - top[:, None]).sum(axis=1)) + top
