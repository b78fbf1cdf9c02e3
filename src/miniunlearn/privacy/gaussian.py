"""The Gaussian mechanism on a certified distance, and its calibration.

Certified unlearning (Guo, Goldstein, Hannun & van der Maaten, "Certified Data Removal from
Machine Learning Models", ICML 2020; Sekhari, Acharya, Kamath & Suresh, "Remember What You Want
to Forget", NeurIPS 2021): a release R is (epsilon, delta)-certified against retraining when for
every measurable set S of parameter vectors

    P(R(w_U) in S) <= e^epsilon P(R(w_R) in S) + delta   and   P(R(w_R) in S) <= e^epsilon P(R(w_U) in S) + delta,

w_U the unlearned and w_R the retrained model. With R(w) = w + N(0, sigma^2 I) and a certified
distance ||w_U - w_R|| <= c, the two releases are Gaussians of equal covariance whose means are
at most c apart -- exactly the Gaussian mechanism of L2-sensitivity c, so its calibration gives
the guarantee:

* classic (Dwork & Roth 2014, Theorem A.1), valid for 0 < epsilon < 1:
  ``sigma = c sqrt(2 ln(1.25 / delta)) / epsilon``;
* analytic (Balle & Wang, "Improving the Gaussian Mechanism for Differential Privacy: Analytical
  Calibration and Optimal Denoising", ICML 2018, Theorem 8 and Algorithm 1), valid for every
  epsilon > 0 and never larger than the classic sigma: the smallest sigma with

      delta(sigma) = Phi(c / (2 sigma) - epsilon sigma / c) - e^epsilon Phi(-c / (2 sigma) - epsilon sigma / c) <= delta,

  found by bisection (delta(sigma) decreases in sigma; the upper end of the final bracket is
  returned, so the condition holds at the returned sigma).

The noise comes from the operating system's randomness (``secrets``) through a fresh torch
generator; its seed is never stored, so nobody -- the operator included -- can subtract it.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from numbers import Real

import torch

from miniunlearn.core.errors import InputError
from miniunlearn.core.params import Interval, Options, Param, validate_params

__all__ = ["MECHANISMS", "MECHANISM_NAMES", "ReleaseRequest", "classic_sigma", "analytic_sigma",
           "privacy_loss_delta", "calibrate", "gaussian_noise"]

MECHANISMS = ("auto", "classic", "analytic")
MECHANISM_NAMES = {"classic": "gaussian-classic", "analytic": "gaussian-analytic"}  # as recorded
BISECTION_RELATIVE_WIDTH = 1e-12

PARAMETERS = {
    "epsilon": Param(None, Interval(Real, 0, 100, closed="right"), help="privacy loss bound epsilon > 0"),
    "delta": Param(None, Interval(Real, 0, 1, closed="neither"), help="failure probability delta in (0, 1)"),
    "sensitivity": Param(None, Interval(Real, 0, 1e12), None,
                         help="L2 distance the noise must hide; None: the method's certificate"),
    "mechanism": Param("auto", Options(MECHANISMS),
                       help="classic (epsilon < 1), analytic, or auto: classic below epsilon 1, analytic from 1"),
}


@dataclass(frozen=True)
class ReleaseRequest:
    """What a certified release asks for: ``epsilon``, ``delta``, optionally the ``sensitivity`` to
    use instead of the method's own certificate (never smaller than it; the retrained side of a
    comparison takes the unlearned release's), and the calibration ``mechanism``."""

    epsilon: float
    delta: float
    sensitivity: float | None = None
    mechanism: str = "auto"

    def __post_init__(self):
        values = validate_params("release", PARAMETERS, {"epsilon": self.epsilon, "delta": self.delta,
                                                         "sensitivity": self.sensitivity,
                                                         "mechanism": self.mechanism})
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def as_dict(self) -> dict:
        return {"epsilon": self.epsilon, "delta": self.delta, "sensitivity": self.sensitivity,
                "mechanism": self.mechanism}


def _check_sensitivity(sensitivity: float) -> float:
    sensitivity = float(sensitivity)
    if not (math.isfinite(sensitivity) and sensitivity >= 0):
        raise InputError(f"the sensitivity (certified distance) must be a finite number >= 0, got {sensitivity}")
    return sensitivity


def _check_delta(delta: float) -> float:
    delta = float(delta)
    if not 0 < delta < 1:
        raise InputError(f"delta must lie in (0, 1), got {delta}")
    return delta


def classic_sigma(sensitivity: float, epsilon: float, delta: float) -> float:
    """``sigma = c sqrt(2 ln(1.25 / delta)) / epsilon`` (Dwork & Roth, Theorem A.1; needs epsilon < 1)."""
    sensitivity, delta, epsilon = _check_sensitivity(sensitivity), _check_delta(delta), float(epsilon)
    if not 0 < epsilon < 1:
        raise InputError(f"the classic Gaussian mechanism holds for 0 < epsilon < 1, got epsilon = {epsilon}; "
                         "use the analytic one")
    return sensitivity * math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon


def privacy_loss_delta(sigma: float, sensitivity: float, epsilon: float) -> float:
    """The smallest delta for which ``N(mu, sigma^2 I)`` and ``N(mu', sigma^2 I)`` with
    ``||mu - mu'|| = c`` are (epsilon, delta)-indistinguishable (Balle & Wang, Theorem 8):
    ``Phi(c/(2 sigma) - epsilon sigma/c) - e^epsilon Phi(-c/(2 sigma) - epsilon sigma/c)``.

    Evaluated as ``Phi(a) (1 - exp(epsilon + log Phi(b) - log Phi(a)))`` so that neither term
    overflows nor cancels.
    """
    # imported here: scipy.special takes ~0.2 s to load; only calibration needs it
    from scipy.special import log_ndtr

    sigma, c, epsilon = float(sigma), float(sensitivity), float(epsilon)
    if c == 0.0:
        return 0.0  # identical distributions
    if sigma <= 0.0:
        return 1.0  # two distinct point masses
    a = c / (2.0 * sigma) - epsilon * sigma / c
    b = -c / (2.0 * sigma) - epsilon * sigma / c
    log_pa, log_pb = float(log_ndtr(a)), float(log_ndtr(b))
    return max(0.0, math.exp(log_pa) * -math.expm1(epsilon + log_pb - log_pa))


def analytic_sigma(sensitivity: float, epsilon: float, delta: float) -> float:
    """The analytic Gaussian mechanism (Balle & Wang, Algorithm 1): the smallest sigma with
    ``privacy_loss_delta(sigma, c, epsilon) <= delta``, by bisection on log sigma."""
    sensitivity, delta, epsilon = _check_sensitivity(sensitivity), _check_delta(delta), float(epsilon)
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise InputError(f"epsilon must be a positive finite number, got {epsilon}")
    if sensitivity == 0.0:
        return 0.0

    def too_small(ratio: float) -> bool:  # sigma / c -- the condition is scale-free
        return privacy_loss_delta(ratio, 1.0, epsilon) > delta

    hi = 1.0
    while too_small(hi):
        hi *= 2.0
    lo = hi
    while not too_small(lo):
        lo /= 2.0
    while hi - lo > BISECTION_RELATIVE_WIDTH * hi:
        mid = math.sqrt(lo * hi)
        if too_small(mid):
            lo = mid
        else:
            hi = mid
    return sensitivity * hi


def calibrate(sensitivity: float, epsilon: float, delta: float, mechanism: str = "auto") -> tuple[float, str]:
    """``(sigma, recorded mechanism name)``. ``auto``: the classic formula where it holds
    (epsilon < 1), the analytic one from epsilon = 1 on."""
    if mechanism not in MECHANISMS:
        raise InputError(f"mechanism must be one of {', '.join(MECHANISMS)}, got {mechanism!r}")
    if mechanism == "auto":
        mechanism = "classic" if float(epsilon) < 1 else "analytic"
    sigma = (classic_sigma if mechanism == "classic" else analytic_sigma)(sensitivity, epsilon, delta)
    return sigma, MECHANISM_NAMES[mechanism]


def gaussian_noise(n: int, sigma: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` draws of N(0, sigma^2) from a generator seeded by the operating system (never stored)."""
    if not (math.isfinite(sigma) and sigma >= 0):
        raise InputError(f"the noise scale must be a finite number >= 0, got {sigma}")
    generator = torch.Generator().manual_seed(secrets.randbits(64))
    return torch.randn(int(n), generator=generator, dtype=dtype) * float(sigma)
