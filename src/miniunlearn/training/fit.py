"""Fitting from zeros with a training configuration: what training and retraining both run."""

from __future__ import annotations

import numpy as np
import torch

from miniunlearn.core.errors import ConvergenceError
from miniunlearn.models.logistic import LogisticRegression
from miniunlearn.models.objective import Objective
from miniunlearn.models.rows import Rows
from miniunlearn.solvers.newton import newton_cg
from miniunlearn.training.config import TrainConfig
from miniunlearn.training.trajectory import sgd


def fit(model: LogisticRegression, rows: Rows, config: TrainConfig, removed: np.ndarray | None = None,
        record_trajectory: bool = False, progress=None):
    """Train from zeros; returns ``(theta, info dict, trajectory record or None)``.

    In converged mode ``rows`` are the rows to fit, and a solver that stops short of
    ``||grad F|| <= tol`` raises :class:`ConvergenceError`: an unconverged model is no optimum, so
    nothing may be built on it. In trajectory mode ``rows`` must be all training rows and
    ``removed`` the forgotten ones, so batches replay the original schedule; SGD that diverges
    (non-finite parameters) raises too.
    """
    theta0 = model.zeros()
    if config.mode == "converged":
        penalty = config.penalty(model)
        objective = Objective(model, rows, penalty)
        theta, info = newton_cg(objective, theta0, config.tol, config.max_iter, progress=progress)
        theta = penalty.project(theta)  # zero-mean biases when they are not penalised (the unique minimiser)
        if not info.converged:
            raise ConvergenceError(f"Newton-CG stopped after {info.iterations} iterations at ||grad F|| = "
                                   f"{info.grad_norm:.3e} > tol {config.tol:g}; nothing was saved. Raise --max-iter, "
                                   "loosen --tol or raise --l2")
        return theta, info.as_dict(), None
    X, y = rows.tensors()
    theta, record = sgd(model, X, y, config.l2, config.sgd, theta0, removed=removed, record=record_trajectory,
                        progress=progress)
    if not torch.isfinite(theta).all():
        raise ConvergenceError("SGD diverged (NaN or inf parameters); lower the learning rate or raise l2 -- "
                               "nothing was saved")
    kept = len(rows) - (0 if removed is None else len(removed))
    info = {"iterations": config.sgd.n_iterations(len(rows)), "passes": float(config.sgd.epochs) * kept / len(rows)}
    return theta, info, record
