"""Converged training: a line-search Newton-CG solver run until ||grad F|| <= tol.

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


class _Curvature:
    """Hessian-vector products at a fixed theta, reusing that theta's softmax probabilities."""

    def __init__(self, objective: Objective, theta: torch.Tensor):
        self.objective = objective
        self.theta = theta
        rows, model = objective.rows, objective.model
        self.probs = [model.probabilities(theta, X) for X, _ in rows.iter_chunks()]
        self.diag = torch.zeros(model.n_params, dtype=theta.dtype)
        for (X, _), probs in zip(rows.iter_chunks(), self.probs):
            w = probs * (1.0 - probs)
            self.diag += torch.cat([w.T @ (X * X), w.sum(0)[:, None]], dim=1).reshape(-1)
        rows.rows_read += len(rows)
        self.diag = self.diag / objective.n + objective.l2

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        obj = self.objective
        parts = [obj.model.hvp_sum(self.theta, X, y, v, probs=p)
                 for (X, y), p in zip(obj.rows.iter_chunks(), self.probs)]
        obj.rows.rows_read += len(obj.rows)
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total / obj.n + obj.l2 * v


def preconditioned_cg(hvp, rhs: torch.Tensor, diag: torch.Tensor, rtol: float, max_iter: int) -> tuple[torch.Tensor, int]:
    """Solve ``H x = rhs`` by conjugate gradients with the Jacobi preconditioner ``diag``."""
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = r / diag
    p = z.clone()
    rz = float(r @ z)
    target = rtol * float(rhs.norm())
    for k in range(1, max_iter + 1):
        hp = hvp(p)
        alpha = rz / float(p @ hp)
        x += alpha * p
        r -= alpha * hp
        if float(r.norm()) <= target:
            return x, k
        z = r / diag
        rz_new = float(r @ z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, max_iter


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
        curvature = _Curvature(objective, theta)
        # Eisenstat-Walker style forcing term: loose far away, tight near the optimum (superlinear).
        rtol = min(0.5, grad_norm ** 0.5)
        step, cg_iters = preconditioned_cg(curvature.hvp, -grad, curvature.diag, rtol, max_cg)
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
