"""The regularised empirical risk over a set of rows (notation: docs/mini-unlearning.md).

    F_S(theta) = (1/|S|) sum_{i in S} l(theta; z_i) + (lambda/2) theta^T M theta

with the L2 penalty on every parameter (M = I, bias too, as weight decay applies it) unless the
intercept is left unpenalised (:mod:`miniunlearn.models.penalty`).
"""

from __future__ import annotations

from typing import Sequence

import torch

from miniunlearn.core.errors import InputError
from miniunlearn.models.curvature import CachedCurvature
from miniunlearn.models.penalty import Penalty
from miniunlearn.models.rows import Rows


class Objective:
    """``F_S`` and its derivatives; every method is one chunked sweep over the rows."""

    def __init__(self, model, rows: Rows, penalty: Penalty | float):
        if len(rows) == 0:
            raise ValueError("the objective needs at least one row")
        self.model = model
        self.rows = rows
        self.penalty = penalty if isinstance(penalty, Penalty) else Penalty(model, penalty)
        self.l2 = self.penalty.l2
        self.n = len(rows)

    @property
    def passes(self) -> float:
        """Sweeps over the rows so far (one sweep = every row read once)."""
        return self.rows.rows_read / self.n

    def value_grad(self, theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        loss, grad = self.rows.map_reduce(lambda X, y: self.model.loss_grad_sum(theta, X, y))
        value = float(loss) / self.n + self.penalty.value(theta)
        return value, grad / self.n + self.penalty.grad(theta)

    def grad_sum(self, theta: torch.Tensor) -> torch.Tensor:
        """``G_S(theta) = sum_{i in S} grad l_i(theta)`` without the regulariser."""
        return self.rows.map_reduce(lambda X, y: self.model.grad_sum(theta, X, y))

    def curvature(self, theta: torch.Tensor, diag: bool | Sequence[int] = True, value: bool = False,
                  row_norm: bool = False, span_of: torch.Tensor | None = None) -> "Curvature":
        """The Hessian of F_S at ``theta``, its probabilities cached (one pass; see :class:`Curvature`).

        ``diag``: the Hessian diagonal too (a sequence of classes: only their blocks, NaN elsewhere).
        With ``value`` the same pass also gives F_S(theta) and its gradient (``Curvature.value``,
        ``Curvature.grad``), with ``row_norm`` the largest row norm of the features, with ``span_of`` = v
        the largest logit span of v over the rows (``Curvature.cache.span``; one more product per chunk).
        """
        cache = CachedCurvature(self.model, self.rows, theta, diag=diag, grad=value, loss=value, row_norm=row_norm,
                                span_of=span_of)
        return Curvature(cache, self.n, self.penalty, theta)

    def hessian_loss_mean(self, theta: torch.Tensor, dtype: torch.dtype = torch.float64,
                          gemm_dtype: torch.dtype | None = None) -> torch.Tensor:
        """The mean loss Hessian ``(1/|S|) sum_i Hess l_i(theta)`` (no regulariser), dense p x p, accumulated
        in ``dtype`` from per-chunk Gram products in ``gemm_dtype`` (see ``LogisticRegression.hessian_sum``)."""
        p = self.model.n_params
        out = torch.zeros(p, p, dtype=dtype)
        for X, _ in self.rows.iter_chunks():
            self.model.hessian_sum(X, self.model.probabilities(theta, X), out=out, gemm_dtype=gemm_dtype)
        self.rows.rows_read += self.n
        out /= self.n
        return out


class Curvature:
    """``Hess F_S(theta)`` at a fixed theta: products ``hvp(v)`` (one pass each) and the diagonal."""

    def __init__(self, cache: CachedCurvature, n: int, penalty: Penalty, theta: torch.Tensor | None = None):
        self.cache, self.n, self.penalty = cache, n, penalty
        self.diag = None if cache.diag_sum is None else cache.diag_sum / n + penalty.grad(torch.ones_like(cache.diag_sum))
        if cache.grad_sum is not None and cache.loss_sum is not None:
            self.value = cache.loss_sum / n + penalty.value(theta)
            self.grad = cache.grad_sum / n + penalty.grad(theta)

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        return self.cache.hvp_sum(v) / self.n + self.penalty.grad(v)

    def smallest_eigenvalue(self, max_params: int = 4096) -> float:
        """A lower bound on the Hessian's smallest eigenvalue (on zero-mean biases when the intercept
        is free): a dense symmetric eigensolver, less its backward-error bound. One pass plus p^3.

        For a free intercept the common bias shift is flat; lifting it by the diagonal's mean leaves
        the other eigenvalues as they are.
        """
        p = self.cache.model.n_params
        if p > max_params:
            raise InputError(f"a dense curvature bound needs p <= {max_params} parameters, this model has {p}")
        H = self.cache.hessian_sum() / self.n
        H.diagonal().add_(self.penalty.diagonal(p))
        gauge = self.penalty.gauge()
        if gauge is not None:
            H += float(H.diagonal().mean()) * torch.outer(gauge, gauge)
        smallest = float(torch.linalg.eigvalsh(0.5 * (H + H.T))[0])
        return smallest - 64 * p * 2.0 ** -52 * float(torch.linalg.matrix_norm(H))

    def hvp_with_logits(self, v: torch.Tensor, single: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`hvp` and v's directional logits per chunk (see ``CachedCurvature.hvp_sum_with_logits``;
        ``single``: the product in float32)."""
        total, logits = self.cache.hvp_sum_with_logits(v, single)
        return total / self.n + self.penalty.grad(v), logits
