"""Globalised, certified Newton-CG: minimise a strongly convex objective until a proven bound on the
distance to its minimiser is small enough.

Each Newton iteration at w caches the softmax probabilities (the same pass gives F(w) and
grad F(w)), then runs preconditioned conjugate gradients on ``H(w) D = -grad F(w)``. After every
CG iteration the self-concordance certificate (:mod:`miniunlearn.solvers.certificate`) of the
point w + D is evaluated from scalars CG already has (||D||, D^T H D, the residual, the exact
logit span of D), and the solve stops as soon as the point is certified:

    certificate(point) <= tol * ||point - w_ref||        (w_ref: the original model w_T)

Otherwise CG stops on an Eisenstat-Walker forcing term and an Armijo backtracking line search on
F accepts w + t D, t = 1, 1/2, ...: F never increases, so the method converges from any start on
any strongly convex instance (a line-search Newton method with descent directions), and the
certificate, not an iteration count, decides when it is done.

The point certified that way, w + D, has a small but loose bound (its error is second order,
the bound a worst case of the third derivative). Before returning, a *polish* evaluates F at
w + D (confirming that F decreased) and solves the Newton system there: the bound for the point
itself, ||D'|| + (second order), is then within a few percent of its true distance, and the
smaller of the two bounds is reported.

Preconditioner: the caller's (the history's curvature at w_T), improved after the first Newton
iteration by the last CG pairs (p_j, H p_j) of the previous one (a limited-memory preconditioner,
Morales & Nocedal 2000). Costs are counted in passes over the rows: one per point whose value is
computed (which also caches the curvature there), one per Hessian-vector product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from miniunlearn.models.curvature import LogitSpan
from miniunlearn.models.objective import Curvature, Objective
from miniunlearn.solvers.certificate import gradient_bound, newton_certificate, rounding_floor

ARMIJO = 1e-4
RECYCLED_PAIRS = 30
POLISH_PRODUCTS = 6


@dataclass
class CertifiedResult:
    """The best certified point found, its certificate, and what it cost."""

    w: torch.Tensor
    certificate: float               # proven bound on ||w - w*||
    converged: bool                  # certificate <= tol * ||w - w_ref|| (False without a tol)
    newton_iterations: int = 0
    cg_iterations: int = 0
    stop: str = ""
    log: list = field(default_factory=list)


@dataclass
class _Best:
    certificate: float
    w: torch.Tensor

    def offer(self, certificate: float, w: torch.Tensor) -> bool:
        if certificate < self.certificate:
            self.certificate, self.w = certificate, w
            return True
        return False


class _Recycled:
    """``H0`` (the caller's preconditioner) corrected by CG pairs (p, Hp): the L-BFGS two-loop
    recursion with those pairs, symmetric positive definite whenever H0 is."""

    def __init__(self, base: Callable[[torch.Tensor], torch.Tensor]):
        self.base = base
        self.pairs: list[tuple[torch.Tensor, torch.Tensor, float]] = []

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        q = v.clone()
        alphas = []
        for s, y, rho in reversed(self.pairs):
            alpha = rho * float(s @ q)
            alphas.append(alpha)
            q -= alpha * y
        z = self.base(q)
        for (s, y, rho), alpha in zip(self.pairs, reversed(alphas)):
            z += (alpha - rho * float(y @ z)) * s
        return z


def certified_newton_cg(objective: Objective, precondition: Callable[[torch.Tensor], torch.Tensor] | None,
                        w_start: torch.Tensor, w_ref: torch.Tensor, *, mu: float, R: float, tol: float | None,
                        max_passes: float, start: Curvature | None = None, max_cg: int = 200,
                        polish: bool = True, progress=None) -> CertifiedResult:
    """Minimise ``objective`` from ``w_start``; stop when certified to ``tol`` (relative to
    ``||w - w_ref||``) or when ``max_passes`` passes over the rows are spent.

    ``mu`` bounds every Hessian's smallest eigenvalue from below (the L2 strength), ``R`` is the
    self-concordance constant of the rows. ``precondition=None`` uses the Jacobi diagonal of each
    iterate's Hessian (from the same pass). ``start`` may hand over the curvature (with value and
    gradient) already computed at ``w_start``. Without ``tol`` the whole budget is used and the
    best certificate found is reported (no polish).
    """
    passes_at_start = objective.passes
    jacobi = precondition is None
    here = start if start is not None else objective.curvature(w_start, diag=jacobi, value=True)
    w = w_start
    best = _Best(gradient_bound(float(here.grad.norm()), R, mu, float(w.norm())), w)
    result = CertifiedResult(w, best.certificate, False)
    preconditioner = _Recycled(precondition if not jacobi else _jacobi(here))

    def certified() -> bool:
        return tol is not None and best.certificate <= tol * float((best.w - w_ref).norm())

    def spent() -> bool:
        return objective.passes - passes_at_start >= max_passes

    def below_rounding() -> bool:
        """The target is smaller than any certificate computable in floating point, and the best
        certificate is already at that limit: more passes cannot help."""
        floor = rounding_floor(R, mu, float(best.w.norm()))
        return tol is not None and tol * float((best.w - w_ref).norm()) < floor and best.certificate <= 4 * floor

    while not certified() and not spent():
        if below_rounding():
            result.stop = "the tolerance is below what floating-point arithmetic can certify here"
            break
        result.newton_iterations += 1
        step, stop = _newton_step(here, w, preconditioner, best, mu, R, certified, spent, max_cg, result)
        if progress is not None:
            progress(info=f"Newton {result.newton_iterations}: certificate {best.certificate:.2e}")
        result.log.append({"newton": result.newton_iterations, "grad_norm": float(here.grad.norm()),
                           "cg_stop": stop, "value": here.value, "certificate": best.certificate})
        if stop in ("certified", "budget"):
            break
        here, w = _line_search(objective, here, w, step, best, mu, R, spent, jacobi)
        if here is None:
            result.stop = "budget" if spent() else "line search reached floating-point precision"
            break
        if jacobi:
            preconditioner.base = _jacobi(here)
    if polish and certified() and not spent() and best.w is not w:
        _polish(objective, here, best, preconditioner, mu, R, max_passes - (objective.passes - passes_at_start),
                result)
    result.w, result.certificate, result.converged = best.w, best.certificate, certified()
    result.stop = result.stop or ("certified" if result.converged else "budget")
    return result


def _newton_step(here: Curvature, w: torch.Tensor, precondition: _Recycled, best: _Best, mu: float, R: float,
                 certified, spent, max_cg: int, result: CertifiedResult,
                 offer_step: bool = True) -> tuple[torch.Tensor, str]:
    """Flexible PCG on ``H D = -g`` at w, certifying w and w + D after every iteration.

    ``offer_step=False`` certifies w alone (the polish). The CG pairs replace the preconditioner's
    recycled ones for the next Newton iteration.
    """
    g = here.grad
    grad_norm = float(g.norm())
    forcing = min(0.5, math.sqrt(grad_norm))
    D = torch.zeros_like(g)
    residual = -g.clone()  # -(H D + g)
    z = precondition(residual)
    p = z.clone()
    rz = float(residual @ z)
    span = LogitSpan(here.cache)
    pairs = []
    stop = "max_cg"
    for _ in range(max_cg):
        Hp, logits = here.hvp_with_logits(p)
        result.cg_iterations += 1
        curvature = float(p @ Hp)
        if not curvature > 0:
            stop = "curvature"
            break
        alpha = rz / curvature
        pairs.append((p, Hp, 1.0 / curvature))
        D += alpha * p
        previous = residual.clone()
        residual -= alpha * Hp
        span.accumulate(logits, alpha)
        HD = -g - residual
        bound = newton_certificate(float(D.norm()), float(D @ HD), float(residual.norm()), span.span(),
                                   grad_norm, float(HD.norm()), R, mu, float(w.norm()))
        best.offer(bound.at_point, w)
        if offer_step:
            best.offer(bound.after_step, w + D)
        if certified():
            stop = "certified"
            break
        if spent():
            stop = "budget"
            break
        if float(residual.norm()) <= forcing * grad_norm:
            stop = "forcing"
            break
        z = precondition(residual)
        rz_new = float(residual @ z)
        beta = max(0.0, float(z @ (residual - previous)) / rz)  # Polak-Ribiere: the preconditioner may be inexact
        p = z + beta * p
        rz = rz_new
    precondition.pairs = pairs[-RECYCLED_PAIRS:]
    if float(D.norm()) == 0.0:
        D = -precondition.base(g)
    return D, stop


def _jacobi(here: Curvature) -> Callable[[torch.Tensor], torch.Tensor]:
    """v / diag(Hess F): the iterate's curvature must have been computed with its diagonal."""
    diagonal = here.diag
    return lambda v: v / diagonal


def _line_search(objective: Objective, here: Curvature, w: torch.Tensor, step: torch.Tensor, best: _Best,
                 mu: float, R: float, spent, diag: bool = False) -> tuple[Curvature | None, torch.Tensor]:
    """Armijo backtracking on F along ``step`` (a descent direction); each trial is one pass."""
    slope = float(here.grad @ step)
    if slope >= 0:  # only possible through round-off: fall back to steepest descent
        step, slope = -here.grad, -float(here.grad @ here.grad)
    t = 1.0
    while t > 1e-12 and not spent():
        trial = w + t * step
        there = objective.curvature(trial, diag=diag, value=True)
        best.offer(gradient_bound(float(there.grad.norm()), R, mu, float(trial.norm())), trial)
        if there.value <= here.value + ARMIJO * t * slope:
            return there, trial
        t *= 0.5
    return None, w


def _polish(objective: Objective, here: Curvature, best: _Best, precondition: _Recycled, mu: float, R: float,
            budget: float, result: CertifiedResult) -> None:
    """Certify the chosen point w + D by a Newton system solved there (see the module docstring).

    Keeps w + D only if F did not increase on the way (else the certified base point stands).
    """
    if budget < 2:
        return
    point = best.w
    there = objective.curvature(point, diag=False, value=True)
    if there.value > here.value:
        return
    stop_at = objective.passes + min(POLISH_PRODUCTS, budget - 1)
    local = _Best(gradient_bound(float(there.grad.norm()), R, mu, float(point.norm())), point)
    _newton_step(there, point, precondition, local, mu, R, lambda: False, lambda: objective.passes >= stop_at,
                 POLISH_PRODUCTS, result, offer_step=False)
    best.offer(local.certificate, point)
