"""Mini-Unlearning's minimal training record and its curvature profiles."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from miniunlearn.core.errors import RunError
from miniunlearn.core.storage import load_tensors, save_tensors
from miniunlearn.models.objective import Objective

PROFILES = ("exact", "minimal")
MINIMAL_MAX_VECTORS = 64
DEFAULT_MEMORY_BUDGET = 4 << 30  # bytes allowed for the exact profile's two p x p matrices


def exact_profile_bytes(n_params: int, itemsize: int = 8) -> int:
    """Peak bytes while building the exact profile (the Hessian and its Cholesky factor)."""
    return 2 * n_params * n_params * itemsize


def choose_profile(requested: str, n_params: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> str:
    """``exact`` when its two dense p x p matrices fit ``memory_budget``, else ``minimal``."""
    if requested not in ("auto", *PROFILES):
        raise ValueError(f"unknown curvature profile {requested!r}; choose auto, exact or minimal")
    if requested != "auto":
        return requested
    return "exact" if exact_profile_bytes(n_params) <= memory_budget else "minimal"


@dataclass
class MiniHistory:
    """The minimal record (docs/mini-unlearning.md; all tensors float64 unless stated)."""

    profile: str
    theta: torch.Tensor       # w_T
    grad_sum: torch.Tensor    # G_D(w_T) = sum_i grad l_i(w_T), no regulariser
    n: int
    l2: float
    fingerprint: str
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    penalize_intercept: bool = True
    loss_sum: float | None = None  # L_D(w_T) = sum_i l_i(w_T): F_R(w_T) from the forgotten rows alone

    # exact profile:   "precond"  (H_D + l2 I)^-1, H_D the mean loss Hessian at w_T (p x p)
    # minimal profile: "basis"    (k x p) orthonormal top eigenvectors of the mean loss Hessian
    #                  "eigvals"  (k,) their eigenvalues
    #                  "diag"     (p,) the Hessian's diagonal

    @property
    def nbytes(self) -> int:
        tensors = [self.theta, self.grad_sum, *self.tensors.values()]
        return int(sum(t.numel() * t.element_size() for t in tensors)) + (8 if self.loss_sum is not None else 0)

    def save(self, path: str | Path) -> int:
        tensors = {"theta": self.theta, "grad_sum": self.grad_sum, **self.tensors}
        if self.loss_sum is not None:
            tensors["loss_sum"] = torch.tensor(self.loss_sum, dtype=torch.float64)
        meta = {"format": "miniunlearn-history/1", "profile": self.profile, "n": self.n, "l2": repr(self.l2),
                "fingerprint": self.fingerprint, "penalize_intercept": str(self.penalize_intercept)}
        return save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> "MiniHistory":
        tensors, meta = load_tensors(path, "Mini-Unlearning history")
        if meta.get("format") != "miniunlearn-history/1":
            raise RunError(f"{path} is not a Mini-Unlearning history file (format {meta.get('format')!r})")
        profile = meta.get("profile")
        needed = {"exact": ("precond",), "minimal": ("basis", "eigvals", "diag")}.get(profile)
        if needed is None:
            raise RunError(f"history {path} has unknown curvature profile {profile!r}")
        missing = [k for k in ("theta", "grad_sum", *needed) if k not in tensors]
        if missing:
            raise RunError(f"history {path} is incomplete: missing {', '.join(missing)}")
        for name, t in tensors.items():
            # one reduction instead of a boolean copy of a p x p matrix: NaN/inf propagate into the sum
            if not torch.isfinite(t.sum()) and not torch.isfinite(t).all():
                raise RunError(f"history {path} is corrupted: tensor {name!r} holds NaN or inf")
        theta, grad_sum = tensors.pop("theta"), tensors.pop("grad_sum")
        loss_sum = tensors.pop("loss_sum", None)
        return cls(profile, theta, grad_sum, int(meta["n"]), float(meta["l2"]), meta["fingerprint"], tensors,
                   penalize_intercept=meta.get("penalize_intercept", "True") == "True",
                   loss_sum=None if loss_sum is None else float(loss_sum))


def _top_eigenpairs(objective: Objective, theta: torch.Tensor, k: int, iterations: int = 4, seed: int = 0):
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


def exact_curvature(objective: Objective, theta: torch.Tensor, dtype: torch.dtype = torch.float64) -> dict:
    """The exact profile: ``precond = (H_D + lambda I)^-1``, H_D the mean loss Hessian at w_T.

    H_D is built densely (about n p^2 (C+1)/C flops) and Cholesky-inverted once (p^3).
    Unlearning only ever applies ``precond``: with ``P^-1 = H_D + lambda I`` the retained
    Hessian sum is ``n P^-1 - H_U - r lambda I``, so H_D itself need not be kept.
    """
    precond = objective.hessian_loss_mean(theta, dtype=torch.float64)
    precond.diagonal().add_(objective.penalty.diagonal(precond.shape[0]))
    gauge = objective.penalty.gauge()
    if gauge is not None:  # a free intercept: lift the flat common-bias direction so P exists (it acts on
        precond += float(precond.diagonal().mean()) * torch.outer(gauge, gauge)  # zero-mean biases exactly)
    factor = torch.linalg.cholesky(precond)
    del precond
    precond = torch.cholesky_inverse(factor)
    del factor
    precond = 0.5 * (precond + precond.T)  # exact symmetry, so the fixed-point map is self-adjoint
    return {"precond": precond.to(dtype)}


def build_mini_history(objective: Objective, theta: torch.Tensor, profile: str, fingerprint: str,
                       curvature_dtype: torch.dtype = torch.float64, minimal_rank: int = MINIMAL_MAX_VECTORS - 2,
                       ) -> MiniHistory:
    """Record w_T, G_D(w_T) and the curvature of ``profile`` at w_T (one gradient pass + curvature)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown curvature profile {profile!r}")
    start = time.perf_counter()
    loss_sum, grad_sum = objective.rows.map_reduce(lambda X, y: objective.model.loss_grad_sum(theta, X, y))
    tensors: dict[str, torch.Tensor] = {}
    if profile == "exact":
        tensors = exact_curvature(objective, theta, curvature_dtype)
    else:
        if not 1 <= minimal_rank <= MINIMAL_MAX_VECTORS - 2:
            raise ValueError(f"minimal_rank must lie in [1, {MINIMAL_MAX_VECTORS - 2}]")
        eigvals, basis = _top_eigenpairs(objective, theta, minimal_rank)
        tensors = {"basis": basis, "eigvals": eigvals, "diag": objective.curvature(theta).cache.diag_sum / objective.n}
    history = MiniHistory(profile, theta.clone(), grad_sum, objective.n, objective.l2, fingerprint, tensors,
                          penalize_intercept=objective.penalty.penalize_intercept, loss_sum=float(loss_sum))
    history.info = {"build_time_s": time.perf_counter() - start, "curvature_dtype": str(curvature_dtype).replace("torch.", "")}
    return history
