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
``refine = k`` is the fixed-budget form of ``tol``: k passes over R, returning the furthest point
reached with its certificate; ``refine = 0`` reads no retained row (certified where the history's
retained Hessian at w_T bounds step 0 alone: docs, "Certificates without a pass over R").
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import torch

from miniunlearn.core.errors import InputError
from miniunlearn.core.params import Interval, Options, Param
from miniunlearn.methods.interface import UnlearnContext, UnlearningMethod, register
from miniunlearn.models import CachedCurvature, Objective, Rows
from miniunlearn.solvers.certificate import (
    NewtonCertificate,
    logit_span_bound,
    newton_certificate,
    self_concordance_constant,
)
from miniunlearn.solvers.certified_newton import ARMIJO, PASS_KINDS, certified_newton_cg
from miniunlearn.solvers.fixed_point import anderson

FORGET_CHUNK_ROWS = 2048  # small enough that a chunk stays in cache between its two products
DEFAULT_TOL = 1e-3
# Step 0 costs a pass over U and a product with P per fixed-point iteration; once U is more than a quarter of R it
# costs more than the few passes over R it saves (measured on Fashion-MNIST), so tol-driven runs
# start their Newton-CG at w_T instead. So do requests that empty a class (exact profiles).
STEP0_MAX_SHARE = 0.25
# The chord step (a second solve with the history's retained Hessian at w_T, over U, after the first
# pass) certifies small deletions after one pass over R; it costs as much as step 0, which stops
# paying once U is more than this share of R (Newton-CG then needs a few products anyway). It is taken
# only where its certificate can stop the solve (a float64 P with its measured defect): as a mere first
# guess for CG it cost more than it saved (Fashion-MNIST, P in float32, 1 % at random, three seeds:
# 0.24-0.25 s of compute without it against 0.26-0.29 s with it at l2 1e-3, 0.34-0.48 s against
# 0.51-0.57 s at 1e-4, one pass fewer on one seed; 0.5 % at 1e-3: 2 passes against 3).
CHORD_MAX_SHARE = 0.02
CHORD_TOL = 1e-8  # the chord solve's relative fixed-point stop (its residual enters the certificate exactly)
# Step 0's fixed point stops no tighter than this many machine epsilons of P's storage: below it a float32 P's
# rounding is all the iteration sees, and it ran on to its stall stop instead (Fashion-MNIST 1 %, l2 1e-4: 71
# iterations, +0.9 s, at fixed_point_tol 3e-7 = 2.5 eps; 11 iterations at 1e-6). The passes over R that follow
# start from wherever step 0 lands, and the certificate never trusts step 0's own tolerance.
STEP0_EPS_FACTOR = 16.0
# Up to this share of the training rows forgotten, the retained rows are read in place with the forgotten ones
# left out (``ctx.retained_in_place``) instead of copied: every pass then reads r/m more rows, while the copy
# costs about two passes (Fashion-MNIST: 0.1 s for 54,000 rows, a pass 0.05 s), and requests this small are
# certified in well under ten passes. Not for a class emptied or R the smaller part: those take tens of passes.
# A pass costs about C times a row's bytes per row (two GEMMs with the C classes), the copy only its bytes, so
# with many classes the copy pays sooner: at most IN_PLACE_CLASS_SHARE / C of the rows, too (p = 100,100 with
# C = 100: 10 % forgotten took 3.0 s copied against 3.4 s in place, 1 % 2.2 s in place against 2.4 s copied).
IN_PLACE_MAX_SHARE = 0.15
IN_PLACE_CLASS_SHARE = 1.5
# ``products="auto"`` runs CG's products over R in float32 (checked by one float64 product before a point is
# certified) where they repay the float32 copy of R and the check. From this many classes up a pass is two GEMMs
# that float32 runs at about twice the speed (p = 100,100, C = 100: 0.15 s against 0.29 s a product; 10 %
# forgotten: 2.95 s against 3.43 s, 1 %: 2.39 s against 2.62 s, medians of 8). With few classes a pass is
# bound by reading the rows and the copy costs about a pass: Fashion-MNIST's small requests, read in place,
# took longer (1 %: 0.38 s against 0.31 s), its larger ones, R copied, less (50 % at l2 1e-4: 0.78 s against
# 0.88 s; class 0: 1.59 s against 1.86 s). So below this many classes only requests that copy R use it, and only
# on R of at least SINGLE_MIN_VALUES features: on small sets a pass costs next to nothing either way, while float32
# rounding can cost products where CG runs long (digits at l2 1e-5, 30-90 % forgotten: 6-23 more products, 4-15 %).
SINGLE_MIN_CLASSES = 20
SINGLE_MIN_VALUES = 1 << 22


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


def emptied_class_preconditioner(apply, classes, block_size: int):
    """The history's P on the classes that keep retained rows and, on each class that keeps none,
    the iterate's own Jacobi diagonal (the coupling between the two parts dropped): built anew at
    every iterate from its curvature (``here.diag``), for ``certified_newton_cg(refresh=...)``.

    Such a class has no data term of its own in F_R: its block's curvature is what the other
    classes' rows give it through p_ic (1 - p_ic), and that falls exponentially as its logits fall
    along the path, while P (all rows, at w_T) still holds the class's own rows' curvature and
    undersizes every step in its block. The result is symmetric positive definite: a principal
    block of P beside a positive diagonal.
    """
    blocks = [slice(int(c) * block_size, (int(c) + 1) * block_size) for c in classes]

    def at(here):
        diagonal = here.diag

        def precondition(v: torch.Tensor) -> torch.Tensor:
            kept = v.clone()
            for block in blocks:
                kept[block] = 0.0
            out = apply(kept)
            for block in blocks:
                out[block] = v[block] / diagonal[block]
            return out

        return precondition

    return at


@dataclass
class SurrogateStep:
    """x ~= J^-1 rhs for J = n P^-1 - K (K = H_U(w_T) + r lambda M; J = m Hess F_R(w_T) for the exact
    profile), with what a certificate needs and no pass over R: x = phi(previous) gives
    n P^-1 x = K previous + rhs (``image``) and J x - rhs = K (previous - x) (``residual``) exactly
    for the stored P."""

    x: torch.Tensor
    residual: torch.Tensor
    image: torch.Tensor
    fixed: object  # the fixed-point solver's result


def surrogate_step(preconditioner, forget: CachedCurvature, penalty, n: int, rhs: torch.Tensor, tol: float,
                   max_iter: int, depth: int, progress=None) -> SurrogateStep:
    """:func:`solve_surrogate` and its exact residual (two more products over the forgotten rows)."""
    fixed = solve_surrogate(preconditioner, forget, penalty, n, rhs, tol, max_iter, depth, progress)
    r = len(forget.rows)
    K_previous = forget.hvp_sum(fixed.previous) + r * penalty.grad(fixed.previous)
    K_x = forget.hvp_sum(fixed.x) + r * penalty.grad(fixed.x)
    return SurrogateStep(fixed.x, K_previous - K_x, K_previous + rhs, fixed)


def reference_certificate(step: SurrogateStep, rhs: torch.Tensor, m: int, defect: float, point: torch.Tensor,
                          mu: float, R: float, span: float, drift: float = 0.0) -> NewtonCertificate:
    """The certificate of the step D = -x at ``point`` (gradient rhs / m) measured with the history's
    retained Hessian at w_T, J / m, instead of the Hessian at ``point``: ``drift`` bounds the logit
    change from w_T to ``point`` on every retained row, ``span`` that of D.

    The stored P is trusted up to its measured ``defect`` >= ||A P - I|| (A = H_D + lambda M):
    (J_true - J) x = n (A - P^-1) x = F (n P^-1 x), so ||.|| <= defect ||image|| enlarges the residual
    and x^T J x (docs/mini-unlearning.md, "Certificates without a pass over R").
    """
    x = step.x
    slack = defect * float(step.image.norm())
    residual = (float(step.residual.norm()) + slack) / m
    curvature = (float(x @ (rhs + step.residual)) + float(x.norm()) * slack) / m
    hd_norm = (float((rhs + step.residual).norm()) + slack) / m
    return newton_certificate(float(x.norm()), curvature, residual, span, float(rhs.norm()) / m, hd_norm, R, mu,
                              float(point.norm()), drift=drift)


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
                        help="the fixed-budget form of tol: k passes over R, the furthest point reached with its "
                             "certificate (0: read no retained row; certified where the history bounds step 0)"),
        "max_passes": Param(1000, Interval(Integral, 1, 100_000), help="tol: passes over R at most"),
        "fixed_point_tol": Param(1e-5, Interval(Real, 0, 1, closed="neither"),
                                 help="step 0: relative stop of the fixed-point iteration (its error estimate; no "
                                      "tighter than 16 machine epsilons of the history's P: 1.9e-6 in float32)"),
        "max_iter": Param(300, Interval(Integral, 1, 100_000), help="step 0: fixed-point iterations at most"),
        "anderson_depth": Param(8, Interval(Integral, 0, 100), help="step 0: Anderson acceleration memory"),
        "products": Param("auto", Options(("auto", "float64", "float32")),
                          help="precision of CG's Hessian-vector products over R with tol (float32: about half "
                               "the time with many classes, every certified point checked by one float64 "
                               f"product; auto: float32 from {SINGLE_MIN_CLASSES} classes up, or where R is "
                               f"copied and has at least {SINGLE_MIN_VALUES:,} feature values)"),
    }

    def __init__(self, **options):
        super().__init__(**options)
        if self.tol is not None and self.refine is not None:
            raise InputError(f"method 'mini': give tol (refine until certified) or refine (a fixed budget of "
                             f"passes), not both (got tol={self.tol:g}, refine={self.refine})")

    def unlearn(self, ctx: UnlearnContext):
        loading = time.perf_counter()
        history = ctx.mini_history()
        loading = time.perf_counter() - loading
        penalty = ctx.penalty
        n, r = history.n, len(ctx.forget_ids)
        m = n - r
        theta_T = history.theta
        preconditioner = HistoryPreconditioner(history, penalty)
        passes = dict.fromkeys(PASS_KINDS, 0.0)
        stats: dict = {"curvature_profile": history.profile, "passes_by_kind": passes, "history_load_s": loading}
        tol = None if self.refine is not None else (DEFAULT_TOL if self.tol is None else self.tol)
        budget = self.max_passes if self.refine is None else self.refine
        # When R is the smaller part, the history's curvature (of all rows) says little about F_R's:
        # precondition by the Jacobi diagonal of each iterate instead.
        jacobi = r > m
        # A class left without retained rows: its block follows the iterate's diagonal instead of P
        emptied = [] if jacobi else self._emptied_classes(ctx)
        # (an approximate profile's step 0 costs one pass over U only, so it is always taken)
        refine_only = self.refine is None and history.is_exact and (r > m * STEP0_MAX_SHARE or bool(emptied))
        # the history's retained Hessian at w_T certifies steps without a pass over R (exact profiles
        # with a measured defect, every parameter penalised: lambda bounds the curvature everywhere)
        mu = penalty.strong_convexity
        # The identities behind it hold for P applied in float64: a P stored in float32 is applied in float32,
        # whose rounding its measured defect does not cover, so only the passes certify there
        referenced = (history.is_exact and history.curvature_defect is not None and mu > 0
                      and history.curvature_eps <= torch.finfo(torch.float64).eps)
        step0 = forget = None
        if not refine_only:
            forget = forget_curvature(ctx, theta_T)
            b = history.grad_sum - forget.grad_sum + m * penalty.grad(theta_T)  # S(0) = m grad F_R(w_T), exact
            step0, surrogate = self._step0(preconditioner, forget, penalty, history, b, m, stats, ctx.progress)
            certificate0 = None
            if referenced and history.max_row_norm is not None and surrogate is not None:
                certificate0 = self._no_pass_certificate(surrogate, b, m, history, theta_T, mu, ctx.model)
            stats["step0_certificate"] = certificate0
            certified0 = certificate0 is not None and math.isfinite(certificate0)
            done = certified0 and tol is not None and certificate0 <= tol * float(step0.norm())
            if done or self.refine == 0:
                ctx.forget_rows.rows_read += forget.rows.rows_read
                return theta_T + step0, self._summary(stats, theta_T + step0, theta_T, certificate0, tol,
                                                      "step 0 certified without a pass over R" if done else
                                                      "refine 0: no pass over R")  # (certified if it can be)
        if not penalty.penalize_intercept:
            self._check_free_intercept(ctx)
        share = min(IN_PLACE_MAX_SHARE, IN_PLACE_CLASS_SHARE / ctx.model.n_classes)
        in_place = r <= share * n and not emptied and not jacobi
        objective = Objective(ctx.model, ctx.retained_in_place if in_place else ctx.retained_rows, penalty)
        stats["retained_read_in_place"] = in_place
        diag = True if jacobi else emptied or False  # the emptied classes' blocks are all their preconditioner reads
        offers, initial_step = [], None
        if step0 is None:  # many rows forgotten, or a class emptied: Newton-CG on F_R from w_T (step 0 would cost
            # more than it saves; an emptied class's curvature collapses along the path, so the Newton step at w_T
            # is a poor start and its fixed point contracts slowly, about 0.8 per iteration on Fashion-MNIST)
            start, w_start = objective.curvature(theta_T, diag=diag, value=True, row_norm=True), theta_T
            passes["gradient"] += objective.passes
            stats["start"] = "w_T"
            R = self_concordance_constant(start.cache.max_row_norm)
        else:
            start, w_start, t = self._globalised_step0(objective, forget, history, theta_T, step0, b, m, stats,
                                                       passes, diag, span=referenced)
            stats["start"] = "step 0"
            R = self_concordance_constant(start.cache.max_row_norm)
            if referenced and t == 1.0:  # step 0 again, with its exact logit span over R from this pass
                offers.append((reference_certificate(surrogate, b, m, history.curvature_defect, theta_T, mu, R,
                                                     start.cache.span).after_step, w_start))
            if referenced and r <= CHORD_MAX_SHARE * m:
                initial_step = self._chord(preconditioner, forget, penalty, history, start, w_start,
                                           t * start.cache.span, m, mu, R, offers, stats, ctx.progress)
            elif tol is None and not jacobi:  # a fixed budget: every pass moves; this one by the history's step
                initial_step = -penalty.project(preconditioner.apply(start.grad))
                offers.append((math.inf, w_start + initial_step))
        if forget is not None:
            ctx.forget_rows.rows_read += forget.rows.rows_read
        stats["preconditioner"] = "jacobi" if jacobi else f"history ({history.profile})"
        refresh = None
        if emptied:
            refresh = emptied_class_preconditioner(preconditioner.apply, emptied, ctx.model.n_features + 1)
            stats["preconditioner"] += f"; the iterate's diagonal on classes without retained rows {emptied}"
        single = self._single(ctx, tol, in_place, objective.rows)
        stats["cg_products"] = "float32, checked in float64" if single else "float64"
        result = certified_newton_cg(objective, None if jacobi else preconditioner.apply, w_start, theta_T,
                                     R=R, tol=tol, max_passes=budget - objective.passes, start=start,
                                     progress=ctx.progress, offers=offers, initial_step=initial_step,
                                     refresh=refresh, refresh_diag=diag, single=single, separate=emptied)
        for kind, count in result.passes.items():
            passes[kind] += count
        summary = self._summary(stats, result.w, theta_T, result.certificate, tol, result.stop)
        summary.update(newton_iterations=result.newton_iterations, cg_iterations=result.cg_iterations,
                       self_concordance_constant=R)
        if tol is not None and not result.converged:
            relative = summary["certified_relative"]
            reached = (f"= {relative:.3g} x ||w - w_T||" if relative is not None and np.isfinite(relative)
                       else "(no step from w_T certified yet)")
            certificate = "none" if result.certificate is None else f"{result.certificate:.3g}"
            summary["failure"] = (f"certificate {certificate} {reached} after {objective.passes:.0f} passes "
                                  f"over the retained rows; tol {tol:g} not reached (raise max_passes)")
        return result.w, summary

    def _single(self, ctx: UnlearnContext, tol, in_place: bool, rows: Rows) -> bool:
        """Whether CG's products over ``rows`` (R) run in float32 (``products``; only a tolerance checks them)."""
        if tol is None or self.products == "float64":
            return False
        if self.products == "float32" or ctx.model.n_classes >= SINGLE_MIN_CLASSES:
            return True
        # rows cast afresh at every pass, or few, do not repay it
        return not in_place and rows.keeps_single and len(rows) * rows.n_features >= SINGLE_MIN_VALUES

    @staticmethod
    def _summary(stats: dict, w: torch.Tensor, theta_T: torch.Tensor, certificate, tol, stop: str) -> dict:
        """The result's certificate fields: ``certificate`` (None when nothing was certified),
        ``certified_relative`` = certificate / ||w - w_T||, ``converged`` (the tolerance reached; None for
        a fixed budget, which promises no tolerance: its certificate says how close it landed)."""
        moved = float((w - theta_T).norm())
        finite = certificate is not None and math.isfinite(certificate)
        relative = certificate / moved if finite and moved > 0 else float("inf")
        converged = None if tol is None else bool(finite and certificate <= tol * moved)
        return {**stats, "certificate": certificate if finite else None,
                "certified_relative": relative if finite else None, "converged": converged, "tol": tol,
                "refine_stop": stop}

    @staticmethod
    def _no_pass_certificate(surrogate, b, m, history, theta_T, mu, model) -> float:
        """The bound on ||w_T + Delta_0 - w_R|| from the forgotten rows and the history alone: the
        certificate of the Newton step at w_T with the history's retained Hessian, the logit span of
        Delta_0 bounded by norms (docs/mini-unlearning.md)."""
        R = self_concordance_constant(history.max_row_norm)
        span = logit_span_bound(surrogate.x, model.n_classes, history.max_row_norm)
        return reference_certificate(surrogate, b, m, history.curvature_defect, theta_T, mu, R, span).after_step

    def _chord(self, preconditioner, forget, penalty, history, here, w, drift, m, mu, R, offers, stats, progress):
        """The step -J^-1 (m grad F_R(w)) with the history's retained Hessian J at w_T (a chord Newton
        step; no pass over R), certified with the logit ``drift`` from w_T and the history's measured
        defect. Appends w and w + step to ``offers``; the step is also CG's first guess of the Newton
        step at w."""
        rhs = m * here.grad
        chord = surrogate_step(preconditioner, forget, penalty, history.n, rhs, CHORD_TOL, self.max_iter,
                               self.anderson_depth, progress)
        stats["chord_iterations"] = chord.fixed.iterations
        span = logit_span_bound(chord.x, forget.model.n_classes, here.cache.max_row_norm)
        bound = reference_certificate(chord, rhs, m, history.curvature_defect, w, mu, R, span, drift=drift)
        stats["chord_certificate"] = bound.after_step
        offers += [(bound.at_point, w), (bound.after_step, w - chord.x)]
        return -chord.x

    @staticmethod
    def _rows_per_class(ctx: UnlearnContext) -> tuple[np.ndarray, np.ndarray]:
        """Training rows and retained rows per class after this request: class counts, O(n) (no sort,
        no retained ids, so a request that reads no retained row does not pay for them either)."""
        y = np.asarray(ctx.dataset.y_train)
        C = ctx.model.n_classes
        training = np.bincount(y, minlength=C)
        return training, training - np.bincount(y[ctx.forget_ids], minlength=C)  # ids are unique

    @classmethod
    def _retained_classes(cls, ctx: UnlearnContext) -> np.ndarray:
        """The classes that keep at least one retained row after this request."""
        return np.flatnonzero(cls._rows_per_class(ctx)[1] > 0)

    @classmethod
    def _emptied_classes(cls, ctx: UnlearnContext) -> list[int]:
        """The classes that had training rows and keep none after this request."""
        training, retained = cls._rows_per_class(ctx)
        return [int(c) for c in np.flatnonzero((training > 0) & (retained == 0))]

    @classmethod
    def _check_free_intercept(cls, ctx: UnlearnContext) -> None:
        """With an unpenalised intercept a class with no retained row has no optimal bias (it tends to
        minus infinity), and the certificate needs the dense curvature (small models only)."""
        present = cls._retained_classes(ctx)
        if len(present) < ctx.model.n_classes:
            raise InputError(f"with an unpenalised intercept every class needs a retained row; after this request "
                             f"only {len(present)} of {ctx.model.n_classes} classes remain")

    def _step0(self, preconditioner, forget, penalty, history, b, m, stats, progress):
        """Delta_0 = -J_0^-1 b by the contraction over the forgotten rows (exact profile), or the
        influence step -P b / m (an approximate P makes n P^-1 - H_U a poor model of the retained
        Hessian and the contraction can diverge; m P^-1 models it as m times the full one).
        Returns Delta_0 and the surrogate solve (None for the influence step)."""
        if not history.is_exact:
            stats.update(iterations=0)
            return -penalty.project(preconditioner.apply(b)) / m, None
        tol = max(self.fixed_point_tol, STEP0_EPS_FACTOR * history.curvature_eps)
        step = surrogate_step(preconditioner, forget, penalty, history.n, b, tol, self.max_iter,
                              self.anderson_depth, progress)
        fixed = step.fixed
        stats.update(iterations=fixed.iterations, fixed_point_tol=tol, contraction_estimate=fixed.contraction_factor,
                     fixed_point_error_estimate=fixed.banach_bound, fixed_point_converged=fixed.converged)
        return -step.x, step

    @staticmethod
    def _globalised_step0(objective: Objective, forget: CachedCurvature, history, theta_T, step0, b, m, stats, passes,
                          diag: bool | list[int] = False, span: bool = False):
        """Accept w_T + t step0 with the largest t in 1, 1/2, ... that passes Armijo's test on F_R.

        F_R(w_T) and grad F_R(w_T) = b/m come from the history and the forgotten rows (no pass over R)
        when the history holds L_D(w_T); otherwise one pass computes them. ``diag``: also the Hessian
        diagonal at the accepted point (True: every block, for a Jacobi preconditioner; a list of
        classes: theirs, for the emptied-class preconditioner); ``span``: also the logit span of
        step0 over R (for its certificate). Returns the curvature there, the point and t.
        """
        penalty = objective.penalty
        if history.loss_sum is not None:
            value_T = (history.loss_sum - forget.loss_sum) / m + penalty.value(theta_T)
        else:
            value_T = objective.curvature(theta_T, diag=False, value=True).value
            passes["line_search"] += 1
        slope = float((b / m) @ step0)
        t = 1.0
        while True:
            point = theta_T + t * step0
            here = objective.curvature(point, diag=diag, value=True, row_norm=True, span_of=step0 if span else None)
            if here.value <= value_T + ARMIJO * t * slope or t < 1e-8:
                passes["gradient"] += 1
                stats["first_step_length"] = t
                return here, point, t
            passes["line_search"] += 1
            t *= 0.5
