"""The dense route for small models (p <= 2048 parameters): the cheapest certified fit and forget.

At scikit-learn's usual scale the p x p Hessian of F costs about as much as a few passes over the
rows and a Cholesky factor of it is instant, so exact Newton steps beat Newton-CG:

* **fit**: L-BFGS (scipy) on F to ``||grad F|| <= 1e-6`` -- one pass per iteration -- then exact
  Newton steps with the dense Hessian (quadratic convergence) to ``||grad F|| <= 1e-9``;
* **forget**: the exact Newton step on F_R from w_T computed from the history and the forgotten
  rows alone (Mini-Unlearning's step 0, :mod:`miniunlearn.methods.mini`), then **one** exact Newton
  step at that point with the dense Hessian of F_R, certified by the self-concordance bound
  (:func:`miniunlearn.solvers.certificate.newton_certificate`; proof in docs/mini-unlearning.md):

      ||w + D - w_R|| <= y,  y the smallest root of  y = a + b phi(s0 + R y),
      a = ||H D + g|| / mu,  b = ||D||_H / sqrt(mu),  s0 = max_i span_c (Theta_D x~_i)_c,

  with mu the smallest eigenvalue of H at w on zero-mean free biases (an eigensolve of the dense
  H, less its backward error; ``mu_is_local`` then) or lambda when every parameter is penalised.
  Cost: passes over the forgotten rows, then three passes over the kept rows (curvature with the
  dense Hessian; the step's logit span). Accepted when the certificate is at most
  ``tol * ||w + D - w_T||``; else more steps (five in all): *chord* steps with the same factor
  (:func:`chord_step`: four plain passes each, the curvature bound carried over by
  self-concordance) while the last step moved the logits little, else a new dense Newton step; if
  none certifies, the general method (certified Newton-CG) takes over.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize

from miniunlearn.methods.mini import HistoryPreconditioner, forget_curvature, solve_surrogate
from miniunlearn.models import Objective, Rows
from miniunlearn.solvers.certificate import newton_certificate, self_concordance_constant

DENSE_MAX_PARAMS = 2048
LBFGS_GTOL = 1e-6


def dense_newton(objective: Objective, w: torch.Tensor) -> dict:
    """One exact Newton step at ``w``: ``{"w": w + D, "grad_norm": ||g(w)||, "certificate": bound on
    ||w + D - w*||}`` (three passes: value/gradient/probabilities, dense Hessian, logit span)."""
    penalty, n = objective.penalty, objective.n
    here = objective.curvature(w, diag=False, value=True, row_norm=True)
    H = here.cache.hessian_sum() / n
    H.diagonal().add_(penalty.diagonal(H.shape[0]))
    H = 0.5 * (H + H.T)
    gauge = penalty.gauge()
    lifted = H if gauge is None else H + float(H.diagonal().mean()) * torch.outer(gauge, gauge)
    g = here.grad
    factor = torch.linalg.cholesky(lifted)
    D = penalty.project(-torch.cholesky_solve(g[:, None], factor)[:, 0])
    if gauge is None:
        mu, local = penalty.strong_convexity, False
    else:  # the smallest eigenvalue on zero-mean biases, less the eigensolver's backward error
        p = H.shape[0]
        mu = float(torch.linalg.eigvalsh(lifted)[0]) - 64 * p * 2.0 ** -52 * float(torch.linalg.matrix_norm(lifted))
        local = True
    HD = H @ D
    R = self_concordance_constant(here.cache.max_row_norm)
    span = _logit_span(objective, D)
    bound = newton_certificate(float(D.norm()), float(D @ HD), float((HD + g).norm()), span, float(g.norm()),
                               float(HD.norm()), R, mu, float(w.norm()), mu_is_local=local)
    return {"w": w + D, "grad_norm": float(g.norm()), "certificate": bound.after_step, "value": here.value,
            "factor": factor, "mu": mu, "mu_is_local": local, "span": span, "R": R}


def chord_step(objective: Objective, w: torch.Tensor, previous: dict) -> dict:
    """A Newton step at ``w = previous["w"]`` with the previous point's Hessian factor (no new dense
    Hessian), certified with the exact H(w) products: ``D = -H(w_prev)^-1 g(w)``, residual
    ``H(w) D + g(w)`` by one exact product. The curvature bound at w comes from the previous one by
    self-concordance, ``H(w) >= exp(-s) H(w_prev)`` with s the previous step's logit span (the penalty
    part is constant), so no eigensolve either. Four passes, none of them dense."""
    penalty = objective.penalty
    here = objective.curvature(w, diag=False, value=True)
    g = here.grad
    D = penalty.project(-torch.cholesky_solve(g[:, None], previous["factor"])[:, 0])
    HD = here.hvp(D)
    mu = previous["mu"] * float(np.exp(-previous["span"])) if previous["mu_is_local"] else previous["mu"]
    span = _logit_span(objective, D)
    bound = newton_certificate(float(D.norm()), float(D @ HD), float((HD + g).norm()), span, float(g.norm()),
                               float(HD.norm()), previous["R"], mu, float(w.norm()), mu_is_local=previous["mu_is_local"])
    return {"w": w + D, "grad_norm": float(g.norm()), "certificate": bound.after_step, "value": here.value,
            "factor": previous["factor"], "mu": mu * float(np.exp(-span)) if previous["mu_is_local"] else mu,
            "mu_is_local": previous["mu_is_local"], "span": 0.0, "R": previous["R"]}


def _logit_span(objective: Objective, D: torch.Tensor) -> float:
    """``max_i (max_c - min_c) (Theta_D x~_i)_c``: how far the step moves any row's logits apart (one pass)."""
    model = objective.model
    spans = objective.rows.map_reduce(lambda X, y: model.logits(D, X), reduce=lambda parts: parts)
    return max((float((z.amax(dim=1) - z.amin(dim=1)).max()) for z in spans if len(z)), default=0.0)


def fit(model, rows: Rows, penalty, theta0: torch.Tensor, tol: float, max_iter: int) -> tuple[torch.Tensor, dict]:
    """The optimum of F on ``rows``: L-BFGS to ``||grad|| <= 1e-6``, then dense Newton steps to ``tol``."""
    objective = Objective(model, rows, penalty)

    def value_grad(x):
        value, grad = objective.value_grad(torch.from_numpy(x))
        return value, grad.numpy()

    result = minimize(value_grad, theta0.numpy().copy(), jac=True, method="L-BFGS-B",
                      options={"gtol": LBFGS_GTOL / np.sqrt(model.n_params), "maxiter": 20 * max_iter,
                               "maxcor": 20, "ftol": 0.0})
    theta = penalty.project(torch.from_numpy(result.x))
    grad_norm, newton = float(np.linalg.norm(result.jac)), 0
    while grad_norm > tol and newton < max_iter:
        step = dense_newton(objective, theta)
        grad_norm = step["grad_norm"]
        if grad_norm <= tol:
            break  # theta itself is good enough: no step taken past it
        theta, newton = penalty.project(step["w"]), newton + 1
        grad_norm = float(objective.value_grad(theta)[1].norm())
    info = {"iterations": int(result.nit) + newton, "lbfgs_iterations": int(result.nit), "newton_iterations": newton,
            "grad_norm": grad_norm, "converged": grad_norm <= tol, "passes": objective.passes, "route": "dense"}
    return theta, info


def step0(context, history, penalty) -> torch.Tensor:
    """Mini-Unlearning's step 0: the exact Newton step on F_R at w_T from the exact history and the
    forgotten rows (``Delta_0 = -J_0^-1 b``, :mod:`miniunlearn.methods.mini`)."""
    theta_T = history.theta
    n, r = history.n, len(context.forget_ids)
    forget = forget_curvature(context, theta_T)
    b = history.grad_sum - forget.grad_sum + (n - r) * penalty.grad(theta_T)
    fixed = solve_surrogate(HistoryPreconditioner(history, penalty), forget, penalty, n, b, 1e-5, 300, 8)
    return theta_T - fixed.x
