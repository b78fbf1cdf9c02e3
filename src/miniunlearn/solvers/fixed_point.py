"""Fixed-point iteration with Anderson acceleration, a measured contraction factor and Banach bounds.

For a map Phi that is a q-contraction (||Phi(x) - Phi(y)|| <= q ||x - y||, q < 1), Banach's
theorem gives a unique fixed point x* and, for any x, the a-posteriori bound

    ||Phi(x) - x*|| <= q / (1 - q) * ||Phi(x) - x||.

Anderson acceleration (type II, Walker & Ni 2011) mixes the last ``depth`` iterates to reach the
same fixed point in far fewer map evaluations; on a linear map it is equivalent to GMRES.

The contraction factor is *measured*: for (nearly) linear maps the differences of successive
iterates span a Krylov space of the map's Jacobian M, since Phi(x_j) - Phi(x_{j-1}) = M (x_j - x_{j-1});
the largest Ritz value of M on that space estimates q (its spectral radius; for a non-symmetric M an
estimate, not a bound).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

# Stop when the step ||phi(x) - x|| has not reached a new low in this many evaluations: the map's own
# rounding (e.g. products with a float32 matrix) floors it, and iterating on cannot meet the tolerance
STALL_EVALUATIONS = 25


@dataclass
class FixedPointResult:
    x: torch.Tensor
    iterations: int
    converged: bool
    contraction_factor: float
    banach_bound: float
    previous: torch.Tensor | None = None  # the x with x_returned = phi(previous) (for an exact residual)

    def as_dict(self) -> dict:
        return {"iterations": self.iterations, "converged": self.converged,
                "contraction_factor": self.contraction_factor, "banach_bound": self.banach_bound}


def ritz_contraction(dx: list[torch.Tensor], dphi: list[torch.Tensor], rcond: float = 1e-5) -> float:
    """Largest |Ritz value| of the Jacobian M given pairs (dx_j, dphi_j = M dx_j).

    The span of the dx is orthonormalised by an SVD, dropping directions whose singular value is
    below ``rcond`` times the largest: successive differences of a slowly converging iteration
    are nearly parallel, and dividing by their tiny singular values would turn round-off in
    dphi into spurious eigenvalues. Near convergence a difference of iterates keeps only a few
    significant digits (round-off of ~1e-16 ||x|| in a difference of ~1e-10 ||x||), hence the
    default 1e-5. With X = U S V^T the Ritz matrix is U^T M U = U^T Y V S^-1.
    """
    if not dx:
        return float("nan")
    X = torch.stack(dx, dim=1)
    Y = torch.stack(dphi, dim=1)
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    keep = S > rcond * S[0]
    if not keep.any():
        return float("nan")
    U, S, Vh = U[:, keep], S[keep], Vh[keep]
    small = U.T @ Y @ Vh.T / S
    return float(torch.linalg.eigvals(small).abs().max())


def anderson(phi: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, tol: float, max_iter: int = 200,
             depth: int = 6, scale: float | None = None, progress=None) -> FixedPointResult:
    """Solve ``x = phi(x)`` from ``x0``.

    Stops once the Banach bound ``q/(1-q) ||phi(x_k) - x_k||`` is at most ``tol * scale``
    (``scale`` defaults to ``||phi(x_k)||``), and returns ``phi(x_k)``, whose distance to the
    fixed point that bound controls. Stops unconverged (``converged=False``, that bound reported)
    once the step has made no new low in ``STALL_EVALUATIONS`` evaluations, or after ``max_iter``.
    """
    x = x0.clone()
    xs, fs = [], []           # Anderson memory (last `depth` iterates and residuals)
    all_dx, all_dphi = [], []  # whole history, for the contraction estimate
    prev_x = prev_phi = None
    q = float("nan")
    lowest, lowest_at = float("inf"), 0
    for k in range(1, max_iter + 1):
        phi_x = phi(x)
        f = phi_x - x
        step = float(f.norm())
        if step < lowest:
            lowest, lowest_at = step, k
        if prev_x is not None:
            all_dx.append(x - prev_x)
            all_dphi.append(phi_x - prev_phi)
            q = ritz_contraction(all_dx[-12:], all_dphi[-12:])
        prev_x, prev_phi = x, phi_x
        q_eff = q if q == q else 0.5  # before two evaluations, assume a modest contraction
        bound = q_eff / (1 - q_eff) * step if q_eff < 1 else float("inf")
        ref = float(phi_x.norm()) if scale is None else scale
        if progress is not None:
            progress(info=f"fixed point: step {step:.2e}, q {q_eff:.2f}")
        if bound <= tol * max(ref, 1e-300) or step == 0.0:
            return FixedPointResult(phi_x, k, True, q, bound, x)
        if k - lowest_at >= STALL_EVALUATIONS:
            return FixedPointResult(phi_x, k, False, q, bound, x)
        xs.append(x)
        fs.append(f)
        if len(xs) > depth + 1:
            xs.pop(0)
            fs.pop(0)
        if len(xs) == 1 or depth == 0:
            x = phi_x
            continue
        dX = torch.stack([xs[i + 1] - xs[i] for i in range(len(xs) - 1)], dim=1)
        dF = torch.stack([fs[i + 1] - fs[i] for i in range(len(fs) - 1)], dim=1)
        gamma = torch.linalg.lstsq(dF, f[:, None], driver="gelsd").solution[:, 0]
        x = phi_x - (dX + dF) @ gamma
    return FixedPointResult(prev_phi, max_iter, False, q, bound, prev_x)
