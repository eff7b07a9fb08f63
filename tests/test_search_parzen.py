"""`search.parzen`: the vectorised Parzen estimator equals Optuna's to rounding, and its
truncated-normal helpers equal SciPy's ``truncnorm``."""
from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator, _ParzenEstimatorParameters
from optuna.samplers._tpe.sampler import default_weights
from scipy.stats import truncnorm

from search.parzen import VectorParzenEstimator, log_gauss_mass, truncnorm_ppf

SPACE = {"a": optuna.distributions.FloatDistribution(-1.0, 2.0),
         "c": optuna.distributions.CategoricalDistribution([0.0, 1.0, 2.0]),
         "b": optuna.distributions.FloatDistribution(0.0, 100.0),
         "d": optuna.distributions.CategoricalDistribution(["x", "y"])}


def _observations(rng, n):
    return {"a": rng.uniform(-1, 2, n), "c": rng.integers(0, 3, n).astype(float),
            "b": np.r_[rng.uniform(0, 100, max(0, n - 1)), [100.0] * min(n, 1)],
            "d": rng.integers(0, 2, n).astype(float)}


@pytest.mark.parametrize("n", [0, 1, 3, 40])
@pytest.mark.parametrize("magic_clip", [True, False])
@pytest.mark.parametrize("endpoints", [True, False])
def test_sample_and_log_pdf_equal_optunas(n, magic_clip, endpoints):
    obs = _observations(np.random.default_rng(n), n)
    params = _ParzenEstimatorParameters(1.0, magic_clip, endpoints, default_weights, True)
    ours, theirs = VectorParzenEstimator(obs, SPACE, params), _ParzenEstimator(obs, SPACE, params)
    assert ours._vector
    got = ours.sample(np.random.RandomState(7), 300)
    want = theirs.sample(np.random.RandomState(7), 300)  # the same random numbers, in order
    for k in SPACE:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-9)
    probe = {**want, "a": np.r_[want["a"][:-2], -1.5, 2.0]}  # one point outside [low, high]
    np.testing.assert_allclose(ours.log_pdf(probe), theirs.log_pdf(probe), rtol=1e-12,
                               atol=1e-9)
    assert np.isneginf(ours.log_pdf(probe)[-2])


def test_other_kernels_fall_back_to_optunas_code_unchanged():
    space = {"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True),
             "k": optuna.distributions.IntDistribution(1, 9)}
    obs = {"lr": np.array([1e-3, 0.1]), "k": np.array([2.0, 7.0])}
    params = _ParzenEstimatorParameters(1.0, True, True, default_weights, True)
    ours, theirs = VectorParzenEstimator(obs, space, params), _ParzenEstimator(obs, space, params)
    assert not ours._vector
    got, want = ours.sample(np.random.RandomState(1), 50), theirs.sample(
        np.random.RandomState(1), 50)
    for k in space:
        np.testing.assert_array_equal(got[k], want[k])
    np.testing.assert_array_equal(ours.log_pdf(want), theirs.log_pdf(want))


def test_truncated_normal_helpers_equal_scipy_truncnorm():
    edges = np.r_[-45.0, -12.0, -3.0, -0.5, 0.0, 0.4, 2.5, 9.0, 40.0]
    a, b = (v.ravel() for v in np.meshgrid(edges, edges))
    keep = a < b
    a, b = a[keep], b[keep]
    mass = log_gauss_mass(a, b)
    # the density at x = a is exp(-a^2 / 2) / sqrt(2 pi) / mass
    np.testing.assert_allclose(mass, -(truncnorm.logpdf(a, a, b) + 0.5 * a * a
                                       + 0.5 * np.log(2 * np.pi)), rtol=1e-9, atol=1e-12)
    q = np.random.default_rng(0).uniform(size=a.size)
    x = truncnorm_ppf(q, a, b)
    assert ((x >= a) & (x <= b)).all()
    moderate = (a > -8) & (b < 8)  # SciPy's own ppf loses digits far in the tails
    np.testing.assert_allclose(x[moderate], truncnorm.ppf(q[moderate], a[moderate],
                                                          b[moderate]), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(truncnorm.cdf(x, a, b), q, rtol=1e-7, atol=1e-12)
    np.testing.assert_array_equal(truncnorm_ppf(np.array([0.0, 1.0]), -1.0, 2.0), [-1.0, 2.0])
