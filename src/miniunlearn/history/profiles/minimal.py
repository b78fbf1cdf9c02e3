"""``minimal``: at most 64 vectors of p -- the top-k eigenpairs of the mean loss Hessian and its diagonal.

``P = (D + V diag(e) V^T)^-1`` by Woodbury, with D the part of the diagonal the eigenpairs do not
explain plus lambda M. Bytes: ``8 (k p + k + p)``. Build: randomised block subspace iteration,
five block Hessian-vector passes with k + 8 vectors, and one pass for the diagonal. Too coarse for
step 0's contraction (step 0 is the influence step -P b / m); its use is as the preconditioner of
the certified Newton-CG passes over R.
"""

from __future__ import annotations

from numbers import Integral

import torch

from miniunlearn.core.params import Interval, Param
from miniunlearn.history.profiles.interface import CurvatureProfile, register

MAX_VECTORS = 64


def top_eigenpairs(objective, theta: torch.Tensor, k: int, iterations: int = 4, seed: int = 0):
    """Top-k eigenpairs of the mean loss Hessian by randomized block subspace iteration (block HVPs)."""
    p = theta.numel()
    gen = torch.Generator().manual_seed(seed)
    block = min(p, k + 8)
    Q, _ = torch.linalg.qr(torch.randn(p, block, dtype=theta.dtype, generator=gen))
    curvature = objective.curvature(theta, diag=False)
    for _ in range(iterations):
        Q, _ = torch.linalg.qr(curvature.cache.hvp_sum(Q) / objective.n)
    HQ = curvature.cache.hvp_sum(Q) / objective.n
    small = Q.T @ HQ
    vals, vecs = torch.linalg.eigh(0.5 * (small + small.T))
    order = torch.argsort(vals, descending=True)[:k]
    return vals[order], (Q @ vecs[:, order]).T.contiguous()


@register
class MinimalProfile(CurvatureProfile):
    name = "minimal"
    summary = f"top-k Hessian eigenpairs + its diagonal (k + 2 <= {MAX_VECTORS} vectors of p)"
    preference = 10
    parameters = {
        "rank": Param(MAX_VECTORS - 2, Interval(Integral, 1, MAX_VECTORS - 2), help="eigenpairs kept"),
    }
    tensor_names = ("basis", "eigvals", "diag")

    def stored_bytes(self, model) -> int:
        p = model.n_params
        return 8 * (self.rank * p + self.rank + p)

    def build_bytes(self, model) -> int:
        return 8 * 4 * (self.rank + 8) * model.n_params

    @classmethod
    def fit_budget(cls, model, budget, memory_budget):
        p = model.n_params
        rank = min(MAX_VECTORS - 2, (budget // 8 - p) // (p + 1))
        if rank < 1:
            return None
        profile = cls(rank=int(rank))
        return profile if profile.build_bytes(model) <= memory_budget else None

    def build(self, objective, theta):
        eigvals, basis = top_eigenpairs(objective, theta, self.rank)
        return {"basis": basis, "eigvals": eigvals, "diag": objective.curvature(theta).cache.diag_sum / objective.n}

    def preconditioner(self, tensors, penalty):
        V = tensors["basis"].to(torch.float64)  # (k, p), orthonormal rows
        eig = tensors["eigvals"].to(torch.float64).clamp_min(0.0)
        diag = tensors["diag"].to(torch.float64)
        rest = (diag - (V * V).T @ eig).clamp_min(0.0)
        Dinv = 1.0 / (rest + penalty.diagonal(len(diag)) + 1e-12 * float(diag.max()))
        core_inv = torch.linalg.inv(torch.diag(1.0 / eig.clamp_min(1e-300)) + (V * Dinv) @ V.T)

        def apply(v: torch.Tensor) -> torch.Tensor:
            x = Dinv * v
            return x - Dinv * (V.T @ (core_inv @ (V @ x)))

        return apply
