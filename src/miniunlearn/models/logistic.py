"""Multinomial logistic regression: the model and the one implementation of its loss, gradient and curvature.

Parameters are one flat float64 vector ``theta`` of length ``p = C (d + 1)``: the rows of the
augmented weight matrix ``Theta = [W | b]`` (C x (d+1)), i.e. class c owns the block
``theta[c (d+1) : (c+1)(d+1)]``. ``W`` and ``b`` are exactly torch.nn.Linear's ``weight`` and
``bias``. With ``x~ = [x, 1]`` and ``p = softmax(Theta x~)``, one sample's loss, gradient and
Hessian are

    l(theta; x, y)  = -log p_y
    grad l          = (p - e_y) (x) x~
    Hess l          = (diag(p) - p p^T) (x) x~ x~^T          ((x) = Kronecker product)

so the sums below are a few matrix products per chunk of rows (no per-sample gradient matrix is ever formed).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

DTYPE = torch.float64


class LogisticRegression:
    """Softmax regression ``p(y = c | x) = softmax(W x + b)_c`` with C classes and d features."""

    kind = "logistic_regression"

    def __init__(self, n_features: int, n_classes: int):
        if n_features < 1 or n_classes < 2:
            raise ValueError(f"need n_features >= 1 and n_classes >= 2, got {n_features}, {n_classes}")
        self.n_features = int(n_features)
        self.n_classes = int(n_classes)

    @property
    def n_params(self) -> int:
        return self.n_classes * (self.n_features + 1)

    def describe(self) -> dict:
        return {"kind": self.kind, "n_features": self.n_features, "n_classes": self.n_classes,
                "n_params": self.n_params}

    # -- parameter layout ------------------------------------------------------------------
    def zeros(self) -> torch.Tensor:
        return torch.zeros(self.n_params, dtype=DTYPE)

    def weight_mask(self) -> torch.Tensor:
        """1 at every weight, 0 at the C biases (the last entry of each class block)."""
        mask = torch.ones(self.n_classes, self.n_features + 1, dtype=DTYPE)
        mask[:, -1] = 0.0
        return mask.reshape(-1)

    def matrix(self, theta: torch.Tensor) -> torch.Tensor:
        """The augmented weights ``[W | b]`` as a (C, d+1) view of ``theta``."""
        return theta.view(self.n_classes, self.n_features + 1)

    def to_linear(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"weight": (C, d), "bias": (C,)}`` as torch.nn.Linear stores them."""
        m = self.matrix(theta)
        return {"weight": m[:, :-1].contiguous(), "bias": m[:, -1].contiguous()}

    def from_linear(self, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if tuple(weight.shape) != (self.n_classes, self.n_features) or tuple(bias.shape) != (self.n_classes,):
            raise ValueError(f"expected weight ({self.n_classes}, {self.n_features}) and bias ({self.n_classes},), "
                             f"got {tuple(weight.shape)} and {tuple(bias.shape)}")
        return torch.cat([weight.to(DTYPE), bias.to(DTYPE)[:, None]], dim=1).reshape(-1).contiguous()

    # -- forward ---------------------------------------------------------------------------
    def logits(self, theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        m = self.matrix(theta)
        return torch.addmm(m[:, -1], X, m[:, :-1].T)

    def probabilities(self, theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(theta, X), dim=1)

    # -- sums over a chunk of rows ----------------------------------------------------------
    # These are the only implementations of the loss, gradient and curvature sums: training,
    # every unlearning method and the attacks call them. Curvature products take the softmax
    # probabilities as an argument, so that a solver can compute them once per iterate.

    @staticmethod
    def residual(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``p_i - e_{y_i}`` per row: the gradient of the loss with respect to the logits."""
        residual = probs.clone()
        residual[torch.arange(len(y)), y] -= 1.0
        return residual

    @staticmethod
    def outer_sum(S: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """``sum_i s_i (x) x~_i`` as a flat parameter vector: ``[S^T X | S^T 1]`` (S is n x C)."""
        return torch.cat([S.T @ X, S.sum(dim=0)[:, None]], dim=1).reshape(-1)

    def loss_grad_sum(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sum_i l_i, sum_i grad l_i)`` over the rows of X (no regulariser)."""
        log_p = torch.log_softmax(self.logits(theta, X), dim=1)
        loss = -log_p.gather(1, y[:, None]).sum()
        return loss, self.outer_sum(self.residual(log_p.exp(), y), X)

    def grad_sum(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_grad_sum(theta, X, y)[1]

    def directional_logits(self, X: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``u_i = Theta_v x~_i``, the change of every row's logits along v: (n, k, C) for v of shape (p, k).

        One matrix product ``X W_v^T`` with the k C weight rows stacked (a GEMM; an einsum over the
        (n, k, C) layout was ten times slower), plus the biases."""
        k, C, d1 = v.shape[1], self.n_classes, self.n_features + 1
        blocks = v.T.reshape(k * C, d1)
        return torch.addmm(blocks[:, -1], X, blocks[:, :-1].T).view(X.shape[0], k, C)

    def hvp_sum(self, X: torch.Tensor, probs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``sum_i Hess l_i v`` at the point whose softmax probabilities are ``probs``; v is (p,) or (p, k)."""
        single = v.dim() == 1
        V = v[:, None] if single else v
        out = self.hvp_from_logits(X, probs, self.directional_logits(X, V))
        return out[:, 0] if single else out

    def hvp_from_logits(self, X: torch.Tensor, probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``sum_i ((diag p_i - p_i p_i^T) u_i) (x) x~_i`` for directional logits u (n, k, C): (p, k).

        The rows' weights s_i = (diag p_i - p_i p_i^T) u_i, then one GEMM ``S^T X`` for all k C rows."""
        n, k, C = u.shape
        pu = probs[:, None, :] * u
        s = (pu - probs[:, None, :] * pu.sum(dim=2, keepdim=True)).reshape(n, k * C)
        out = torch.cat([s.T @ X, s.sum(dim=0)[:, None]], dim=1)  # (k C, d + 1)
        return out.reshape(k, -1).T

    def hessian_diag_sum(self, X: torch.Tensor, probs: torch.Tensor, squares: torch.Tensor | None = None,
                         classes: Sequence[int] | None = None) -> torch.Tensor:
        """The diagonal of ``sum_i Hess l_i``: ``sum_i p_ic (1 - p_ic) x~_ij^2``.

        ``squares``: X's squared features, already computed (in any float dtype: the weighted sum is
        formed in theirs and returned in ``probs``'s; float32 suits a preconditioner); None: squared
        here. ``classes``: only those classes' blocks are computed, the others are NaN (a caller that
        reads them has asked for the wrong thing)."""
        picked = slice(None) if classes is None else list(classes)
        w = probs[:, picked] * (1.0 - probs[:, picked])
        if squares is None:
            squares = X * X
        weighted = (w.to(squares.dtype).T @ squares).to(probs.dtype)
        if squares.dtype != probs.dtype and not torch.isfinite(weighted).all():  # float32 overflowed (|x| > 1e19)
            weighted = w.T @ (X * X)
        blocks = torch.cat([weighted, w.sum(dim=0)[:, None]], dim=1)
        if classes is None:
            return blocks.reshape(-1)
        out = torch.full((self.n_classes, self.n_features + 1), math.nan, dtype=blocks.dtype)
        out[picked] = blocks
        return out.reshape(-1)

    def hessian_sum(self, X: torch.Tensor, probs: torch.Tensor, out: torch.Tensor | None = None,
                    dtype: torch.dtype = DTYPE, gemm_dtype: torch.dtype | None = None) -> torch.Tensor:
        """Accumulate ``sum_i Hess l_i`` (p x p, block (c, c') = X~^T diag(p_c d_cc' - p_c p_c') X~) into
        ``out`` (allocated in ``dtype`` when not given).

        Reference-class elimination: every A_i = diag(p_i) - p_i p_i^T has zero row sums, so with a
        reference class k (the chunk's most probable one) H_ck = -sum_{c' != k} H_cc' and
        H_kk = sum_{c, c' != k} H_cc'. Only the C(C-1)/2 weighted Gram products among the other
        classes are computed (about ``n (d+1)^2 C (C-1)`` flops); the k blocks are sums of them.
        ``gemm_dtype`` (default ``dtype``) is the precision of the Gram products: float32 roughly
        halves their time, and each chunk's blocks are then added into ``out`` in its own precision
        (float64 accumulation across chunks).
        """
        C, d1 = self.n_classes, self.n_features + 1
        if out is None:
            out = torch.zeros(C * d1, C * d1, dtype=dtype)
        gemm = out.dtype if gemm_dtype is None else gemm_dtype
        Xa = torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype)], dim=1).to(gemm)
        P = probs.to(gemm)
        ref = int(probs.sum(dim=0).argmax())
        others = [c for c in range(C) if c != ref]
        blocks = out.view(C, d1, C, d1)
        row_sums = torch.zeros(C - 1, d1, d1, dtype=out.dtype)  # sum_{c' != ref} H_cc' for each c != ref
        for a, c in enumerate(others):
            weighted = Xa * P[:, c:c + 1]
            for c2 in others[a:]:
                if c2 == c:
                    block = (weighted.T @ (Xa * (1.0 - P[:, c:c + 1]))).to(out.dtype)
                else:
                    block = (-(weighted.T @ (Xa * P[:, c2:c2 + 1]))).to(out.dtype)
                blocks[c, :, c2, :] += block
                row_sums[a] += block
                if c2 != c:
                    blocks[c2, :, c, :] += block.T
                    row_sums[others.index(c2)] += block.T
        for a, c in enumerate(others):
            blocks[c, :, ref, :] -= row_sums[a]
            blocks[ref, :, c, :] -= row_sums[a].T
        blocks[ref, :, ref, :] += row_sums.sum(dim=0)
        return out

    def predict(self, theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        return self.logits(theta, X).argmax(dim=1)
