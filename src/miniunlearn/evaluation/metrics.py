"""Model-quality metrics computed in bounded-memory chunks."""

from __future__ import annotations

import numpy as np
import torch

from miniunlearn.models.rows import Rows


def accuracy(model, theta: torch.Tensor, X: np.ndarray, y: np.ndarray, ids: np.ndarray | None = None) -> float:
    """Share of rows (``ids`` of X, or all) whose arg-max prediction equals the label."""
    rows = Rows(X, y, ids)
    if len(rows) == 0:
        return float("nan")
    correct = rows.map_reduce(lambda Xc, yc: (model.predict(theta, Xc) == yc).sum())
    return float(correct) / len(rows)
