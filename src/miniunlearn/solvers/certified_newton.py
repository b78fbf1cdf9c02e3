"""Globalised, certified Newton-CG: minimise a strongly convex objective until a proven bound on the
distance to its minimiser is small enough.

Each Newton iteration at w caches the softmax probabilities (the same pass gives F(w) and
grad F(w)), then runs preconditioned conjugate gradients on ``H(w) D = -grad F(w)``. After every
CG iteration the self-concordance certificate (:mod:`miniunlearn.solvers.certificate`) of the
point w + D is evaluated from scalars CG already has (||D||, D^T H D, the residual, the exact
logit span of D), and the solve stops as soon as the point is certified:

    certificate(point) <= tol * ||point - w_ref||        (w_ref: the current base's model w_T)

Otherwise CG stops on an Eisenstat-Walker forcing term, and the step length is the minimiser t*
of F along D, found from the cached probabilities at w and D's per-row logit changes (which the
products formed) without a pass over the rows; Armijo's test on F accepts w + t* D, else
backtracking from t = 1 does: F never increases, so the method converges from any start on any
strongly convex instance (a line-search Newton method with descent directions), and the
certificate, not an iteration count, decides when it is done. Classes named ``separate`` (left
without rows) give D's blocks of theirs a length of their own: the minimiser of F over (a, b) in
w + a D_S + b D_rest, found the same way, is tried first.

The point certified that way, w + D, is returned as it is: its bound is second order in D plus
||residual|| / mu, and it stops the solve the moment it meets the tolerance. An optional *polish*
(``polish=True``) spends more passes to tighten the reported bound: F and its gradient at w + D,
then CG on the Newton system there, so that the bound of the point itself is ||D'|| + (second
order). A tolerance never needs it, so the method does not spend it by default.

With ``single=True`` CG's products run in float32 (about half the time where a pass is GEMM-bound). A
certificate made from them is only an estimate: when it meets the tolerance, one float64 product of D
measures H D, the residual and D's logit changes exactly, and only that certificate is offered
(:class:`_Single`). Values, gradients and the line search's Armijo test stay float64.

Passes are counted by kind (``CertifiedResult.passes``): ``gradient`` (F, its gradient and the
cached curvature at an iterate: the start and every accepted line-search point), ``hvp`` (one
Hessian-vector product, which also certifies w + D when it is float64), ``line_search`` (a rejected
trial point) and ``certificate`` (the float64 check of float32 products, the polish, or
:func:`certify_point`).

Preconditioner: the caller's (the history's curvature at w_T), improved after the first Newton
iteration by the last CG pairs (p_j, H p_j) of the previous one (a limited-memory preconditioner,
Morales & Nocedal 2000). Costs are counted in passes over the rows: one per point whose value is
computed (which also caches the curvature there), one per Hessian-vector product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from miniunlearn.models.curvature import LogitSpan
from miniunlearn.models.objective import Curvature, Objective
from miniunlearn.solvers.certificate import (
    NewtonCertificate,
    gradient_bound,
    newton_certificate,
    rounding_floor,
    self_concordance_constant,
)

ARMIJO = 1e-4
RECYCLED_PAIRS = 30
POLISH_PRODUCTS = 6
LINE_ITERATIONS = 30  # safeguarded Newton on the line: each costs O(rows x classes), no pass
LINE_TOL = 1e-3       # stop at |phi'(t)| <= LINE_TOL |phi'(0)|
LINE_MAX = 64.0       # the longest step tried along a Newton direction
BLOCK_TOL = 1e-9      # the block step lengths: stop when -g^T (Newton step) is below BLOCK_TOL |phi'(0)|
BLOCK_HALVINGS = 12   # damping of a block Newton step: at most this many halvings
FORCING_POWER = 0.5  # CG stops at ||residual|| <= min(0.5, ||g||^power) ||g|| (Eisenstat-Walker)


PASS_KINDS = ("gradient", "hvp", "line_search", "certificate")


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
    passes: dict = field(default_factory=lambda: dict.fromkeys(PASS_KINDS, 0.0))


class _Meter:
    """Attributes the passes over the rows made since the last call to a kind."""

    def __init__(self, objective: Objective, passes: dict):
        self.objective, self.passes = objective, passes
        self.mark = objective.passes

    def charge(self, kind: str) -> None:
        now = self.objective.passes
        self.passes[kind] = self.passes.get(kind, 0.0) + now - self.mark
        self.mark = now


@dataclass
class _Best:
    """The point with the smallest certificate so far, and the furthest point reached (the latest
    offered) with its own certificate."""

    certificate: float
    w: torch.Tensor
    latest: tuple[float, torch.Tensor] | None = None

    def offer(self, certificate: float, w: torch.Tensor) -> bool:
        self.latest = (certificate, w)
        if certificate <= self.certificate:
            self.certificate, self.w = certificate, w
            return True
        return False

    def furthest(self) -> tuple[float, torch.Tensor]:
        """The latest point, certified by its own bound or, when smaller, by the triangle inequality
        through the best-certified point: ||v - w*|| <= c(w) + ||v - w||."""
        if self.latest is None:
            return self.certificate, self.w
        own, point = self.latest
        return min(own, self.certificate + float((point - self.w).norm()) * (1.0 + 1e-12)), point


class _CurvatureBound:
    """The smallest-eigenvalue bound the certificate needs: the penalty's lambda when every
    parameter is penalised (valid everywhere), else the iterate's own (``local``)."""

    def __init__(self, objective: Objective):
        self.global_mu = objective.penalty.strong_convexity
        self.local = not self.global_mu > 0
        self.cached: tuple[Curvature, float] | None = None

    def at(self, here: Curvature) -> float:
        if not self.local:
            return self.global_mu
        if self.cached is None or self.cached[0] is not here:
            self.cached = (here, here.smallest_eigenvalue())
        return self.cached[1]

    def gradient_bound(self, here: Curvature, R: float, w: torch.Tensor) -> float:
        if self.local:
            return math.inf  # ||g|| / mu needs mu along the whole way to w*
        return gradient_bound(float(here.grad.norm()), R, self.global_mu, float(w.norm()))


class _Recycled:
    """``H0`` (the caller's preconditioner) corrected by CG pairs (p, Hp): the L-BFGS two-loop
    recursion with those pairs, symmetric positive definite whenever H0 is. ``project`` keeps the
    result on the subspace the objective is strongly convex on (zero-mean free biases)."""

    def __init__(self, base: Callable[[torch.Tensor], torch.Tensor], project: Callable[[torch.Tensor], torch.Tensor]):
        self.base = base
        self.project = project
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
        return self.project(z)


class _Single:
    """CG's products in float32, each point checked by a float64 product before it is certified.

    A float32 product is rounded to about 1e-7 of ||H|| ||v||; as a term of the certificate that would swamp
    the residual the certificate must prove small, so the certificate made from float32 products is only an
    estimate, which decides when the float64 product of D that certifies is worth its pass. A check that
    falls short halves the share of the target the next estimate of that Newton step must reach; after
    ``MAX_MISSES`` such checks in a solve, or one float32 solve that stalled (float32 rounding then matters: an
    ill-conditioned system), the products go back to float64.
    """

    MAX_MISSES = 2

    def __init__(self, meets: Callable[[float, torch.Tensor], bool], meter: _Meter):
        self.meets, self.meter = meets, meter
        self.share, self.misses = 1.0, 0

    def start_step(self) -> bool:
        """A new Newton step: the full target again; returns whether its products run in float32."""
        self.share = 1.0
        return self.misses < self.MAX_MISSES

    def worth_checking(self, estimate: float, point: torch.Tensor) -> bool:
        return self.meets(estimate / self.share, point)

    def check(self, here: Curvature, D: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """H D and D's logit changes in float64: one pass, charged as a certificate pass."""
        self.meter.charge("hvp")
        out = here.hvp_with_logits(D)
        self.meter.charge("certificate")
        return out

    def checked(self, met: bool) -> None:
        if not met:
            self.share *= 0.5
            self.misses += 1

    def stalled(self) -> None:
        """CG in float32 ended without its estimate meeting the target (out of iterations, or a direction of no
        curvature): float32 rounding stalls CG on an ill-conditioned system, where no check would ever miss.
        The rest of the solve runs in float64."""
        self.misses = self.MAX_MISSES


def certified_newton_cg(objective: Objective, precondition: Callable[[torch.Tensor], torch.Tensor] | None,
                        w_start: torch.Tensor, w_ref: torch.Tensor, *, R: float, tol: float | None,
                        max_passes: float, start: Curvature | None = None, max_cg: int = 200,
                        polish: bool = False, progress=None, offers: tuple = (),
                        initial_step: torch.Tensor | None = None,
                        refresh: Callable[[Curvature], Callable[[torch.Tensor], torch.Tensor]] | None = None,
                        refresh_diag: bool | Sequence[int] = True, single: bool = False,
                        separate: Sequence[int] = ()) -> CertifiedResult:
    """Minimise ``objective`` from ``w_start``; stop when certified to ``tol`` (relative to
    ``||w - w_ref||``) or when ``max_passes`` passes over the rows are spent.

    The certificate's curvature bound is the penalty's strength lambda when every parameter is
    penalised; with a free intercept it is the smallest eigenvalue of each iterate's Hessian on
    zero-mean biases (a dense eigensolve per Newton iterate: small models only), and every step
    is kept on that subspace. ``R`` is the self-concordance constant of the rows.
    ``precondition=None`` uses the Jacobi diagonal of each iterate's Hessian (from the same pass);
    ``refresh`` builds the preconditioner anew at each iterate from its curvature (computed with the
    Hessian diagonal; ``start`` must carry it too) and takes the place of ``precondition``;
    ``refresh_diag``: the classes whose diagonal blocks it reads (True: all).
    ``start`` may hand over the curvature (with value and gradient) already computed at
    ``w_start`` (its pass is then the caller's). ``offers``: points the caller reached after
    ``w_start``, in order, with their certificates ``(certificate, w)`` (inf: not certified by
    themselves); ``initial_step``: a first guess of the Newton step at ``w_start`` (CG starts from it:
    one product to measure its residual). ``single`` (with ``tol``): CG's products in float32, and a point
    certified only after a float64 product of its step has checked the estimate (:class:`_Single`).
    ``separate``: classes whose blocks of each Newton direction get a step length of their own
    (:func:`_block_minimum`; for classes left without rows, whose logits keep falling along the path).

    With ``tol``, returns the point with the smallest certificate. With a fixed budget
    (``tol=None``), returns the furthest point reached (the last CG iterate, line-search point or
    offer), certified by its own bound or through the best-certified point (triangle inequality).
    """
    passes_at_start = objective.passes
    result = CertifiedResult(w_start, math.inf, False)
    meter = _Meter(objective, result.passes)
    if refresh is None and precondition is None:
        if refresh_diag is not True:
            raise ValueError("the Jacobi preconditioner reads every diagonal block: refresh_diag must be True")
        refresh = _jacobi
    if refresh is not None and not refresh_diag:
        raise ValueError("a refreshed preconditioner reads the Hessian diagonal: refresh_diag must name its blocks")
    local = refresh is not None  # the preconditioner follows the iterate: every pass computes the diagonal (its blocks)
    diag = refresh_diag if local else False
    here = start if start is not None else objective.curvature(w_start, diag=diag, value=True)
    meter.charge("gradient")
    w = w_start
    curvature_bound = _CurvatureBound(objective)
    best = _Best(curvature_bound.gradient_bound(here, R, w), w)
    for certificate, point in offers:
        best.offer(certificate, point)
    preconditioner = _Recycled(refresh(here) if local else precondition, objective.penalty.project)

    def certified() -> bool:
        return tol is not None and best.certificate <= tol * float((best.w - w_ref).norm())

    def spent() -> bool:
        return objective.passes - passes_at_start >= max_passes

    def below_rounding() -> bool:
        """The target is smaller than any certificate computable in floating point, and the best
        certificate is already at that limit: more passes cannot help."""
        floor = rounding_floor(R, curvature_bound.at(here), float(best.w.norm()))
        return tol is not None and tol * float((best.w - w_ref).norm()) < floor and best.certificate <= 4 * floor

    checker = None
    if single and tol is not None:
        checker = _Single(lambda certificate, point: certificate <= tol * float((point - w_ref).norm()), meter)
    guess = initial_step
    while not certified() and not spent():
        if below_rounding():
            result.stop = "the tolerance is below what floating-point arithmetic can certify here"
            break
        result.newton_iterations += 1
        mu = curvature_bound.at(here)
        step, stop, along = _newton_step(here, w, preconditioner, best, mu, R, certified, spent, max_cg, result,
                                         mu_is_local=curvature_bound.local, initial=guess, single=checker)
        meter.charge("hvp")
        guess = None
        if progress is not None:
            progress(info=f"Newton {result.newton_iterations}: certificate {best.certificate:.2e}")
        result.log.append({"newton": result.newton_iterations, "grad_norm": float(here.grad.norm()),
                           "cg_stop": stop, "value": here.value, "certificate": best.certificate})
        if stop in ("certified", "budget"):
            break
        first_step = _block_minimum(here, w, step, along, objective.penalty, separate) if separate else None
        here, w = _line_search(objective, here, w, step, best, curvature_bound, R, spent, meter, diag,
                               first=lambda: _line_minimum(here, w, step, along, objective.penalty),
                               first_step=first_step)
        if here is None:
            result.stop = "budget" if spent() else "line search reached floating-point precision"
            break
        if local:
            preconditioner.base = refresh(here)
    if polish and not spent() and best.w is not w:
        _polish(objective, here, best, preconditioner, curvature_bound, R,
                max_passes - (objective.passes - passes_at_start), result)
        meter.charge("certificate")
    result.w, result.certificate, result.converged = best.w, best.certificate, certified()
    if tol is None:
        result.certificate, result.w = best.furthest()
    result.stop = result.stop or ("certified" if result.converged else "budget")
    return result


def _newton_step(here: Curvature, w: torch.Tensor, precondition: _Recycled, best: _Best, mu: float, R: float,
                 certified, spent, max_cg: int, result: CertifiedResult, offer_step: bool = True,
                 mu_is_local: bool = False, initial: torch.Tensor | None = None,
                 single: _Single | None = None) -> tuple[torch.Tensor, str, LogitSpan | None]:
    """Flexible PCG on ``H D = -g`` at w, certifying w and w + D after every product.

    ``offer_step=False`` certifies w alone (the polish). ``initial``: CG starts from this D (its
    product is the first one). ``single``: CG's products run in float32 and the certificate made from them
    is an estimate; once it meets the tolerance, one float64 product of D measures H D, the residual and
    D's logit changes exactly, and only that certificate is offered (if it falls short, CG goes on from the
    exact residual). The CG pairs replace the preconditioner's recycled ones for the next
    Newton iteration. Returns D, why CG stopped, and D's per-row logit changes (None when no
    product was made and D is the preconditioned gradient).
    """
    g = here.grad
    grad_norm = float(g.norm())
    forcing = min(0.5, grad_norm ** FORCING_POWER)
    span = LogitSpan(here.cache)
    D = torch.zeros_like(g)
    residual = -g.clone()  # -(H D + g)

    def bound() -> NewtonCertificate:
        HD = -g - residual
        return newton_certificate(float(D.norm()), float(D @ HD), float(residual.norm()), span.span(),
                                  grad_norm, float(HD.norm()), R, mu, float(w.norm()), mu_is_local)

    def certify(estimated: bool) -> bool:
        """Offer w and w + D with their certificate; an estimated one only once a float64 product of D has
        replaced it (then returns True: CG's residual is that product's)."""
        nonlocal residual
        here_bound = bound()
        replaced = False
        if estimated:
            if spent() or not single.worth_checking(here_bound.after_step, w + D):
                return False
            HD, logits = single.check(here, D)
            residual, replaced = -g - HD, True
            span.replace(logits)
            here_bound = bound()
            single.checked(single.meets(here_bound.after_step, w + D))
        best.offer(here_bound.at_point, w)
        if offer_step:
            best.offer(here_bound.after_step, w + D)
        return replaced

    if initial is not None and not spent():
        HD0, logits = here.hvp_with_logits(initial)
        result.cg_iterations += 1
        D = initial.clone()
        residual -= HD0
        span.accumulate(logits, 1.0)
        certify(estimated=False)
    low = single is not None and single.start_step()  # this step's products in float32
    z = precondition(residual)
    p = z.clone()
    rz = float(residual @ z)
    pairs = []
    stop = "max_cg"
    for _ in range(max_cg):
        if certified():
            stop = "certified"
            break
        if spent():
            stop = "budget"
            break
        Hp, logits = here.hvp_with_logits(p, single=low)
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
        replaced = certify(estimated=low)
        if certified():
            stop = "certified"
            break
        if float(residual.norm()) <= forcing * grad_norm:
            stop = "forcing"
            break
        z = precondition(residual)
        rz_new = float(residual @ z)
        # Polak-Ribiere: the preconditioner may be inexact; a residual measured afresh restarts the directions
        beta = 0.0 if replaced else max(0.0, float(z @ (residual - previous)) / rz)
        p = z + beta * p
        rz = rz_new
    if low and stop in ("max_cg", "curvature"):
        single.stalled()
    if pairs:
        precondition.pairs = pairs[-RECYCLED_PAIRS:]
    if float(D.norm()) == 0.0:
        return -precondition.project(precondition.base(g)), stop, None
    return D, stop, span


def _jacobi(here: Curvature) -> Callable[[torch.Tensor], torch.Tensor]:
    """v / diag(Hess F): the iterate's curvature must have been computed with its diagonal."""
    diagonal = here.diag
    return lambda v: v / diagonal


def _line_minimum(here: Curvature, w: torch.Tensor, step: torch.Tensor, along: LogitSpan | None,
                 penalty) -> float:
    """The minimiser t of phi(t) = F(w + t D) over t in (0, LINE_MAX], from the cached
    probabilities at w and D's logit changes (no pass over the rows); 1 without them.

    phi is convex, so a safeguarded Newton iteration on phi' inside a bracket finds it. Where the
    curvature falls along D (the logits of a class that loses its rows keep falling), Newton's unit
    step stops short of the minimum and t > 1 saves whole Newton iterations.
    """
    slope = float(here.grad @ step)
    if along is None or not slope < 0:
        return 1.0
    n = here.n
    at_w, on_step = float(penalty.grad(w) @ step), float(penalty.grad(step) @ step)
    lo, hi, t = 0.0, math.inf, 1.0
    for _ in range(LINE_ITERATIONS):
        _, first, second = along.loss_along(t)
        first, second = first / n + at_w + t * on_step, second / n + on_step
        if not (math.isfinite(first) and math.isfinite(second)):
            hi = t
        elif abs(first) <= LINE_TOL * abs(slope) or (first < 0 and t >= LINE_MAX):
            return t
        elif first < 0:
            lo = t
        else:
            hi = t
        newton = t - first / second if math.isfinite(first) and second > 0 else math.nan
        if lo < newton < hi:
            t = newton
        else:
            t = 2 * t if math.isinf(hi) else 0.5 * (lo + hi)
        t = min(t, LINE_MAX)
    return lo if lo > 0 else 1.0


def _block_minimum(here: Curvature, w: torch.Tensor, step: torch.Tensor, along: LogitSpan | None, penalty,
                   classes: Sequence[int]) -> torch.Tensor | None:
    """The step ``a D_S + b D_rest`` minimising F over (a, b), where D_S is D's blocks of ``classes`` and
    D_rest the others, found like :func:`_line_minimum` from the cached probabilities and D's logit changes
    (no pass); None where it does not improve on Newton's step D.

    A class left without rows has no data term of its own: its curvature falls along the path as its
    logits fall, so Newton's step undersizes its block while sizing the others, and one length along D
    cannot serve both. phi(a, b) = F(w + a D_S + b D_rest) is convex; damped Newton from (1, 1) with
    Armijo's test on phi, at most ``LINE_ITERATIONS`` steps.
    """
    slope = float(here.grad @ step)
    if along is None or not slope < 0:
        return None
    model = here.cache.model
    own = torch.zeros_like(step)
    model.matrix(own)[list(classes)] = model.matrix(step)[list(classes)]
    parts = (own, step - own)
    if min(float(part.norm()) for part in parts) == 0.0:
        return None
    groups = torch.zeros(2, model.n_classes, dtype=torch.float64)
    groups[0, list(classes)] = 1.0
    groups[1] = 1.0 - groups[0]
    at_w = torch.tensor([float(penalty.grad(w) @ part) for part in parts], dtype=torch.float64)
    on_step = torch.tensor([[float(penalty.grad(a) @ b) for a in parts] for b in parts], dtype=torch.float64)

    def phi(lengths: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """F(w + a D_S + b D_rest) - F's penalty at w, its gradient and Hessian in (a, b)."""
        loss, first, second = along.loss_along_blocks(lengths, groups)
        return (loss / here.n + float(at_w @ lengths) + 0.5 * float(lengths @ on_step @ lengths),
                first / here.n + at_w + on_step @ lengths, second / here.n + on_step)

    lengths = torch.ones(2, dtype=torch.float64)
    start = value = phi(lengths)
    for _ in range(LINE_ITERATIONS):
        value_here, first, second = value
        try:
            move = -torch.linalg.solve(second, first)
        except RuntimeError:  # singular: no curvature along one part
            break
        # stop on the Newton decrement, not the gradient: the separate block's curvature can be tiny, and a
        # small gradient there can still be far from its minimum
        decrease = float(first @ move)
        if not (math.isfinite(value_here) and decrease < -BLOCK_TOL * abs(slope)):
            break
        for halving in range(BLOCK_HALVINGS + 1):
            s = 0.5 ** halving
            trial = phi(lengths + s * move)
            if trial[0] <= value_here + ARMIJO * s * decrease:
                break
        else:
            break
        lengths, value = lengths + s * move, trial
    a, b = float(lengths[0]), float(lengths[1])
    if not (0 < a <= LINE_MAX and 0 < b <= LINE_MAX and value[0] < start[0]):
        return None
    # back to zero-mean biases where the intercept is free: a common bias shift changes no value of F
    moved = penalty.project(a * parts[0] + b * parts[1])
    # below phi(1, 1) need not be below phi(0, 0) where D overshoots: only a descent step goes to Armijo's test
    return moved if float(here.grad @ moved) < 0 else None


def _line_search(objective: Objective, here: Curvature, w: torch.Tensor, step: torch.Tensor, best: _Best,
                 bound: _CurvatureBound, R: float, spent, meter: _Meter,
                 diag: bool | Sequence[int] = False, first: Callable[[], float] = lambda: 1.0,
                 first_step: torch.Tensor | None = None) -> tuple[Curvature | None, torch.Tensor]:
    """Armijo backtracking on F: ``first_step`` if given (a descent step, e.g. :func:`_block_minimum`'s),
    then along ``step`` (a descent direction) from t = ``first()`` (asked only then; then 1, 1/2, ...); each
    trial is one pass (the accepted one is the next iterate's gradient pass, a rejected one a line-search
    pass)."""
    slope = float(here.grad @ step)
    if slope >= 0:  # only possible through round-off: fall back to steepest descent
        step, slope, first, first_step = -here.grad, -float(here.grad @ here.grad), (lambda: 1.0), None
    t = 1.0 if first_step is not None else first()
    while t > 1e-12 and not spent():
        moved = first_step if first_step is not None else t * step
        trial = w + moved
        there = objective.curvature(trial, diag=diag, value=True)
        decrease = t * slope if first_step is None else float(here.grad @ first_step)
        if there.value <= here.value + ARMIJO * decrease:
            best.offer(bound.gradient_bound(there, R, trial), trial)
            meter.charge("gradient")
            return there, trial
        if bound.gradient_bound(there, R, trial) < best.certificate:  # a rejected trial is not the furthest point
            best.certificate, best.w = bound.gradient_bound(there, R, trial), trial
        meter.charge("line_search")
        if first_step is not None:
            first_step, t = None, first()  # then along the step from its line minimum
        else:
            t = 1.0 if t > 1.0 else 0.5 * t
    return None, w


def _polish(objective: Objective, here: Curvature, best: _Best, precondition: _Recycled, bound: _CurvatureBound,
            R: float, budget: float, result: CertifiedResult) -> None:
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
    local = _Best(bound.gradient_bound(there, R, point), point)
    _newton_step(there, point, precondition, local, bound.at(there), R, lambda: False,
                 lambda: objective.passes >= stop_at, POLISH_PRODUCTS, result, offer_step=False,
                 mu_is_local=bound.local)
    if local.certificate < best.certificate:
        best.certificate = local.certificate


def certify_point(objective: Objective, w: torch.Tensor, precondition: Callable[[torch.Tensor], torch.Tensor] | None,
                  *, max_products: int = 20) -> float:
    """A proven bound on ||w - w*|| for a given point (not moved): the Newton system at w solved by
    CG until the residual is small or ``max_products`` products are spent. One pass for the
    curvature at w (and the rows' self-concordance constant) plus one per product."""
    here = objective.curvature(w, diag=precondition is None, value=True, row_norm=True)
    R = self_concordance_constant(here.cache.max_row_norm)
    bound = _CurvatureBound(objective)
    best = _Best(bound.gradient_bound(here, R, w), w)
    preconditioner = _Recycled(precondition if precondition is not None else _jacobi(here), objective.penalty.project)
    stop_at = objective.passes + max_products
    _newton_step(here, w, preconditioner, best, bound.at(here), R, lambda: False, lambda: objective.passes >= stop_at,
                 max_products, CertifiedResult(w, math.inf, False), offer_step=False, mu_is_local=bound.local)
    return best.certificate
