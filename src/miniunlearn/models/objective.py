"""The regularised empirical risk of SPEC section 2 over a set of rows.

    F_S(theta) = (1/|S|) sum_{i in S} l(theta; z_i) + (lambda/2) ||theta||^2

with the L2 penalty on every parameter (bias too), as weight decay applies it.
"""

from __future__ import annotations

import torch

from miniunlearn.models.rows import Rows


class Objective:
    """``F_S`` and its derivatives; every method is one chunked sweep over the rows."""

    def __init__(self, model, rows: Rows, l2: float):
        if len(rows) == 0:
            raise ValueError("the objective needs at least one row")
        self.model = model
        self.rows = rows
        self.l2 = float(l2)
        self.n = len(rows)

    @property
    def passes(self) -> float:
        """Sweeps over the rows so far (one sweep = every row read once)."""
        return self.rows.rows_read / self.n

    def value_grad(self, theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        loss, grad = self.rows.map_reduce(lambda X, y: self.model.loss_grad_sum(theta, X, y))
        value = float(loss) / self.n + 0.5 * self.l2 * float(theta @ theta)
        return value, grad / self.n + self.l2 * theta

    def value(self, theta: torch.Tensor) -> float:
        loss = self.rows.map_reduce(lambda X, y: self.model.loss_sum(theta, X, y))
        return float(loss) / self.n + 0.5 * self.l2 * float(theta @ theta)

    def grad_sum(self, theta: torch.Tensor) -> torch.Tensor:
        """``sum_{i in S} grad l_i(theta)`` without the regulariser (the G_S of SPEC section 3)."""
        return self.rows.map_reduce(lambda X, y: self.model.grad_sum(theta, X, y))

    def hvp(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``(Hess F_S(theta)) v`` for v of shape (p,) or (p, k)."""
        hv = self.rows.map_reduce(lambda X, y: self.model.hvp_sum(theta, X, y, v))
        return hv / self.n + self.l2 * v

    def hessian_loss_mean(self, theta: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The mean loss Hessian ``(1/|S|) sum_i Hess l_i(theta)`` (no regulariser), dense p x p."""
        p = self.model.n_params
        out = torch.zeros(p, p, dtype=dtype)
        for X, y in self.rows.iter_chunks():
            self.model.hessian_sum(theta, X, y, out=out, dtype=dtype)
        self.rows.rows_read += self.n
        out /= self.n
        return out

    def hessian_diag(self, theta: torch.Tensor) -> torch.Tensor:
        """Diagonal of ``Hess F_S(theta)``."""
        return self.rows.map_reduce(lambda X, y: self.model.hessian_diag_sum(theta, X, y)) / self.n + self.l2
