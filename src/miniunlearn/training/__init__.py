"""Training with a minimal history, and retraining (the gold standard) with the same configuration.

``train(dataset, l2, out)`` fits multinomial logistic regression (SPEC section 2), records the
history that unlearning needs, and writes a run directory. Retraining (the ``retrain`` method in
:mod:`miniunlearn.methods`) calls :func:`fit` with the very same configuration on the retained rows.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from miniunlearn.errors import InputError
from miniunlearn.models.logistic import LogisticRegression
from miniunlearn.models.objective import Objective
from miniunlearn.models.rows import Rows
from miniunlearn.training.converged import DEFAULT_MAX_ITER, DEFAULT_TOL, SolverInfo, newton_cg
from miniunlearn.training.trajectory import SGDSchedule, sgd

MODES = ("converged", "trajectory")

__all__ = ["TrainConfig", "fit", "train", "SGDSchedule", "DEFAULT_TOL", "MODES"]


@dataclass
class TrainConfig:
    """Everything that determines the trained parameters (init is always zeros)."""

    l2: float
    mode: str = "converged"
    tol: float = DEFAULT_TOL
    max_iter: int = DEFAULT_MAX_ITER
    sgd: SGDSchedule = field(default_factory=SGDSchedule)
    chunk_rows: int = 8192

    def __post_init__(self):
        if not (isinstance(self.l2, (int, float)) and np.isfinite(self.l2) and self.l2 > 0):
            raise InputError(f"l2 must be a positive finite number (the objective must be strongly convex), got {self.l2}")
        if self.mode not in MODES:
            raise InputError(f"unknown training mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if not self.tol > 0:
            raise InputError(f"tol must be positive, got {self.tol}")
        if self.max_iter < 1:
            raise InputError(f"max_iter must be at least 1, got {self.max_iter}")

    def as_dict(self) -> dict:
        out = {"l2": self.l2, "mode": self.mode, "init": "zeros", "chunk_rows": self.chunk_rows}
        if self.mode == "converged":
            out.update(solver="newton-cg", tol=self.tol, max_iter=self.max_iter)
        else:
            out.update(solver="sgd", sgd=self.sgd.as_dict())
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        sgd_cfg = SGDSchedule.from_dict(data["sgd"]) if "sgd" in data else SGDSchedule()
        return cls(float(data["l2"]), data["mode"], float(data.get("tol", DEFAULT_TOL)),
                   int(data.get("max_iter", DEFAULT_MAX_ITER)), sgd_cfg, int(data.get("chunk_rows", 8192)))


def fit(model: LogisticRegression, rows: Rows, config: TrainConfig, removed: np.ndarray | None = None,
        record_trajectory: bool = False, progress=None):
    """Train from zeros; returns ``(theta, info dict, trajectory record or None)``.

    In converged mode ``rows`` are the rows to fit. In trajectory mode ``rows`` must be all
    training rows and ``removed`` the forgotten ones, so batches replay the original schedule.
    """
    theta0 = model.zeros()
    if config.mode == "converged":
        objective = Objective(model, rows, config.l2)
        theta, info = newton_cg(objective, theta0, config.tol, config.max_iter, progress=progress)
        if not info.converged:
            import warnings

            warnings.warn(f"Newton-CG stopped after {info.iterations} iterations at |grad F| = {info.grad_norm:.3e} "
                          f"> tol {config.tol:g}", RuntimeWarning, stacklevel=2)
        return theta, info.as_dict(), None
    X, y = rows.tensors()
    theta, record = sgd(model, X, y, config.l2, config.sgd, theta0, removed=removed, record=record_trajectory,
                        progress=progress)
    kept = len(rows) - (0 if removed is None else len(removed))
    info = {"iterations": config.sgd.n_iterations(len(rows)), "passes": float(config.sgd.epochs) * kept / len(rows)}
    return theta, info, record


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def train(dataset, l2: float, out: str | Path, mode: str = "converged", tol: float = DEFAULT_TOL,
          max_iter: int = DEFAULT_MAX_ITER, sgd_schedule: SGDSchedule | None = None, profile: str = "auto",
          deltagrad_history: bool = False, memory_budget: int | None = None,
          curvature_dtype: str = "float64", overwrite: bool = False, chunk_rows: int = 8192):
    """Train on ``dataset``, record the unlearning history and write the run directory ``out``.

    Returns the opened :class:`~miniunlearn.run.Run`.
    """
    from miniunlearn.evaluation.metrics import accuracy
    from miniunlearn.history import build_mini_history, choose_profile
    from miniunlearn.history.deltagrad import DeltaGradHistory
    from miniunlearn.history.mini import DEFAULT_MEMORY_BUDGET
    from miniunlearn.measure import measure
    from miniunlearn.progress import progress_bar
    from miniunlearn.run import DELTAGRAD_FILE, HISTORY_FILE, RUN_FORMAT, RUN_JSON, Run, prepare_output_dir, save_model
    from miniunlearn.storage import atomic_write_json

    config = TrainConfig(l2, mode, tol, max_iter, sgd_schedule or SGDSchedule(), chunk_rows)
    if curvature_dtype not in ("float64", "float32"):
        raise InputError(f"curvature dtype must be float64 or float32, got {curvature_dtype!r}")
    out = prepare_output_dir(out, RUN_JSON, overwrite)
    model = LogisticRegression(dataset.n_features, dataset.n_classes)
    rows = Rows(dataset.X_train, dataset.y_train, chunk_rows=chunk_rows)
    fingerprint = dataset.fingerprint()
    total = config.sgd.n_iterations(len(rows)) if mode == "trajectory" else None
    with progress_bar(f"train {dataset.name} ({mode})", total) as advance, measure() as timing:
        theta, info, record = fit(model, rows, config, record_trajectory=deltagrad_history and mode == "trajectory",
                                  progress=advance)
    if not torch.isfinite(theta).all():
        raise InputError("training diverged (NaN or inf parameters); lower the learning rate or raise l2 -- "
                         "nothing was saved as a model")
    training = {**info, **timing.as_dict()}
    if mode == "trajectory":  # SGD does not converge; record where it stopped (outside the timing)
        value, grad = Objective(model, rows, config.l2).value_grad(theta)
        training.update(objective=value, grad_norm=float(grad.norm()))

    history_meta: dict = {}
    if mode == "converged":
        chosen = choose_profile(profile, model.n_params, memory_budget or DEFAULT_MEMORY_BUDGET)
        objective = Objective(model, rows, config.l2)
        passes_before = objective.passes
        with progress_bar(f"history ({chosen} curvature)", None), measure() as build:
            try:
                history = build_mini_history(objective, theta, chosen, fingerprint,
                                             getattr(torch, curvature_dtype))
            except torch.linalg.LinAlgError as exc:
                raise InputError(f"the curvature at the trained optimum is not positive definite in floating "
                                 f"point (l2 = {l2:g} is too small for this data; {exc})") from None
        nbytes = history.save(out / HISTORY_FILE)
        history_meta["mini"] = {"file": HISTORY_FILE, "profile": chosen, "bytes": nbytes,
                                "tensor_bytes": history.nbytes, "passes": objective.passes - passes_before,
                                "curvature_dtype": curvature_dtype, **build.as_dict()}
    elif deltagrad_history:
        dg = DeltaGradHistory(record.weights, record.grads, fingerprint)
        nbytes = dg.save(out / DELTAGRAD_FILE)
        history_meta["deltagrad"] = {"file": DELTAGRAD_FILE, "bytes": nbytes, "iterations": dg.n_iterations}

    save_model(out, model, theta, {"source": "train"})
    metrics = {
        "train_accuracy": accuracy(model, theta, dataset.X_train, dataset.y_train),
        "test_accuracy": accuracy(model, theta, dataset.X_test, dataset.y_test),
    }
    meta = {
        "format": RUN_FORMAT,
        "created": _now(),
        "model": model.describe(),
        "dataset": dataset.describe(),
        "config": config.as_dict(),
        "training": training,
        "metrics": metrics,
        "history": history_meta,
        "threads": torch.get_num_threads(),
    }
    atomic_write_json(out / RUN_JSON, meta)
    return Run(out)
