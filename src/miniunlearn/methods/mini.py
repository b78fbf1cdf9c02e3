"""Mini-Unlearning: unlearning from a minimal history by a contraction fixed point.

Notation (docs/mini-unlearning.md): n training rows, forget set U with r rows, retained set R, L2
strength lambda, w_T the trained optimum, G_S(w) = sum_{i in S} grad l_i(w). The history holds
w_T, G_D(w_T) and a curvature model P ~= (H_D + lambda I)^-1 at w_T, where H_D is the mean loss
Hessian (``exact`` profile: P is that matrix; ``minimal`` profile: its inverse from a low-rank
plus diagonal summary, at most 64 vectors of p).

The retained optimum w_R = w_T + Delta is the root of the retained sum-gradient

    S(Delta) = G_R(w_T + Delta) + (n - r) lambda (w_T + Delta).

Surrogate (refine = 0). Linearising S at w_T needs only the history and the forgotten rows:

    S(Delta) ~= b + J_0 Delta,      b = G_D(w_T) - G_U(w_T) + (n - r) lambda w_T = S(0),
                                   J_0 = n P^-1 - K,   K = H_U(w_T) + r lambda I,

because n P^-1 - K = n H_D + n lambda - H_U - r lambda = H_R(w_T) + (n - r) lambda I exactly.
H_U(w_T) = sum_{i in U} Hess l_i(w_T) is applied from the forgotten rows in chunks. The root
Delta = -J_0^-1 b is the fixed point of the contraction

    Phi(Delta) = (P / n) (K Delta - b),

whose Jacobian (P/n)(H_U + r lambda I) is similar to a symmetric matrix with eigenvalues in
[0, q], q < 1 (about the forgotten share of the curvature). Each evaluation is one product with P
and two products with the forgotten rows. Anderson acceleration reaches the fixed point in a
handful of evaluations; iteration stops on the a-posteriori Banach bound q/(1-q)||Phi(x) - x||,
with q measured from the iterates (Ritz values). No retained row is read.

Refine passes (refine = k). Pass j computes the exact g_j = S(Delta_j) (one pass over R),
updates the curvature model by the BFGS secant pair (s_j = Delta_j - Delta_{j-1},
y_j = g_j - g_{j-1}), which makes it exact along the path actually travelled, and steps
Delta_{j+1} = Delta_j - J_j^-1 g_j. J_j = J_0 + low rank is inverted by Woodbury, so each pass
costs one pass over R and one more fixed-point solve with J_0. After k >= 1 passes

    ||w - w_R|| <= ||Delta_{k+1} - Delta_k|| + ||grad F_R(w_T + Delta_k)|| / lambda      (certificate)

holds by lambda-strong convexity of F_R.
"""

from __future__ import annotations

from numbers import Integral, Real

import torch

from miniunlearn.core.params import Interval, Param
from miniunlearn.methods.base import UnlearnContext, UnlearningMethod, register
from miniunlearn.models import CachedCurvature, Objective, Rows
from miniunlearn.solvers.fixed_point import anderson

FORGET_CHUNK_ROWS = 2048  # small enough that a chunk stays in cache between its two products


def forget_curvature(ctx: UnlearnContext, theta_T: torch.Tensor) -> CachedCurvature:
    """The forgotten rows at w_T, kept in memory with their probabilities: G_U(w_T) and H_U(w_T) products.

    Memory: r (d + C) floats for this process's share of the r forgotten rows. Its passes are
    counted on its own rows (``cache.rows``); add them to the context's when done.
    """
    counted = ctx.forget_rows
    rows = Rows(counted.X_source, counted.y_source, counted.ids, chunk_rows=FORGET_CHUNK_ROWS,
                workers=counted.workers, materialize=False)
    return CachedCurvature(ctx.model, rows, theta_T, keep_rows=True, grad=True)


class Curvature:
    """Applies P ~= (H_D + lambda I)^-1 from the history's curvature profile."""

    def __init__(self, history):
        self.profile = history.profile
        lam = history.l2
        if self.profile == "exact":
            self.P = history.tensors["precond"].to(torch.float64)
        else:
            # Woodbury on D + V Lambda V^T with D = diag(remaining diagonal) + lambda
            V = history.tensors["basis"].to(torch.float64)  # (k, p), orthonormal rows
            eig = history.tensors["eigvals"].to(torch.float64).clamp_min(0.0)
            diag = history.tensors["diag"].to(torch.float64)
            rest = (diag - (V * V).T @ eig).clamp_min(0.0)
            self.Dinv = 1.0 / (rest + lam)
            self.V = V
            core = torch.diag(1.0 / eig.clamp_min(1e-300)) + (V * self.Dinv) @ V.T
            self.core_inv = torch.linalg.inv(core)

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        if self.profile == "exact":
            return self.P @ v
        x = self.Dinv * v
        return x - self.Dinv * (self.V.T @ (self.core_inv @ (self.V @ x)))


class SurrogateSystem:
    """Solves ``J_0 x = rhs`` with J_0 = n P^-1 - H_U(w_T) - r lambda I by the contraction fixed point."""

    def __init__(self, curvature: Curvature, forget: CachedCurvature, n: int, lam: float, tol: float, max_iter: int,
                 depth: int):
        self.curvature, self.forget = curvature, forget
        self.n, self.r, self.lam = n, len(forget.rows), lam
        self.tol, self.max_iter, self.depth = tol, max_iter, depth
        self.solves = []

    def solve(self, rhs: torch.Tensor, start: torch.Tensor | None = None, progress=None) -> torch.Tensor:
        n, r, lam = self.n, self.r, self.lam

        def phi(x):
            return self.curvature.apply(self.forget.hvp_sum(x) + r * lam * x + rhs) / n

        x0 = torch.zeros_like(rhs) if start is None else start
        result = anderson(phi, x0, self.tol, self.max_iter, self.depth, progress=progress)
        self.solves.append(result)
        return result.x


@register
class MiniUnlearning(UnlearningMethod):
    """Mini-Unlearning (see the module docstring for the formulas)."""

    name = "mini"
    summary = "contraction fixed point on the minimal history (w_T, G_D, curvature); refine=k exact passes over R"
    modes = ("converged",)

    parameters = {
        "refine": Param(0, Interval(Integral, 0, 100), help="exact passes over R after the fixed point (0 reads none)"),
        "tol": Param(1e-5, Interval(Real, 0, 1, closed="neither"), help="fixed point: relative Banach-estimate stop"),
        "max_iter": Param(300, Interval(Integral, 1, 100_000), help="fixed-point iterations at most"),
        "anderson_depth": Param(8, Interval(Integral, 0, 100), help="Anderson acceleration memory"),
    }

    def unlearn(self, ctx: UnlearnContext):
        history = ctx.mini_history()
        n, r, lam = history.n, len(ctx.forget_ids), history.l2
        theta_T = history.theta
        forget = forget_curvature(ctx, theta_T)
        curvature = Curvature(history)
        b = history.grad_sum - forget.grad_sum + (n - r) * lam * theta_T  # S(0), exact
        stats: dict = {"curvature_profile": history.profile}
        if history.profile == "exact":
            system = SurrogateSystem(curvature, forget, n, lam, self.tol, self.max_iter, self.anderson_depth)
            solve = system.solve
            inv_b = solve(b, progress=ctx.progress)  # J_0^-1 b
            first = system.solves[0]
            stats.update(iterations=first.iterations, contraction_factor=first.contraction_factor,
                         banach_bound=first.banach_bound, converged=first.converged,
                         bound_relative=first.banach_bound / max(float(inv_b.norm()), 1e-300))
        else:
            # The minimal curvature is too coarse for the contraction (measured q > 1 at 10 %), so the
            # retained Hessian is modelled as (n - r)(H_min + lambda I) and used as the initial
            # inverse of the quasi-Newton refine passes.
            system = None

            def solve(v, progress=None):
                return curvature.apply(v) / (n - r)

            inv_b = solve(b)
            stats.update(iterations=0)
        delta = -inv_b
        if self.refine and history.profile == "exact":
            delta, refine_stats = self._refine(ctx, solve, theta_T, delta, b, inv_b, n, r, lam)
            stats.update(refine_stats)
        elif self.refine:
            delta, refine_stats = self._refine_lbfgs(ctx, curvature, theta_T, delta, lam)
            stats.update(refine_stats)
        if system is not None:
            stats["iterations_total"] = sum(s.iterations for s in system.solves)
        ctx.forget_rows.rows_read += forget.rows.rows_read
        return theta_T + delta, stats

    def _refine(self, ctx: UnlearnContext, solve, theta_T, delta, b, inv_b, n, r, lam):
        """BFGS-corrected Newton passes: each one exact retained gradient and one J_0 solve."""
        U_cols, Z_cols, coeffs = [], [], []  # J_k = J_0 + sum c_j u_j u_j^T ; Z = J_0^-1 U
        g_prev, inv_g_prev = b, inv_b
        log = []
        previous = torch.zeros_like(delta)  # Delta_0 = 0 is where b = S(0) was taken
        for _ in range(self.refine):
            w = theta_T + delta
            g = self._retained_grad_sum(ctx, w) + (n - r) * lam * w
            inv_g = solve(g)
            s, y = delta - previous, g - g_prev
            ys, sg = float(y @ s), float(s @ g_prev)
            if ys > 0 and sg < 0:  # BFGS pair: + y y^T / y^T s ; + g g^T / s^T g  (J s = -g_prev)
                U_cols += [y, g_prev]
                Z_cols += [inv_g - inv_g_prev, inv_g_prev]
                coeffs += [1.0 / ys, 1.0 / sg]
            step = inv_g
            if U_cols:
                U, Z = torch.stack(U_cols, 1), torch.stack(Z_cols, 1)
                small = torch.diag(1.0 / torch.tensor(coeffs, dtype=torch.float64)) + U.T @ Z
                step = inv_g - Z @ torch.linalg.solve(small, U.T @ inv_g)
            previous, g_prev, inv_g_prev = delta, g, inv_g
            delta = delta - step
            log.append({"grad_norm": float(g.norm()) / (n - r), "step_norm": float(step.norm())})
        last = log[-1]
        certificate = last["step_norm"] + last["grad_norm"] / lam
        return delta, {"refine_passes": log, "certificate": certificate}

    @staticmethod
    def _retained_grad_sum(ctx: UnlearnContext, w: torch.Tensor) -> torch.Tensor:
        """G_R(w) in one sweep; rows are gathered chunk by chunk (one sweep does not repay a full copy)."""
        counted = ctx.retained_rows
        sweep = Rows(counted.X_source, counted.y_source, counted.ids, counted.chunk_rows, counted.workers,
                     materialize=False)
        total = sweep.map_reduce(lambda X, y: ctx.model.grad_sum(w, X, y))
        counted.rows_read += sweep.rows_read
        return total

    def _refine_lbfgs(self, ctx: UnlearnContext, curvature: Curvature, theta_T, delta, lam, memory: int = 20):
        """Minimal profile: L-BFGS on F_R from the surrogate point, preconditioned by P_min.

        Every objective-and-gradient evaluation is one pass over R (``refine`` of them in all);
        an Armijo backtracking step keeps the objective decreasing.
        """
        objective = Objective(ctx.model, ctx.retained_rows, lam)
        pairs: list[tuple[torch.Tensor, torch.Tensor, float]] = []
        w = theta_T + delta
        value, grad = objective.value_grad(w)
        passes, log = 1, [{"grad_norm": float(grad.norm()), "objective": value}]
        step_norm = float("nan")
        while passes < self.refine:
            direction = -_two_loop(grad, pairs, curvature.apply)
            slope = float(grad @ direction)
            if slope >= 0:  # not a descent direction: restart from the preconditioner
                pairs.clear()
                direction = -curvature.apply(grad)
                slope = float(grad @ direction)
            t = 1.0
            while passes < self.refine:
                trial = w + t * direction
                trial_value, trial_grad = objective.value_grad(trial)
                passes += 1
                if trial_value <= value + 1e-4 * t * slope:
                    break
                t *= 0.5
            else:
                break
            s, y = trial - w, trial_grad - grad
            if float(y @ s) > 1e-12 * float(s.norm() * y.norm()):
                pairs.append((s, y, 1.0 / float(y @ s)))
                pairs[:] = pairs[-memory:]
            step_norm = float(s.norm())
            w, value, grad = trial, trial_value, trial_grad
            log.append({"grad_norm": float(grad.norm()), "objective": value, "step": t})
        certificate = float(grad.norm()) / lam  # w is the point whose gradient was evaluated
        return w - theta_T, {"refine_passes": log, "certificate": certificate, "last_step_norm": step_norm}


def _two_loop(grad: torch.Tensor, pairs, apply_h0) -> torch.Tensor:
    """L-BFGS two-loop recursion: H grad with H0 = ``apply_h0`` and the stored (s, y, 1/y^T s)."""
    q = grad.clone()
    alphas = []
    for s, y, rho in reversed(pairs):
        alpha = rho * float(s @ q)
        alphas.append(alpha)
        q -= alpha * y
    z = apply_h0(q)
    for (s, y, rho), alpha in zip(pairs, reversed(alphas)):
        beta = rho * float(y @ z)
        z += (alpha - beta) * s
    return z
