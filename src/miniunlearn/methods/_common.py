"""Helpers shared by the baseline methods: option validation and counted row access.

Not a method module (the leading underscore keeps the auto-import in
:mod:`miniunlearn.methods` from treating it as one).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from miniunlearn.errors import InputError
from miniunlearn.models.rows import Rows


def check_int(method: str, name: str, value, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; integral floats (``5.0`` from ``--set``) are accepted."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{method}: option {name} must be an integer >= {minimum}, got {value!r}")
    if isinstance(value, numbers.Integral):
        out = int(value)
    elif math.isfinite(float(value)) and float(value).is_integer():
        out = int(value)
    else:
        raise InputError(f"{method}: option {name} must be an integer >= {minimum}, got {value!r}")
    if out < minimum:
        raise InputError(f"{method}: option {name} must be an integer >= {minimum}, got {out}")
    return out


def check_float(method: str, name: str, value, low: float = 0.0, high: float = math.inf,
                low_open: bool = True, high_open: bool = True) -> float:
    """``value`` as a finite float in the interval (low, high) (ends open or closed as asked)."""
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
    interval = f"{lo}{low:g}, {'inf' if math.isinf(high) else format(high, 'g')}{hi}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise InputError(f"{method}: option {name} must be a finite number in {interval}, got {value!r}")
    out = float(value)
    below = out <= low if low_open else out < low
    above = out >= high if high_open else out > high
    if below or above:
        raise InputError(f"{method}: option {name} must lie in {interval}, got {out:g}")
    return out


def check_choice(method: str, name: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InputError(f"{method}: option {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def all_rows(rows: Rows) -> tuple[torch.Tensor, torch.Tensor]:
    """Every row of ``rows`` as tensors, without counting a pass (callers count what they use)."""
    return rows.tensors()


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
        hv = model.hvp_sum(theta, Xs, ys, v, probs=probs) / len(pick)
        products += 1
        value = float(v @ hv)
        norm = float(hv.norm())
        if norm == 0.0:
            break
        v = hv / norm
    rows.rows_read += (products - 1) * len(pick)  # every product after the first re-reads the subsample
    return value + float(l2)
