"""Certified distances to the optimum of a self-concordant-like objective, from one Newton step.

The objective F (the retained rows' mean logistic loss plus the L2 penalty) is minimised at w*.
At a point w with gradient g, Hessian H and any step D with residual r = H D + g, let
v = w* - w. The bound (docs/mini-unlearning.md, "Certificates", has the proof) is

    y := ||w* - (w + D)||_2  <=  smallest y with  y >= a + b * phi(s0 + R y)       (1)

    a   = ||r|| / mu,             b = ||D||_H / sqrt(mu)  (||D||_H^2 = D^T H D),
    s0  = max_i span_c (Theta_D x~_i)_c, the largest change of any row's logit spread along D,
    R   = sqrt(2) max_i ||x~_i||, the self-concordance constant of the logistic loss,
    mu  <= the smallest eigenvalue of every Hessian on the way (lambda when every parameter is
           penalised),
    phi = min(phi_1, phi_2), two bounds on how far the average Hessian between w and w* can
          stray from H when the logits change by at most s along the way (below).

It follows that ||w - w*|| <= ||D|| + y, and ||w - w*|| <= ||g|| / mu always (strong convexity).
Every function here is plain arithmetic on those scalars; a Newton-CG solver has them for free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SQRT2 = math.sqrt(2.0)
# Round-off. The residual is inflated by this share of ||g|| + ||H D|| before it enters the bound,
# and every bound gets a floor of FLOOR * (R + mu ||w||) / mu: a computed gradient is no more
# accurate than a few units of round-off in its largest terms (each row contributes at most
# ||p - e_y|| ||x~|| <= R), so no distance below that can be certified by computation.
ROUNDOFF = 1e-12
FLOOR = 16 * 2.0 ** -52


def self_concordance_constant(max_row_norm: float) -> float:
    """R = sqrt(2) * max_i ||x~_i|| for rows whose largest feature norm is ``max_row_norm`` (x~ = [x, 1]).

    Along any direction h the third derivative of a row's loss is at most span_c(Theta_h x~)_c
    times its second derivative (Bach 2010, generalised to the softmax), and that span is at most
    sqrt(2) ||h|| ||x~||.
    """
    return SQRT2 * math.sqrt(float(max_row_norm) ** 2 + 1.0)


def phi_inverse_lower(s: float) -> float:
    """||(I+E)^-1 E|| when exp(-s)-curvature bounds hold: 1/psi_lo(s) - 1 = s / (1 - e^-s) - 1.

    With e^{-ts} H <= H(w + t v) <= e^{ts} H for t in [0, 1], the average Hessian is
    H^{1/2} (I + E) H^{1/2} with psi_lo(s) = (1 - e^-s)/s <= I + E <= psi_hi(s) = (e^s - 1)/s.
    """
    if s <= 0.0:
        return 0.0
    if s < 1e-4:
        return s / 2.0 + s * s / 12.0
    return s / (-math.expm1(-s)) - 1.0


def phi_sqrt(s: float) -> float:
    """max |e| / sqrt(1 + e) over e in [psi_lo(s) - 1, psi_hi(s) - 1]: the bound that goes through
    ||Hhat^{-1/2}|| <= 1/sqrt(mu) instead of ||H^{-1/2}|| (smaller for moderate s)."""
    if s <= 0.0:
        return 0.0
    if s < 1e-4:
        return s / 2.0 + s * s / 24.0
    if s > 30.0:
        return phi_inverse_lower(s)
    hi = math.expm1(s) / s
    lo = -math.expm1(-s) / s
    return max((hi - 1.0) / math.sqrt(hi), (1.0 - lo) / math.sqrt(lo))


def phi(s: float) -> float:
    """The smaller of the two valid bounds (both increasing in s, so their minimum is too)."""
    return phi_inverse_lower(s) if s > 30.0 else min(phi_inverse_lower(s), phi_sqrt(s))


def phi_drift(s: float, drift: float) -> float:
    """:func:`phi` when the curvature H the step was measured with is that of a point whose logits differ by
    up to ``drift`` from the start of the segment (a reference Hessian, e.g. the history's at w_T).

    Along the segment the Hessian then lies between e^{-drift} psi_lo(s) H and e^{drift} psi_hi(s) H, so
    with e in [e^{-drift} psi_lo - 1, e^{drift} psi_hi - 1]: phi_1 = max |e| / (1 + e) and
    phi_2 = max |e| / sqrt(1 + e) at the two ends. ``drift = 0`` gives :func:`phi`.
    """
    if drift <= 0.0:
        return phi(s)
    if s > 30.0 or drift > 30.0:
        return math.exp(drift) * (phi_inverse_lower(s) + 1.0) - 1.0
    lo = math.exp(-drift) * (-math.expm1(-s) / s if s > 1e-12 else 1.0)
    hi = math.exp(drift) * (math.expm1(s) / s if s > 1e-12 else 1.0)
    phi_1 = max(1.0 / lo - 1.0, 1.0 - 1.0 / hi)
    phi_2 = max((hi - 1.0) / math.sqrt(hi), (1.0 - lo) / math.sqrt(lo))
    return min(phi_1, phi_2)


def _phi_slope(s: float) -> float:
    """d/ds of phi_inverse_lower (an upper bound of phi's growth, for the Newton search below)."""
    if s < 1e-4:
        return 0.5 + s / 6.0
    e = math.exp(-s)
    den = 1.0 - e
    return (den - s * e) / (den * den)


def smallest_root(a: float, b: float, s0: float, R: float, max_iter: int = 200, spread=None,
                  drift: float = 0.0) -> float:
    """A verified y >= the smallest root of ``y = a + b phi(s0 + R y)``, or inf when there is none.

    ``spread`` replaces ``phi`` (e.g. by :func:`phi_inverse_lower` alone, where the second bound
    inside ``phi`` does not apply); ``drift`` > 0 uses :func:`phi_drift` (a reference Hessian).

    Any y with ``a + b phi(s0 + R y) < y`` certifies (a continuity argument: docs), so the result
    is checked, not trusted: Newton's method on the convex ``h(y) = a + b phi_1(s0 + R y) - y``
    from y = 0 approaches the root from below, a point just above it is verified, and then a few
    fixed-point steps ``y <- a + b phi(s0 + R y)`` move down while they stay verified.
    """
    values = (a, b, s0, R)
    if not all(math.isfinite(v) for v in values) or min(values) < 0:
        return math.inf
    if b == 0.0:
        return a
    if spread is None:
        spread = phi if drift <= 0.0 else (lambda s: phi_drift(s, drift))
    grow = math.exp(max(drift, 0.0))  # the convex majorant e^drift (1 + phi_1) - 1 drives the Newton search

    def f(y: float) -> float:
        return a + b * spread(s0 + R * y)

    y = 0.0
    for _ in range(max_iter):
        h = a + b * (grow * (phi_inverse_lower(s0 + R * y) + 1.0) - 1.0) - y
        if h <= 0.0:
            break
        slope = b * R * grow * _phi_slope(s0 + R * y) - 1.0
        if slope >= 0.0:
            return math.inf  # h is convex, positive and no longer decreasing: no root
        step = y - h / slope
        if step <= y * (1.0 + 1e-15):
            break
        y = step
    margin = 1.0 + 1e-12
    verified = math.inf
    for k in range(60):
        candidate = y * (1.0 + 1e-12 * 4.0 ** k) + 1e-300
        if f(candidate) * margin <= candidate:
            verified = candidate
            break
    if not math.isfinite(verified):
        return math.inf
    for _ in range(8):
        candidate = f(verified) * margin
        if candidate < verified and f(candidate) * margin <= candidate:
            verified = candidate
        else:
            break
    return verified


@dataclass(frozen=True)
class NewtonCertificate:
    """Bounds from one Newton step D at w: ``after_step`` on ||w + D - w*||, ``at_point`` on ||w - w*||."""

    after_step: float
    at_point: float


def rounding_floor(R: float, mu: float, point_norm: float) -> float:
    """The smallest distance a computed certificate may claim at a point of norm ``point_norm``."""
    return FLOOR * (R + mu * point_norm) / mu


def gradient_bound(grad_norm: float, R: float, mu: float, point_norm: float) -> float:
    """||w - w*|| <= ||grad F(w)|| / mu (strong convexity), with the rounding floor."""
    return grad_norm * (1.0 + ROUNDOFF) / mu + rounding_floor(R, mu, point_norm)


def newton_certificate(step_norm: float, step_curvature: float, residual_norm: float, step_span: float,
                       grad_norm: float, hd_norm: float, R: float, mu: float, point_norm: float,
                       mu_is_local: bool = False, drift: float = 0.0) -> NewtonCertificate:
    """Evaluate (1) for a step D at a point w: ``step_curvature`` = D^T H D, ``step_span`` = s0,
    ``hd_norm`` = ||H D||, ``point_norm`` = ||w||.

    ``mu_is_local``: ``mu`` bounds the Hessian's smallest eigenvalue at w only (an unpenalised
    intercept: the objective is strongly convex through the data, with no constant known in
    advance). Along the way to w* the Hessian is then at least psi_lo(s) times H(w), so the
    residual term becomes a / psi_lo(s) = a (1 + phi_1(s)) and the step term uses the bound
    through ||H^{-1/2}||: y <= a + (a + b) phi_1(s0 + R y), the same equation with b -> a + b and
    phi_1 alone (the second bound inside phi goes through a global mu). The strong-convexity
    fallback ||g|| / mu does not hold then.

    ``drift``: H is not the Hessian at w but a *reference* Hessian, that of a point w_ref whose
    logits differ from w's by at most ``drift`` on every row (``drift = N(w - w_ref)``), e.g. the
    retained Hessian at w_T that the history gives without a pass over the rows; then
    ``phi_drift`` replaces ``phi`` (docs/mini-unlearning.md, "Certificates with a reference Hessian").
    """
    if not mu > 0:
        return NewtonCertificate(math.inf, math.inf)
    residual = residual_norm + ROUNDOFF * (grad_norm + hd_norm)
    a = residual / mu
    b = math.sqrt(max(step_curvature, 0.0) / mu)
    floor = rounding_floor(R, mu, point_norm + step_norm)
    if mu_is_local:
        if drift > 0.0:
            return NewtonCertificate(math.inf, math.inf)
        after = smallest_root(a, a + b, step_span, R, spread=phi_inverse_lower) + floor
        return NewtonCertificate(after, step_norm + after)
    after = smallest_root(a, b, step_span, R, drift=drift) + floor
    return NewtonCertificate(after, min(step_norm + after, gradient_bound(grad_norm, R, mu, point_norm)))


def logit_span_bound(step: torch.Tensor, n_classes: int, max_row_norm: float) -> float:
    """An upper bound on N(D) = max_i span_c (Theta_D x~_i)_c from norms alone (no pass over the rows):
    span_c (Theta_D x~)_c = max_{c,c'} (theta_c - theta_c') . x~ <= max_{c,c'} ||theta_c - theta_c'|| ||x~||,
    with ||x~||^2 = ||x||^2 + 1 <= max_row_norm^2 + 1."""
    blocks = step.view(n_classes, -1)
    sq = (blocks * blocks).sum(dim=1)
    gram = blocks @ blocks.T
    diff = (sq[:, None] + sq[None, :] - 2.0 * gram).clamp_min(0.0).max()
    return float(diff.sqrt()) * math.sqrt(float(max_row_norm) ** 2 + 1.0) * (1.0 + 1e-12)
