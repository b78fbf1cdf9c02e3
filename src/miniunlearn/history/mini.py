"""Mini-Unlearning's minimal training record and its curvature profiles."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from miniunlearn.errors import RunError
from miniunlearn.models.objective import Objective
from miniunlearn.storage import load_tensors, save_tensors

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
    """The minimal record of SPEC section 3 (all tensors float64 unless stated)."""

    profile: str
    theta: torch.Tensor       # w_T
    grad_sum: torch.Tensor    # G_D(w_T) = sum_i grad l_i(w_T), no regulariser
    n: int
    l2: float
    fingerprint: str
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    # exact profile:   "precond"         (H_D + l2 I)^-1, H_D the mean loss Hessian at w_T (p x p)
    #                  "self_influence"  (n x C) float32, see exact_curvature()
    #                  "grad_var"        (1,) trace of the per-row gradient covariance at w_T
    # minimal profile: "basis"    (k x p) orthonormal top eigenvectors of the mean loss Hessian
    #                  "eigvals"  (k,) their eigenvalues
    #                  "diag"     (p,) the Hessian's diagonal

    @property
    def nbytes(self) -> int:
        tensors = [self.theta, self.grad_sum, *self.tensors.values()]
        return int(sum(t.numel() * t.element_size() for t in tensors))

    def save(self, path: str | Path) -> int:
        tensors = {"theta": self.theta, "grad_sum": self.grad_sum, **self.tensors}
        meta = {"format": "miniunlearn-history/1", "profile": self.profile, "n": self.n, "l2": repr(self.l2),
                "fingerprint": self.fingerprint}
        return save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> "MiniHistory":
        tensors, meta = load_tensors(path, "Mini-Unlearning history")
        if meta.get("format") != "miniunlearn-history/1":
            raise RunError(f"{path} is not a Mini-Unlearning history file (format {meta.get('format')!r})")
        profile = meta.get("profile")
        needed = {"exact": ("precond", "self_influence", "grad_var"), "minimal": ("basis", "eigvals", "diag")}.get(profile)
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
        return cls(profile, theta, grad_sum, int(meta["n"]), float(meta["l2"]), meta["fingerprint"], tensors)


def _top_eigenpairs(objective: Objective, theta: torch.Tensor, k: int, iterations: int = 4, seed: int = 0):
    """Top-k eigenpairs of the mean loss Hessian by randomized block subspace iteration (block HVPs)."""
    p = theta.numel()
    gen = torch.Generator().manual_seed(seed)
    block = min(p, k + 8)
    Q, _ = torch.linalg.qr(torch.randn(p, block, dtype=theta.dtype, generator=gen))
    l2 = objective.l2
    for _ in range(iterations):
        Q, _ = torch.linalg.qr(objective.hvp(theta, Q) - l2 * Q)
    HQ = objective.hvp(theta, Q) - l2 * Q
    small = Q.T @ HQ
    vals, vecs = torch.linalg.eigh(0.5 * (small + small.T))
    order = torch.argsort(vals, descending=True)[:k]
    return vals[order], (Q @ vecs[:, order]).T.contiguous()


def exact_curvature(objective: Objective, theta: torch.Tensor, dtype: torch.dtype = torch.float64) -> dict:
    """The exact profile: ``precond = (H_D + lambda I)^-1`` and per-row self-influence logits.

    ``H_D`` is the mean loss Hessian at w_T, built densely and Cholesky-inverted once
    (cost ~ n p^2 (C+1)/C flops, then p^3). Unlearning only ever applies ``precond``:
    with ``P^-1 = H_D + lambda I`` the retained Hessian is ``n P^-1 - H_U - r lambda I``.

    ``self_influence[i] = (I (x) x~_i)^T P (grad l_i(w_T) + lambda w_T)`` (C numbers per row) is
    how far row i's own logits move when row i alone is removed, times (n - r). The
    nonlinear correction uses it to treat forgotten rows as if they were retained ones.
    ``grad_var`` is the trace of the per-row gradient covariance at w_T (a scalar).
    """
    p = theta.numel()
    precond = objective.hessian_loss_mean(theta, dtype=torch.float64)
    precond.diagonal().add_(objective.l2)
    factor = torch.linalg.cholesky(precond)
    del precond
    precond = torch.cholesky_inverse(factor)
    del factor
    precond = 0.5 * (precond + precond.T)
    influence, grad_var = _self_influence(objective, theta, precond)
    objective.rows.rows_read += objective.n
    return {"precond": precond.to(dtype), "self_influence": influence,
            "grad_var": torch.tensor([grad_var], dtype=torch.float64)}


def _self_influence(objective: Objective, theta: torch.Tensor, precond: torch.Tensor):
    """Per-row ``(I (x) x~_i)^T P g~_i`` (float32, n x C) and the gradient-covariance trace."""
    model = objective.model
    C, d1 = model.n_classes, model.n_features + 1
    blocks32 = precond.to(torch.float32).view(C, d1, C, d1)
    shift = (precond @ (objective.l2 * theta)).view(C, d1)  # P lambda w_T, the regulariser's part
    mean_grad = torch.zeros_like(theta)
    sq_norm_sum = 0.0
    out = []
    for X, y in objective.rows.iter_chunks():
        Xa = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1)
        probs = model.probabilities(theta, X)
        residual = probs.clone()
        residual[torch.arange(len(y)), y] -= 1.0
        mean_grad += torch.cat([residual.T @ X, residual.sum(0)[:, None]], dim=1).reshape(-1)
        sq_norm_sum += float(((residual ** 2).sum(1) * (Xa ** 2).sum(1)).sum())
        Xa32 = Xa.to(torch.float32)
        values = Xa @ shift.T  # (m, C)
        for c in range(C):
            for c2 in range(c, C):
                leverage = ((Xa32 @ blocks32[c, :, c2, :]) * Xa32).sum(1).to(torch.float64)
                values[:, c] += leverage * residual[:, c2]
                if c2 != c:
                    values[:, c2] += leverage * residual[:, c]
        out.append(values.to(torch.float32))
    n = objective.n
    mean_grad /= n
    grad_var = sq_norm_sum / n - float(mean_grad @ mean_grad)
    return torch.cat(out), grad_var


def build_mini_history(objective: Objective, theta: torch.Tensor, profile: str, fingerprint: str,
                       curvature_dtype: torch.dtype = torch.float64, minimal_rank: int = MINIMAL_MAX_VECTORS - 2,
                       ) -> MiniHistory:
    """Record w_T, G_D(w_T) and the curvature of ``profile`` at w_T (one gradient pass + curvature)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown curvature profile {profile!r}")
    start = time.perf_counter()
    grad_sum = objective.grad_sum(theta)
    tensors: dict[str, torch.Tensor] = {}
    if profile == "exact":
        tensors = exact_curvature(objective, theta, curvature_dtype)
    else:
        if not 1 <= minimal_rank <= MINIMAL_MAX_VECTORS - 2:
            raise ValueError(f"minimal_rank must lie in [1, {MINIMAL_MAX_VECTORS - 2}]")
        eigvals, basis = _top_eigenpairs(objective, theta, minimal_rank)
        tensors = {"basis": basis, "eigvals": eigvals, "diag": objective.hessian_diag(theta) - objective.l2}
    history = MiniHistory(profile, theta.clone(), grad_sum, objective.n, objective.l2, fingerprint, tensors)
    history.info = {"build_time_s": time.perf_counter() - start, "curvature_dtype": str(curvature_dtype).replace("torch.", "")}
    return history
