"""Curvature products over a set of rows at a fixed parameter vector, with the softmax cached.

A Newton or fixed-point solver multiplies the same Hessian by many vectors. The Hessian of the
logistic loss at theta depends on the data only through the softmax probabilities p_i(theta), so
:class:`CachedCurvature` computes them in one pass (plus, on request, the gradient sum and the
Hessian diagonal from the same pass) and then every product ``sum_i Hess l_i(theta) v`` is a
sweep that reuses them. The forgotten rows of an unlearning request are few and read over and
over: with ``keep_rows`` their feature chunks stay in memory too.

Rows a set leaves out (:class:`RowsWithout`: the retained rows read in place, the forgotten ones among
them) get the one-hot probabilities ``e_y``, at which a row's gradient ``p - e_y`` and curvature
``diag p - p p^T`` are exactly zero: every sum below leaves them out with no further test. Their loss,
row norm and logit changes are dropped explicitly.

Memory: n x C floats of probabilities for this process's share of the rows (one buffer, not
thousands of small blocks: those fragmented the heap to ~1 GB of resident memory at HIGGS size),
plus the rows themselves with ``keep_rows``, plus, once a Hessian diagonal is asked for on a set held in
memory, its squared features in float32 (:meth:`Rows.squares`, kept for the next iterate's diagonal).
"""

from __future__ import annotations

from typing import Sequence

import torch

from miniunlearn import distributed
from miniunlearn.core.progress import rows_read as report_rows
from miniunlearn.models.rows import (
    Rows,
    max_squared_norm,
    parallel_map,
    parallel_sum,
    squares_in_float32,
    sum_in_order,
)


class CachedCurvature:
    """Loss sums of ``rows`` at ``theta`` (no regulariser, no division by the row count).

    After construction (one pass): ``grad_sum`` = sum_i grad l_i(theta) if ``grad`` was asked for,
    ``diag_sum`` = the diagonal of sum_i Hess l_i(theta) if ``diag`` was (a sequence of classes: only their
    blocks, NaN elsewhere), ``loss_sum`` = sum_i l_i(theta)
    if ``loss`` was, ``max_row_norm`` = max_i ||x_i|| if ``row_norm`` was, ``span`` = max_i span_c of the
    directional logits ``Theta_v x~_i`` of ``span_of`` = v if given; :meth:`hvp_sum` gives
    ``sum_i Hess l_i(theta) v``, one more pass each (counted in ``rows.rows_read``). Across
    processes every sum is over this process's chunks and then all-reduced.
    """

    def __init__(self, model, rows: Rows, theta: torch.Tensor, keep_rows: bool = False, grad: bool = False,
                 diag: bool | Sequence[int] = False, loss: bool = False, row_norm: bool = False,
                 span_of: torch.Tensor | None = None):
        self.model, self.rows, self.theta = model, rows, theta
        self.bounds = rows.local_chunk_bounds()
        first, last = self.bounds[0][0], self.bounds[-1][1]
        buffer = torch.empty(last - first, model.n_classes, dtype=theta.dtype)
        self.probs: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.left_out: list[torch.Tensor | None] = []  # per chunk: positions of the rows left out
        self.kept: list[torch.Tensor] | None = [] if keep_rows else None
        grad_sum = torch.zeros(model.n_params, dtype=theta.dtype) if grad else None
        diag_sum = torch.zeros(model.n_params, dtype=theta.dtype) if diag else None
        loss_sum = torch.zeros((), dtype=theta.dtype)
        max_row_norm_sq = 0.0
        span = 0.0
        rows_most = max(stop - start for start, stop in self.bounds)
        # a set not held in memory squares each chunk into one reused buffer: a fresh chunk-sized temporary is
        # mapped anew by the allocator each time, and touching its pages cost three times the arithmetic
        work = None
        diag_classes = None if isinstance(diag, bool) else diag
        for start, stop in self.bounds:
            X, y = rows.chunk(start, stop)
            left = rows.left_out_in(start, stop)
            probs = buffer[start - first:stop - first]
            logits = model.logits(theta, X)
            if loss:  # one normalisation for both (as training's loss and gradient pass does)
                log_p = torch.log_softmax(logits, dim=1)
                torch.exp(log_p, out=probs)
                row_loss = log_p.gather(1, y[:, None])
                if left is not None:
                    row_loss[left] = 0.0
                loss_sum -= row_loss.sum()
            else:
                probs.copy_(torch.softmax(logits, dim=1))
            if left is not None:
                probs[left] = torch.nn.functional.one_hot(y[left], model.n_classes).to(probs.dtype)
            if grad_sum is not None:
                grad_sum += model.outer_sum(model.residual(probs, y), X)
            if diag_sum is not None:
                squares = rows.squares(start, stop)
                if squares is None:
                    work = torch.empty(rows_most * rows.n_features, dtype=torch.float32) if work is None else work
                    squares = squares_in_float32(X, work[:X.numel()].view(X.shape))
                diag_sum += model.hessian_diag_sum(X, probs, squares=squares, classes=diag_classes)
            if row_norm:
                max_row_norm_sq = max(max_row_norm_sq, max_squared_norm(X, left))
            if span_of is not None and len(X):
                u = model.directional_logits(X, span_of[:, None])[:, 0, :]
                row_span = u.amax(dim=1) - u.amin(dim=1)
                if left is not None:
                    row_span[left] = 0.0
                span = max(span, float(row_span.max()))
            if self.kept is not None:
                self.kept.append(X)
            self.probs.append(probs)
            self.labels.append(y)
            self.left_out.append(left)
            report_rows(stop - start)
        rows.rows_read += len(rows)
        self.grad_sum = None if grad_sum is None else distributed.all_reduce_sum(grad_sum)
        self.diag_sum = None if diag_sum is None else distributed.all_reduce_sum(diag_sum)
        self.loss_sum = float(distributed.all_reduce_sum(loss_sum)) if loss else None
        self.max_row_norm = distributed.all_reduce_max(max_row_norm_sq) ** 0.5 if row_norm else None
        self.span = distributed.all_reduce_max(span) if span_of is not None else None
        self._probs_float32: list[torch.Tensor] | None = None

    def _features(self, j: int) -> torch.Tensor:
        return self.kept[j] if self.kept is not None else self.rows.chunk(*self.bounds[j])[0]

    def _single_features(self, j: int) -> torch.Tensor:
        return self.kept[j].to(torch.float32) if self.kept is not None else self.rows.single(*self.bounds[j])

    def hvp_sum(self, v: torch.Tensor) -> torch.Tensor:
        """``sum_i Hess l_i(theta) v`` for v of shape (p,) or (p, k): one pass over the rows."""

        def part(j: int) -> torch.Tensor:
            out = self.model.hvp_sum(self._features(j), self.probs[j], v)
            report_rows(self.bounds[j][1] - self.bounds[j][0])
            return out

        total = parallel_sum(part, range(len(self.bounds)), self.rows.workers)
        self.rows.rows_read += len(self.rows)
        return total

    def hessian_sum(self) -> torch.Tensor:
        """The dense ``sum_i Hess l_i(theta)`` (p x p) from the cached probabilities: one pass."""
        p = self.model.n_params
        total = torch.zeros(p, p, dtype=self.theta.dtype)
        for j in range(len(self.bounds)):
            self.model.hessian_sum(self._features(j), self.probs[j], out=total)
        self.rows.rows_read += len(self.rows)
        return distributed.all_reduce_sum(total)

    def hvp_sum_with_logits(self, v: torch.Tensor, single: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`hvp_sum` for one vector v, and v's directional logits ``Theta_v x~_i`` per chunk
        ((rows, C) each; zero on rows left out): a solver that builds a step ``D = sum_j alpha_j v_j`` learns
        the exact per-row logit changes of D at no extra pass (:class:`LogitSpan`).

        ``single``: the product in float32 (features, probabilities and v rounded to it; both results returned
        in v's dtype). About half a float64 pass where the two GEMMs dominate (many classes), but off by float32
        rounding: for a search whose result a float64 product checks before anything is certified."""
        probs = self._single_probs() if single else self.probs
        x = v.to(torch.float32) if single else v

        def part(j: int) -> tuple[torch.Tensor, torch.Tensor]:
            X = self._single_features(j) if single else self._features(j)
            u = self.model.directional_logits(X, x[:, None])
            report_rows(self.bounds[j][1] - self.bounds[j][0])
            if self.left_out[j] is not None:
                u[self.left_out[j]] = 0.0
            return self.model.hvp_from_logits(X, probs[j], u)[:, 0].to(v.dtype), u[:, 0, :].to(v.dtype)

        parts = parallel_map(part, range(len(self.bounds)), self.rows.workers)
        self.rows.rows_read += len(self.rows)
        total = distributed.all_reduce_sum(sum_in_order([hv for hv, _ in parts]))
        return total, [u for _, u in parts]

    def _single_probs(self) -> list[torch.Tensor]:
        """The cached probabilities rounded to float32, per chunk (made once: rows x C floats)."""
        if self._probs_float32 is None:
            self._probs_float32 = [p.to(torch.float32) for p in self.probs]
        return self._probs_float32


class LogitSpan:
    """The per-row logit changes ``z_i = Theta_D x~_i`` of a step D built up as ``sum_j alpha_j v_j``.

    :meth:`span` is ``max_i (max_c z_ic - min_c z_ic)``, the quantity the self-concordance bound of
    the logistic loss needs (docs/mini-unlearning.md, certificates); the maximum is taken over
    every process's rows. With the cached probabilities they also give the loss anywhere on the
    line ``theta + t D`` (:meth:`loss_along`). Memory: rows x C floats, like the cached probabilities
    (twice that once :meth:`loss_along` has run: it keeps their logarithms).
    """

    def __init__(self, cache: CachedCurvature):
        self.cache = cache
        self.chunks = [torch.zeros_like(p) for p in cache.probs]
        self._log_probs: list[torch.Tensor] | None = None  # the same at every t: taken once

    def accumulate(self, logits: list[torch.Tensor], alpha: float) -> None:
        for z, u in zip(self.chunks, logits):
            z.add_(u, alpha=float(alpha))

    def replace(self, logits: list[torch.Tensor]) -> None:
        """Start again from D's logit changes measured afresh (per chunk, e.g. by a float64 product of D)."""
        self.chunks = [u.clone() for u in logits]

    def span(self) -> float:
        local = max((float((z.amax(dim=1) - z.amin(dim=1)).max()) for z in self.chunks if z.numel()), default=0.0)
        return distributed.all_reduce_max(local)

    def loss_along(self, t: float) -> tuple[float, float, float]:
        """The loss sum at ``theta + t D`` and its first two derivatives in t, from the cached
        probabilities and these logit changes alone (no pass over the features); summed over every
        process's rows. One group of :meth:`loss_along_blocks`, which says how."""
        value, first, second = self.loss_along_blocks(torch.tensor([float(t)], dtype=torch.float64),
                                                      torch.ones(1, self.cache.model.n_classes, dtype=torch.float64))
        return value, float(first[0]), float(second[0, 0])

    def loss_along_blocks(self, t: torch.Tensor, groups: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """The loss sum at ``theta + sum_g t_g D_g`` with its gradient and Hessian in t (k and k x k), where
        ``groups`` (k x C, 0/1) splits the classes and D_g is D's blocks of group g's classes.

        Class c's logits move only with D's block c, so D_g changes a row's logits by ``z_i`` masked to the
        group's columns, and the point's logits are ``a + (t^T groups) * z_i`` with a = log p(theta) (the
        logits up to a per-row constant, which the softmax ignores). A row's loss is ``-log q_y``, q the
        softmax there; its derivatives are ``E_q[z_g] - z_gy`` and ``Cov_q(z_g, z_h)``.
        """
        if self._log_probs is None:
            self._log_probs = [torch.log(p) for p in self.cache.probs]
        k = len(groups)
        groups = groups.to(torch.float64)
        scale = t.to(torch.float64) @ groups
        value = torch.zeros((), dtype=torch.float64)
        first = torch.zeros(k, dtype=torch.float64)
        weighted = torch.zeros_like(scale)  # sum_i q_ic z_ic^2 per class
        second = torch.zeros(k, k, dtype=torch.float64)
        for log_p, labels, z in zip(self._log_probs, self.cache.labels, self.chunks):
            if not len(z):
                continue
            log_q = torch.log_softmax(log_p + scale * z, dim=1)
            qz = log_q.exp() * z
            mean = qz @ groups.T  # E_q[z_g] per row
            value -= log_q.gather(1, labels[:, None]).sum()
            first += mean.sum(dim=0) - groups[:, labels] @ z.gather(1, labels[:, None])[:, 0]
            weighted += (qz * z).sum(dim=0)
            second -= mean.T @ mean
        second += (groups * weighted) @ groups.T
        total = distributed.all_reduce_sum(torch.cat([value[None], first, second.reshape(-1)]))
        return float(total[0]), total[1:1 + k], total[1 + k:].view(k, k)
