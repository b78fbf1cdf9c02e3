"""Mini-batch SGD building blocks shared by the fine-tune and gradient-ascent baselines:
counted row access, seeded batch orders, and the step size 1/L."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch

from miniunlearn.core.params import Interval, Param
from miniunlearn.models.rows import Rows

# options the SGD-based baselines share
LR = Param(None, Interval(Real, 0, 100, closed="right"), None,
           help="step size; None: the run's final SGD rate (trajectory runs) or 1/L (converged runs)")
SEED = Param(0, Interval(Integral, 0, 2**63 - 1), help="seed of the batch orders")
BATCH_SIZE = Interval(Integral, 1, 1 << 30)


def take(rows: Rows, X: torch.Tensor, y: torch.Tensor, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows at ``positions`` of a set whose tensors are ``(X, y)``, counted in ``rows.rows_read``.

    Pass accounting is by rows touched: reading every row of a set once is one pass.
    """
    rows.rows_read += len(positions)
    idx = torch.from_numpy(np.asarray(positions, dtype=np.int64))
    return X[idx], y[idx]


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, stream: int = 0):
    """Consecutive batches of a seeded permutation of ``range(n)`` (``default_rng([seed, stream, epoch])``;
    ``stream`` separates independent orders drawn with the same seed)."""
    order = np.random.default_rng([seed, stream, epoch]).permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def estimate_smoothness(model, rows: Rows, X: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, l2: float,
                        sample_rows: int = 4096, iterations: int = 10, seed: int = 0) -> float:
    """An estimate of L = lambda_max(Hess F_S(theta)), the curvature that bounds stable step sizes.

    Power iteration on the mean loss Hessian of a seeded subsample of at most ``sample_rows``
    rows (``X, y`` = all rows of ``rows``), plus lambda. The top eigenvalue of a mean of
    per-sample Hessians is well estimated from a few thousand rows; the rows read are counted.
    """
    n = len(y)
    pick = np.arange(n) if n <= sample_rows else np.sort(np.random.default_rng([seed, 4099]).choice(
        n, size=sample_rows, replace=False))
    Xs, ys = take(rows, X, y, pick)
    probs = model.probabilities(theta, Xs)
    v = torch.from_numpy(np.random.default_rng([seed, 4111]).standard_normal(theta.numel())).to(theta.dtype)
    v /= v.norm()
    value, products = 0.0, 0
    for _ in range(iterations):
        hv = model.hvp_sum(Xs, probs, v) / len(pick)
        products += 1
        value = float(v @ hv)
        norm = float(hv.norm())
        if norm == 0.0:
            break
        v = hv / norm
    rows.rows_read += (products - 1) * len(pick)  # every product after the first re-reads the subsample
    return value + float(l2)
