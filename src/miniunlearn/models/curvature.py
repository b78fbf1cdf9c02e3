"""Curvature products over a set of rows at a fixed parameter vector, with the softmax cached.

A Newton or fixed-point solver multiplies the same Hessian by many vectors. The Hessian of the
logistic loss at theta depends on the data only through the softmax probabilities p_i(theta), so
:class:`CachedCurvature` computes them in one pass (plus, on request, the gradient sum and the
Hessian diagonal from the same pass) and then every product ``sum_i Hess l_i(theta) v`` is a
sweep that reuses them. The forgotten rows of an unlearning request are few and read over and
over: with ``keep_rows`` their feature chunks stay in memory too.

Memory: n x C floats of probabilities for this process's share of the rows (one buffer, not
thousands of small blocks: those fragmented the heap to ~1 GB of resident memory at HIGGS size),
plus the rows themselves with ``keep_rows``.
"""

from __future__ import annotations

import torch

from miniunlearn import distributed
from miniunlearn.core.progress import rows_read as report_rows
from miniunlearn.models.rows import Rows, parallel_sum


class CachedCurvature:
    """Loss sums of ``rows`` at ``theta`` (no regulariser, no division by the row count).

    After construction (one pass): ``grad_sum`` = sum_i grad l_i(theta) if ``grad`` was asked for,
    ``diag_sum`` = the diagonal of sum_i Hess l_i(theta) if ``diag`` was; :meth:`hvp_sum` gives
    ``sum_i Hess l_i(theta) v``, one more pass each (counted in ``rows.rows_read``). Across
    processes every sum is over this process's chunks and then all-reduced.
    """

    def __init__(self, model, rows: Rows, theta: torch.Tensor, keep_rows: bool = False, grad: bool = False,
                 diag: bool = False):
        self.model, self.rows, self.theta = model, rows, theta
        self.bounds = rows.local_chunk_bounds()
        first, last = self.bounds[0][0], self.bounds[-1][1]
        buffer = torch.empty(last - first, model.n_classes, dtype=theta.dtype)
        self.probs: list[torch.Tensor] = []
        self.kept: list[torch.Tensor] | None = [] if keep_rows else None
        grad_sum = torch.zeros(model.n_params, dtype=theta.dtype) if grad else None
        diag_sum = torch.zeros(model.n_params, dtype=theta.dtype) if diag else None
        for start, stop in self.bounds:
            X, y = rows.chunk(start, stop)
            probs = buffer[start - first:stop - first]
            probs.copy_(model.probabilities(theta, X))
            if grad_sum is not None:
                grad_sum += model.outer_sum(model.residual(probs, y), X)
            if diag_sum is not None:
                diag_sum += model.hessian_diag_sum(X, probs)
            if self.kept is not None:
                self.kept.append(X)
            self.probs.append(probs)
            report_rows(stop - start)
        rows.rows_read += len(rows)
        self.grad_sum = None if grad_sum is None else distributed.all_reduce_sum(grad_sum)
        self.diag_sum = None if diag_sum is None else distributed.all_reduce_sum(diag_sum)

    def _features(self, j: int) -> torch.Tensor:
        return self.kept[j] if self.kept is not None else self.rows.chunk(*self.bounds[j])[0]

    def hvp_sum(self, v: torch.Tensor) -> torch.Tensor:
        """``sum_i Hess l_i(theta) v`` for v of shape (p,) or (p, k): one pass over the rows."""

        def part(j: int) -> torch.Tensor:
            out = self.model.hvp_sum(self._features(j), self.probs[j], v)
            report_rows(self.bounds[j][1] - self.bounds[j][0])
            return out

        total = parallel_sum(part, range(len(self.bounds)), self.rows.workers)
        self.rows.rows_read += len(self.rows)
        return total
