"""Newton / influence step (certified-removal style; Guo et al. 2020, Koh & Liang 2017).

One Newton step on the retained objective from the trained parameters:

    w = w_T - H_R(w_T)^{-1} grad F_R(w_T),      H_R = Hess F_R = (1/(n-r)) sum_{i in R} Hess l_i + lambda I

solved by Jacobi-preconditioned conjugate gradients, one Hessian-vector product (a sweep over
R with the softmax probabilities at w_T cached) per CG iteration: no p x p matrix is formed.

Why this is the influence step  w_T + H_R^{-1} G_U(w_T) / (n - r)  of the literature:  write the objective as a
mean of regularised per-sample losses, F_S = (1/|S|) sum_{i in S} f_i with
f_i(w) = l_i(w) + (lambda/2) ||w||^2. A converged run has grad F_D(w_T) = 0, i.e.
sum_{i in D} grad f_i(w_T) = 0, so the retained sum is minus the forgotten one:

    grad F_R(w_T) = (1/(n-r)) sum_{i in R} grad f_i(w_T) = -(1/(n-r)) sum_{i in U} grad f_i(w_T)
                  = -(G_U(w_T) + r lambda w_T) / (n - r),

and the Newton step is  w_T + H_R^{-1} (G_U(w_T) + r lambda w_T) / (n - r). This is the
literature's formula when G_U is the gradient sum of the regularised losses f_i, i.e. when each forgotten
sample takes its share lambda w_T of the penalty with it ("the regulariser handled exactly").
Dropping the r lambda w_T term would leave an O(rho lambda ||H_R^{-1} w_T||) error.

Options:
  ``steps`` (default 1): 1 is the classical influence/Newton step; k > 1 iterates Newton from
      the previous iterate, w_{k+1} = w_k - H_R(w_k)^{-1} grad F_R(w_k) (exact retained gradient
      from the second step on); F_R is strongly convex and w_T is close to w_R, so pure Newton
      converges quadratically.
  ``gradient`` (default "influence"): how grad F_R(w_T) is obtained for the first step.
      "influence" uses the identity above (reads only U; exact when grad F_D(w_T) = 0, i.e.
      up to the training tolerance); "exact" sweeps R once.
  ``cg_tol`` (default 1e-8): CG stops when ||H x - rhs|| <= cg_tol ||rhs||.
  ``max_cg`` (default 1000): CG iterations per step at most.

Cost per step: 1 sweep of R for the cached probabilities and preconditioner, one sweep of R per
CG iteration, and (except for an influence first step) one sweep of R for the gradient.
Converged-mode runs only: for a trajectory run the gold standard is the retrained SGD
trajectory, which a Newton step towards the minimiser of F_R does not target.
"""

from __future__ import annotations

from numbers import Integral, Real

import torch

from miniunlearn.core.params import Boolean, Interval, Options, Param
from miniunlearn.methods.interface import UnlearnContext, UnlearningMethod, register
from miniunlearn.models.objective import Objective
from miniunlearn.solvers.certified_newton import certify_point
from miniunlearn.solvers.cg import preconditioned_cg


def influence_gradient(G_U: torch.Tensor, theta: torch.Tensor, n_forget: int, n_retained: int,
                       penalty) -> torch.Tensor:
    """grad F_R(theta) from the forgotten rows alone, assuming grad F_D(theta) = 0:
    -(G_U + r lambda M theta) / (n - r)."""
    return -(G_U + n_forget * penalty.grad(theta)) / n_retained


@register
class Newton(UnlearningMethod):
    """Newton / influence step on the retained objective by Hessian-vector products and CG (see the
    module docstring for the formula and why it equals w_T + H_R^{-1} G_U / (n - r))."""

    name = "newton"
    summary = ("Newton / influence step w_T - H_R^-1 grad F_R(w_T) by CG on Hessian-vector products "
               "(certified-removal style)")
    modes = ("converged",)

    parameters = {
        "steps": Param(1, Interval(Integral, 1, 100), help="Newton steps (1 = the influence step)"),
        "gradient": Param("influence", Options(("influence", "exact")),
                          help="first gradient from U alone (influence) or a pass over R (exact)"),
        "cg_tol": Param(1e-8, Interval(Real, 0, 1, closed="neither"), help="relative CG residual"),
        "max_cg": Param(1000, Interval(Integral, 1, 100_000), help="CG iterations per step at most"),
        "certify": Param(False, Boolean(),
                         help="also prove a bound on ||w - w_R|| (a Newton system at the result: a few more passes)"),
    }

    def unlearn(self, ctx: UnlearnContext):
        model, penalty = ctx.model, ctx.penalty
        retained = Objective(model, ctx.retained_rows, penalty)
        n_retained, n_forget = len(ctx.retained_ids), len(ctx.forget_ids)
        theta = ctx.original_theta()
        cg_iterations, grad_norms = [], []
        for k in range(self.steps):
            if k == 0 and self.gradient == "influence":
                G_U = ctx.forget_rows.map_reduce(lambda X, y, w=theta: model.grad_sum(w, X, y))
                grad = influence_gradient(G_U, theta, n_forget, n_retained, penalty)
            else:
                grad = retained.grad_sum(theta) / n_retained + penalty.grad(theta)
            grad_norms.append(float(grad.norm()))
            if grad_norms[-1] == 0.0:
                break
            curvature = retained.curvature(theta)
            jacobi = curvature.diag
            step, iters = preconditioned_cg(curvature.hvp, -grad, lambda r: r / jacobi, self.cg_tol, self.max_cg)
            cg_iterations.append(iters)
            theta = theta + step
            if ctx.progress is not None:
                ctx.progress(1, info=f"Newton step {k + 1}/{self.steps}: {iters} CG iterations")
        stats = {"newton_steps": len(cg_iterations), "cg_iterations": cg_iterations,
                 "cg_hit_limit": any(i >= self.max_cg for i in cg_iterations), "gradient_norms": grad_norms,
                 "first_gradient": self.gradient}
        if self.certify:
            stats["certificate"] = certify_point(retained, theta, None)
        return theta, stats
