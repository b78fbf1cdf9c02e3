"""Gaussian-mechanism calibration against independent computations (closed forms, scipy integrals)."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.stats import chi2, norm

from miniunlearn.core.errors import InputError
from miniunlearn.privacy import (
    ReleaseRequest,
    analytic_sigma,
    calibrate,
    classic_sigma,
    gaussian_noise,
    privacy_loss_delta,
)


def hockey_stick(sigma, c, epsilon):
    """delta(epsilon) of N(0, sigma^2) against N(c, sigma^2) by numerical integration of
    max(0, p(x) - e^epsilon q(x)) -- the definition, not Balle & Wang's closed form."""
    def excess(x):
        return max(0.0, norm.pdf(x, 0.0, sigma) - math.exp(epsilon) * norm.pdf(x, c, sigma))

    # the integrand is positive exactly where x < c/2 - sigma^2 epsilon / c
    cut = c / 2 - sigma ** 2 * epsilon / c
    value, _ = integrate.quad(excess, -np.inf, cut, epsabs=1e-14, epsrel=1e-10, limit=500)
    return value


@pytest.mark.parametrize("sigma, c, epsilon", [(1.0, 1.0, 0.5), (3.0, 1.0, 1.0), (0.7, 2.0, 5.0), (10.0, 0.5, 0.1)])
def test_privacy_loss_delta_is_the_hockey_stick_divergence(sigma, c, epsilon):
    assert privacy_loss_delta(sigma, c, epsilon) == pytest.approx(hockey_stick(sigma, c, epsilon), rel=1e-6, abs=1e-15)


def test_classic_sigma_is_the_textbook_formula():
    # Dwork & Roth, Theorem A.1: sigma = c sqrt(2 ln(1.25 / delta)) / epsilon
    assert classic_sigma(2.0, 0.5, 1e-5) == pytest.approx(2.0 * math.sqrt(2 * math.log(125000.0)) / 0.5, rel=1e-15)
    assert classic_sigma(0.0, 0.5, 1e-5) == 0.0
    with pytest.raises(InputError, match="0 < epsilon < 1"):
        classic_sigma(1.0, 1.0, 1e-5)


@pytest.mark.parametrize("epsilon", [0.1, 0.5, 0.9, 1.0, 2.0, 5.0, 10.0])
@pytest.mark.parametrize("delta", [1e-5, 1e-3])
@pytest.mark.parametrize("c", [1e-3, 1.0, 7.0])
def test_analytic_sigma_is_the_smallest_sigma_meeting_the_condition(epsilon, delta, c):
    sigma = analytic_sigma(c, epsilon, delta)

    def loss(s):  # Balle & Wang, Theorem 8, straight from scipy's normal CDF
        return norm.cdf(c / (2 * s) - epsilon * s / c) - math.exp(epsilon) * norm.cdf(-c / (2 * s) - epsilon * s / c)

    assert loss(sigma) <= delta * (1 + 1e-9)
    assert loss(sigma * (1 - 1e-6)) > delta      # and no visibly smaller sigma would do
    if epsilon < 1:
        assert sigma <= classic_sigma(c, epsilon, delta)


def test_calibrate_picks_the_mechanism_and_refuses_invalid_combinations():
    assert calibrate(1.0, 0.5, 1e-5) == (classic_sigma(1.0, 0.5, 1e-5), "gaussian-classic")
    assert calibrate(1.0, 1.0, 1e-5) == (analytic_sigma(1.0, 1.0, 1e-5), "gaussian-analytic")
    assert calibrate(1.0, 0.5, 1e-5, "analytic")[1] == "gaussian-analytic"
    with pytest.raises(InputError, match="0 < epsilon < 1"):
        calibrate(1.0, 2.0, 1e-5, "classic")
    with pytest.raises(InputError, match="mechanism"):
        calibrate(1.0, 0.5, 1e-5, "laplace")


def test_noise_is_fresh_and_has_the_asked_scale():
    sigma, n = 0.37, 20000
    first, second = gaussian_noise(n, sigma), gaussian_noise(n, sigma)
    assert first.dtype == torch.float64 and first.shape == (n,)
    assert not torch.equal(first, second)                     # seeded by the OS, not by a stored seed
    statistic = float((first ** 2).sum()) / sigma ** 2        # chi-square with n degrees of freedom
    assert chi2.ppf(1e-4, n) < statistic < chi2.ppf(1 - 1e-4, n)
    assert torch.count_nonzero(gaussian_noise(5, 0.0)) == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"epsilon": 0, "delta": 1e-5}, "epsilon"), ({"epsilon": -1, "delta": 1e-5}, "epsilon"),
    ({"epsilon": 1, "delta": 1}, "delta"), ({"epsilon": 1, "delta": 0}, "delta"),
    ({"epsilon": float("nan"), "delta": 1e-5}, "epsilon"), ({"epsilon": None, "delta": 1e-5}, "epsilon"),
    ({"epsilon": 1, "delta": 1e-5, "sensitivity": -1}, "sensitivity"),
    ({"epsilon": 1, "delta": 1e-5, "mechanism": "laplace"}, "mechanism"),
])
def test_release_request_refuses_bad_values(kwargs, message):
    with pytest.raises(InputError, match=message):
        ReleaseRequest(**kwargs)
