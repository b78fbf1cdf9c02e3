"""Line-search Newton-CG: minimise a strongly convex objective until ||grad F|| <= tol.

For L2-regularised logistic regression F is lambda-strongly convex, so the minimiser is
unique: any solver that reaches ||grad F|| <= tol lands within tol / lambda of it (strong
convexity: ||w - w*|| <= ||grad F(w)|| / lambda). Newton-CG needs no dense Hessian: each CG
step is one Hessian-vector product, a sweep over the rows with the softmax probabilities
cached for the current iterate. A Jacobi (Hessian-diagonal) preconditioner keeps CG short.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from miniunlearn.models.objective import Objective
from miniunlearn.solvers.cg import preconditioned_cg

DEFAULT_TOL = 1e-9
DEFAULT_MAX_ITER = 100


@dataclass
class SolverInfo:
    iterations: int
    cg_iterations: int
    grad_norm: float
    objective: float
    converged: bool
    passes: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def newton_cg(objective: Objective, theta0: torch.Tensor, tol: float = DEFAULT_TOL,
              max_iter: int = DEFAULT_MAX_ITER, max_cg: int = 500, progress=None) -> tuple[torch.Tensor, SolverInfo]:
    """Minimise ``objective`` from ``theta0`` until ``||grad F|| <= tol`` (inexact Newton, Armijo line search)."""
    theta = theta0.clone()
    value, grad = objective.value_grad(theta)
    cg_total = 0
    iteration = 0
    for iteration in range(1, max_iter + 1):
        grad_norm = float(grad.norm())
        if progress is not None:
            progress(info=f"|grad F| {grad_norm:.2e}")
        if grad_norm <= tol:
            iteration -= 1
            break
        curvature = objective.curvature(theta)
        # Eisenstat-Walker style forcing term: loose far away, tight near the optimum (superlinear).
        rtol = min(0.5, grad_norm ** 0.5)
        jacobi = curvature.diag
        step, cg_iters = preconditioned_cg(curvature.hvp, -grad, lambda r: r / jacobi, rtol, max_cg)
        del curvature  # its n x C cache must not live on next to the next iteration's
        cg_total += cg_iters
        slope = float(grad @ step)
        t = 1.0
        while True:
            trial = theta + t * step
            trial_value, trial_grad = objective.value_grad(trial)
            if trial_value <= value + 1e-4 * t * slope or t < 1e-10:
                break
            t *= 0.5
        if trial_value > value and float(trial_grad.norm()) >= grad_norm:
            break  # no progress possible in floating point
        theta, value, grad = trial, trial_value, trial_grad
    grad_norm = float(grad.norm())
    info = SolverInfo(iteration, cg_total, grad_norm, value, grad_norm <= tol, objective.passes)
    return theta, info
