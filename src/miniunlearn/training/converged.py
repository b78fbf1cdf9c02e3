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

from miniunlearn import distributed
from miniunlearn.models.objective import Objective
from miniunlearn.progress import rows_read as report_rows

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
    """Hessian-vector products at a fixed theta, reusing that theta's softmax probabilities.

    The probabilities are cached for this process's chunks only (n x C floats in one process,
    its share across processes: 168 MB at n = 10.5M, C = 2), in one buffer: thousands of small
    long-lived blocks between each chunk's large temporaries fragmented the heap to ~1 GB of
    resident memory at that size. The Jacobi diagonal ``sum_i p_ic (1 - p_ic) x~_ij^2`` comes
    from the same sweep. Each product is a sum over the local chunks, all-reduced across
    processes (:mod:`miniunlearn.distributed`).
    """

    def __init__(self, objective: Objective, theta: torch.Tensor):
        self.objective = objective
        self.theta = theta
        rows, model = objective.rows, objective.model
        self.bounds = rows.local_chunk_bounds()
        first, last = self.bounds[0][0], self.bounds[-1][1]
        buffer = torch.empty(last - first, model.n_classes, dtype=theta.dtype)
        self.probs = []
        diag = torch.zeros(model.n_params, dtype=theta.dtype)
        for start, stop in self.bounds:
            X, _ = rows.chunk(start, stop)
            probs = buffer[start - first:stop - first]
            probs.copy_(model.probabilities(theta, X))
            w = probs * (1.0 - probs)
            diag += torch.cat([w.T @ (X * X), w.sum(0)[:, None]], dim=1).reshape(-1)
            self.probs.append(probs)
            report_rows(stop - start)
        rows.rows_read += len(rows)
        self.diag = distributed.all_reduce_sum(diag) / objective.n + objective.l2

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        obj = self.objective
        total = None
        for bound, p in zip(self.bounds, self.probs):
            X, y = obj.rows.chunk(*bound)
            part = obj.model.hvp_sum(self.theta, X, y, v, probs=p)
            total = part if total is None else total + part
            report_rows(len(y))
        obj.rows.rows_read += len(obj.rows)
        return distributed.all_reduce_sum(total) / obj.n + obj.l2 * v


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
