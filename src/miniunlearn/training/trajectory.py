"""Trajectory training: seeded mini-batch SGD with a fixed schedule (DeltaGrad's setting).

    w_{t+1} = w_t - eta_t ( (1/|B_t|) sum_{i in B_t} grad l_i(w_t) + lambda w_t )

Epoch e visits the rows in the order ``default_rng([seed, e]).permutation(n)``, cut into
consecutive batches of ``batch_size``. Retraining replays exactly these batches with the
forgotten rows removed (a batch left empty applies the weight decay alone), which is the
retrained trajectory that DeltaGrad and the trajectory mode of Mini-Unlearning target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np
import torch

from miniunlearn.core.errors import InputError
from miniunlearn.core.params import Interval, Param, validate_params

SGD_PARAMETERS = {
    "epochs": Param(20, Interval(Integral, 1, 100_000), help="trajectory mode: epochs"),
    "batch_size": Param(16384, Interval(Integral, 1, 1 << 30), help="trajectory mode: rows per batch"),
    "lr": Param(0.1, Interval(Real, 0, 100, closed="right"), help="trajectory mode: initial learning rate"),
    "seed": Param(0, Interval(Integral, 0, 2**63 - 1), help="trajectory mode: batch-order seed"),
}
_STEP_EPOCH = Interval(Integral, 0, 100_000)
_STEP_LR = SGD_PARAMETERS["lr"].constraints[0]


@dataclass(frozen=True)
class SGDSchedule:
    epochs: int = 20
    batch_size: int = 16384
    lr: float = 0.1
    # (epoch, lr) pairs: from that epoch on the learning rate is lr; DeltaGrad's is 0.1, then 0.05 from epoch 10
    lr_steps: tuple = field(default_factory=lambda: ((10, 0.05),))
    seed: int = 0

    def __post_init__(self):
        values = validate_params("SGD schedule", SGD_PARAMETERS, {"epochs": self.epochs, "batch_size": self.batch_size,
                                                                  "lr": self.lr, "seed": self.seed})
        for name, value in values.items():
            object.__setattr__(self, name, value)
        steps = []
        for epoch, lr in self.lr_steps:
            ok_epoch, epoch_value = _STEP_EPOCH.convert(epoch)
            ok_lr, lr_value = _STEP_LR.convert(lr)
            if not (ok_epoch and ok_lr):
                raise InputError(f"learning-rate step {epoch}:{lr} needs an epoch that is {_STEP_EPOCH} "
                                 f"and a learning rate that is {_STEP_LR}")
            steps.append((epoch_value, lr_value))
        object.__setattr__(self, "lr_steps", tuple(steps))

    def lr_at(self, epoch: int) -> float:
        lr = self.lr
        for start, value in sorted(self.lr_steps):
            if epoch >= start:
                lr = value
        return lr

    def batches(self, n: int):
        """Yield ``(epoch, lr, ids)`` for every SGD iteration, in order."""
        for epoch in range(self.epochs):
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
            lr = self.lr_at(epoch)
            for start in range(0, n, self.batch_size):
                yield epoch, lr, order[start:start + self.batch_size]

    def n_iterations(self, n: int) -> int:
        return self.epochs * (-(-n // self.batch_size))

    def as_dict(self) -> dict:
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                "lr_steps": [list(s) for s in self.lr_steps], "seed": self.seed}

    @classmethod
    def from_dict(cls, data: dict) -> "SGDSchedule":
        return cls(int(data["epochs"]), int(data["batch_size"]), float(data["lr"]),
                   tuple((int(e), float(v)) for e, v in data.get("lr_steps", [])), int(data["seed"]))


@dataclass
class TrajectoryRecord:
    """DeltaGrad's full history: w_t and the batch-mean loss gradient g_t at w_t, for every t."""

    weights: torch.Tensor  # (T, p): w_t before step t
    grads: torch.Tensor    # (T, p): (1/|B_t|) sum_{i in B_t} grad l_i(w_t)


def sgd(model, X: np.ndarray, y: np.ndarray, l2: float, schedule: SGDSchedule, theta0: torch.Tensor,
        removed: np.ndarray | None = None, record: bool = False, progress=None):
    """Run the schedule; rows in ``removed`` are dropped from every batch (the retrained trajectory)."""
    n = len(y)
    keep = None
    if removed is not None and len(removed):
        keep = np.ones(n, dtype=bool)
        keep[removed] = False
    theta = theta0.clone()
    T = schedule.n_iterations(n)
    weights = torch.empty(T, model.n_params, dtype=theta.dtype) if record else None
    grads = torch.empty(T, model.n_params, dtype=theta.dtype) if record else None
    X_t = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float64)) if not isinstance(X, torch.Tensor) else X
    y_t = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)) if not isinstance(y, torch.Tensor) else y
    for t, (epoch, lr, ids) in enumerate(schedule.batches(n)):
        if keep is not None:
            ids = ids[keep[ids]]
        if len(ids):
            idx = torch.from_numpy(ids)
            g = model.grad_sum(theta, X_t[idx], y_t[idx]) / len(ids)
        else:
            g = torch.zeros_like(theta)
        if record:
            weights[t] = theta
            grads[t] = g
        theta = theta - lr * (g + l2 * theta)
        if progress is not None:
            progress(1, info=f"epoch {epoch + 1}/{schedule.epochs}")
    return theta, (TrajectoryRecord(weights, grads) if record else None)
