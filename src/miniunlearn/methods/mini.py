"""Mini-Unlearning: unlearning from a minimal history by a contraction fixed point, then certified
refinement until a proven bound on the distance to retraining is small enough.

Notation (docs/mini-unlearning.md): n training rows, forget set U with r rows, retained set R
(m = n - r rows), penalty lambda M (M = I, or the weights only), w_T the trained optimum,
G_S(w) = sum_{i in S} grad l_i(w). The history holds w_T, G_D(w_T), the loss sum L_D(w_T) and a
curvature model P ~= (H_D + lambda M)^-1 at w_T (H_D the mean loss Hessian of all n rows).

Step 0 (no retained row read). The retained optimum w_R = w_T + Delta is the root of
S(Delta) = G_R(w_T + Delta) + m lambda M (w_T + Delta). Linearised at w_T it needs only the history
and the forgotten rows:

    S(Delta) ~= b + J_0 Delta,      b = G_D(w_T) - G_U(w_T) + m lambda M w_T = S(0) exactly,
                                   J_0 = n P^-1 - K,   K = H_U(w_T) + r lambda M,

and n P^-1 - K = H_R(w_T) + m lambda M exactly for the ``exact`` profile: Delta_0 = -J_0^-1 b is
the exact Newton step on F_R from w_T. It is the fixed point of the contraction
Phi(x) = (P/n)(K x - b), solved by Anderson-accelerated iteration over the forgotten rows.

Refinement (``tol`` or ``refine``). Newton-CG on F_R itself, preconditioned by P, globalised by
an Armijo line search (the step to Delta_0 included), stopping as soon as the self-concordance
certificate proves ||w - w_R|| <= tol ||w - w_T|| (:mod:`miniunlearn.solvers.certified_newton`).
``refine = k`` instead spends a fixed budget of k passes over R and reports the certificate it
reached; ``refine = 0`` reads no retained row and certifies nothing.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch

from miniunlearn.core.errors import InputError
from miniunlearn.core.params import Interval, Param
from miniunlearn.methods.base import UnlearnContext, UnlearningMethod, register
from miniunlearn.models import CachedCurvature, Objective, Rows
from miniunlearn.solvers.certificate import self_concordance_constant
from miniunlearn.solvers.certified_newton import ARMIJO, certified_newton_cg
from miniunlearn.solvers.fixed_point import anderson

FORGET_CHUNK_ROWS = 2048  # small enough that a chunk stays in cache between its two products
DEFAULT_TOL = 1e-3
# Step 0 costs two passes over U per fixed-point iteration; once U is more than a quarter of R it
# costs more than the few passes over R it saves (measured on Fashion-MNIST), so tol-driven runs
# start their Newton-CG at w_T instead.
STEP0_MAX_SHARE = 0.25


def forget_curvature(ctx: UnlearnContext, theta_T: torch.Tensor) -> CachedCurvature:
    """The forgotten rows at w_T, kept in memory with their probabilities: G_U(w_T), L_U(w_T) and
    H_U(w_T) products.

    Memory: r (d + C) floats for this process's share of the r forgotten rows. Its passes are
    counted on its own rows (``cache.rows``); add them to the context's when done.
    """
    counted = ctx.forget_rows
    rows = Rows(counted.X_source, counted.y_source, counted.ids, chunk_rows=FORGET_CHUNK_ROWS,
                workers=counted.workers, materialize=False)
    return CachedCurvature(ctx.model, rows, theta_T, keep_rows=True, grad=True, loss=True)


class HistoryPreconditioner:
    """Applies P ~= (H_D + lambda M)^-1 from the history's curvature profile."""

    def __init__(self, history, penalty):
        self.profile = history.profile
        self.apply = history.preconditioner(penalty)


def solve_surrogate(preconditioner: HistoryPreconditioner, forget: CachedCurvature, penalty, n: int, rhs: torch.Tensor,
                    tol: float, max_iter: int, depth: int, progress=None):
    """``J_0^-1 rhs`` with J_0 = n P^-1 - H_U(w_T) - r lambda M, as the fixed point of
    x = (P/n)(H_U x + r lambda M x + rhs); returns the solver's result (x, iterations, estimates)."""
    r = len(forget.rows)

    def phi(x):
        return preconditioner.apply(forget.hvp_sum(x) + r * penalty.grad(x) + rhs) / n

    return anderson(phi, torch.zeros_like(rhs), tol, max_iter, depth, progress=progress)


@register
class MiniUnlearning(UnlearningMethod):
    """Mini-Unlearning (see the module docstring for the formulas)."""

    name = "mini"
    summary = ("contraction fixed point on the minimal history, then certified Newton-CG passes over R "
               "until ||w - w_R|| <= tol ||w - w_T|| is proven")
    modes = ("converged",)

    parameters = {
        "tol": Param(None, Interval(Real, 1e-12, 1, closed="right"), None,
                     help=f"refine until the certificate is <= tol * ||w - w_T||; None: {DEFAULT_TOL:g} unless "
                          "refine is given"),
        "refine": Param(None, Interval(Integral, 0, 1000), None,
                        help="a fixed budget of passes over R instead of tol (0: read no retained row, no certificate)"),
        "max_passes": Param(1000, Interval(Integral, 1, 100_000), help="tol: passes over R at most"),
        "fixed_point_tol": Param(1e-5, Interval(Real, 0, 1, closed="neither"),
                                 help="step 0: relative stop of the fixed-point iteration (its error estimate)"),
        "max_iter": Param(300, Interval(Integral, 1, 100_000), help="step 0: fixed-point iterations at most"),
        "anderson_depth": Param(8, Interval(Integral, 0, 100), help="step 0: Anderson acceleration memory"),
    }

    def __init__(self, **options):
        super().__init__(**options)
        if self.tol is not None and self.refine is not None:
            raise InputError(f"method 'mini': give tol (refine until certified) or refine (a fixed budget of "
                             f"passes), not both (got tol={self.tol:g}, refine={self.refine})")

    def unlearn(self, ctx: UnlearnContext):
        history = ctx.mini_history()
        penalty = ctx.penalty
        n, r = history.n, len(ctx.forget_ids)
        m = n - r
        theta_T = history.theta
        preconditioner = HistoryPreconditioner(history, penalty)
        stats: dict = {"curvature_profile": history.profile}
        # (an approximate profile's step 0 costs one pass over U only, so it is always taken)
        refine_only = self.refine is None and r > m * STEP0_MAX_SHARE and history.is_exact
        step0 = None
        if not refine_only:
            forget = forget_curvature(ctx, theta_T)
            b = history.grad_sum - forget.grad_sum + m * penalty.grad(theta_T)  # S(0) = m grad F_R(w_T), exact
            step0 = self._step0(preconditioner, forget, penalty, history, b, m, stats, ctx.progress)
            ctx.forget_rows.rows_read += forget.rows.rows_read
        if self.refine == 0:
            return theta_T + step0, {**stats, "certificate": None}
        tol = None if self.refine is not None else (DEFAULT_TOL if self.tol is None else self.tol)
        max_passes = self.max_passes if self.refine is None else self.refine
        if not penalty.penalize_intercept:
            self._check_free_intercept(ctx)
        objective = Objective(ctx.model, ctx.retained_rows, penalty)
        # When R is the smaller part, the history's curvature (of all rows) says little about F_R's:
        # precondition by the Jacobi diagonal of each iterate instead.
        jacobi = r > m
        if step0 is None:  # many rows are forgotten: Newton-CG on F_R from w_T (step 0 would cost more than it saves)
            start, w_start = objective.curvature(theta_T, diag=jacobi, value=True, row_norm=True), theta_T
            stats["start"] = "w_T"
        else:
            start, w_start = self._globalised_step0(objective, forget, history, theta_T, step0, b, m, stats, jacobi)
            stats["start"] = "step 0"
        R = self_concordance_constant(start.cache.max_row_norm)
        stats["preconditioner"] = "jacobi" if jacobi else f"history ({history.profile})"
        result = certified_newton_cg(objective, None if jacobi else preconditioner.apply, w_start, theta_T,
                                     R=R, tol=tol,
                                     max_passes=max_passes - objective.passes, start=start, progress=ctx.progress)
        moved = float((result.w - theta_T).norm())
        stats.update(certificate=result.certificate,
                     certified_relative=result.certificate / moved if moved > 0 else float("inf"),
                     converged=result.converged if tol is not None else True, tol=tol,
                     newton_iterations=result.newton_iterations, cg_iterations=result.cg_iterations,
                     refine_stop=result.stop, self_concordance_constant=R)
        if tol is not None and not result.converged:
            relative = stats["certified_relative"]
            reached = (f"= {relative:.3g} x ||w - w_T||" if np.isfinite(relative) else "(no step from w_T certified yet)")
            stats["failure"] = (f"certificate {result.certificate:.3g} {reached} after {objective.passes:.0f} passes "
                                f"over the retained rows; tol {tol:g} not reached (raise max_passes)")
        return result.w, stats

    @staticmethod
    def _check_free_intercept(ctx: UnlearnContext) -> None:
        """With an unpenalised intercept a class with no retained row has no optimal bias (it tends to
        minus infinity), and the certificate needs the dense curvature (small models only)."""
        present = np.unique(np.asarray(ctx.dataset.y_train)[ctx.retained_ids])
        if len(present) < ctx.model.n_classes:
            raise InputError(f"with an unpenalised intercept every class needs a retained row; after this request "
                             f"only {len(present)} of {ctx.model.n_classes} classes remain")

    def _step0(self, preconditioner, forget, penalty, history, b, m, stats, progress):
        """Delta_0 = -J_0^-1 b by the contraction over the forgotten rows (exact profile), or the
        influence step -P b / m (an approximate P makes n P^-1 - H_U a poor model of the retained
        Hessian and the contraction can diverge; m P^-1 models it as m times the full one)."""
        if not history.is_exact:
            stats.update(iterations=0)
            return -penalty.project(preconditioner.apply(b)) / m
        fixed = solve_surrogate(preconditioner, forget, penalty, history.n, b, self.fixed_point_tol, self.max_iter,
                                self.anderson_depth, progress)
        stats.update(iterations=fixed.iterations, contraction_estimate=fixed.contraction_factor,
                     fixed_point_error_estimate=fixed.banach_bound, fixed_point_converged=fixed.converged)
        return -fixed.x

    @staticmethod
    def _globalised_step0(objective: Objective, forget: CachedCurvature, history, theta_T, step0, b, m, stats,
                          diag: bool = False):
        """Accept w_T + t step0 with the largest t in 1, 1/2, ... that passes Armijo's test on F_R.

        F_R(w_T) and grad F_R(w_T) = b/m come from the history and the forgotten rows (no pass over R)
        when the history holds L_D(w_T); otherwise one pass computes them. ``diag``: also the Hessian
        diagonal at the accepted point (for a Jacobi preconditioner).
        """
        penalty = objective.penalty
        if history.loss_sum is not None:
            value_T = (history.loss_sum - forget.loss_sum) / m + penalty.value(theta_T)
        else:
            value_T = objective.curvature(theta_T, diag=False, value=True).value
        slope = float((b / m) @ step0)
        t = 1.0
        while True:
            point = theta_T + t * step0
            here = objective.curvature(point, diag=diag, value=True, row_norm=True)
            if here.value <= value_T + ARMIJO * t * slope or t < 1e-8:
                stats["first_step_length"] = t
                return here, point
            t *= 0.5
