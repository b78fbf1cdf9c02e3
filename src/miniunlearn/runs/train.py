"""``train``: fit a model, record its unlearning history, and write a run directory."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path

import numpy as np
import torch

from miniunlearn.core.errors import InputError
from miniunlearn.core.measure import measure
from miniunlearn.core.progress import progress_bar
from miniunlearn.core.storage import atomic_write_json
from miniunlearn.data.arrays import float32_exact
from miniunlearn.evaluation.metrics import accuracy
from miniunlearn.history import DeltaGradHistory, build_mini_history, resolve_profile
from miniunlearn.history.mini import DEFAULT_MEMORY_BUDGET
from miniunlearn.models import LogisticRegression, Objective, Rows
from miniunlearn.runs.layout import DELTAGRAD_FILE, HISTORY_FILE, RUN_JSON
from miniunlearn.runs.meta import RUN_FORMAT
from miniunlearn.runs.model_file import save_model
from miniunlearn.runs.outputs import check_output_dir, prepare_output_dir
from miniunlearn.runs.run import Run
from miniunlearn.runs.stored import store_data, store_keys
from miniunlearn.solvers.newton import DEFAULT_MAX_ITER, DEFAULT_TOL
from miniunlearn.training import SGDSchedule, TrainConfig, fit
from miniunlearn.training.config import DEFAULT_CHUNK_ROWS

CURVATURE_DTYPES = ("float64", "float32")


def float32_training_data(dataset):
    """``dataset`` with its features rounded to float32 (the precision a run stores data in)."""
    rounded = {part: float32_exact(getattr(dataset, part)) for part in ("X_train", "X_test")}
    if all(np.array_equal(rounded[part], getattr(dataset, part)) for part in rounded):
        return dataset
    return dataclasses.replace(dataset, **rounded, _fingerprint=[])


def _row_keys(dataset):
    """The keys to store: the dataset's, unless they do not match its rows (a dataset whose rows
    were replaced, e.g. a shadow model's, keeps its source's keys) -- then row numbers."""
    keys = dataset.keys
    return keys if keys is not None and len(keys) == dataset.n_train else None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def record_mini_history(objective: Objective, theta: torch.Tensor, profile, fingerprint: str,
                        history_budget: int | None = None):
    """Mini-Unlearning's history at the optimum ``theta`` of ``objective`` with a resolved ``profile``
    (training and compaction both record it this way); returns it with run.json's record of it
    (``bytes`` is added on saving)."""
    with progress_bar(f"history ({profile.spec()} curvature)", None), measure() as build:
        try:
            history = build_mini_history(objective, theta, profile, fingerprint)
        except torch.linalg.LinAlgError as exc:
            raise InputError(f"the curvature at the trained optimum is not positive definite in floating "
                             f"point (l2 = {objective.l2:g} is too small for this data; {exc})") from None
    return history, {"file": HISTORY_FILE, "profile": profile.name, "profile_spec": profile.spec(),
                     "profile_options": dict(profile.options), "profile_bytes": history.profile_bytes,
                     "tensor_bytes": history.nbytes, "history_budget": history_budget,
                     "passes": objective.passes, "curvature_dtype": profile.options.get("dtype", "float64"),
                     **build.as_dict()}


def train(dataset, l2: float, out: str | Path, mode: str = "converged", tol: float = DEFAULT_TOL,
          max_iter: int = DEFAULT_MAX_ITER, sgd_schedule: SGDSchedule | None = None, profile: str = "auto",
          deltagrad_history: bool = False, memory_budget: int | None = None,
          curvature_dtype: str = "float64", overwrite: bool = False, chunk_rows: int = DEFAULT_CHUNK_ROWS,
          penalize_intercept: bool = True, mini_history: bool = True, history_budget: int | None = None) -> Run:
    """Train on ``dataset``, record the unlearning history and write the run directory ``out``.

    Converged mode minimises ``F_D(w) = mean loss + (l2/2)||w||^2`` (the biases left out of the
    penalty when ``penalize_intercept`` is False) by Newton-CG until
    ``||grad F_D|| <= tol`` and records Mini-Unlearning's history; trajectory mode runs the SGD
    schedule and, with ``deltagrad_history``, records every iterate for DeltaGrad. Nothing is
    written unless training succeeds (an unconverged solve raises
    :class:`~miniunlearn.core.errors.ConvergenceError`). Returns the opened :class:`Run`.

    The run keeps the data's preprocessing (with the model), the training rows' keys and -- for
    data no spec can reload (``Dataset.from_arrays``, DataFrames) -- the data itself, as float32
    (:mod:`miniunlearn.runs.stored`); such data are trained on in their float32 values.

    ``penalize_intercept=False`` leaves the biases out of the L2 penalty (converged mode only).
    ``profile`` is a history profile ``NAME[:key=value,...]`` (:mod:`miniunlearn.history.profiles`) or
    ``auto``: with ``history_budget`` (bytes) the most accurate profile whose stored tensors fit it,
    else ``exact`` when its build fits ``memory_budget``. ``curvature_dtype`` is the exact profile's
    ``dtype`` option.
    ``mini_history=False`` skips Mini-Unlearning's history (the dense curvature is most of a
    converged training's cost): for models, such as shadow models, that no method will unlearn
    with ``mini``.
    """
    if not dataset.reloadable:
        dataset = float32_training_data(dataset)
    config = TrainConfig(l2, mode, tol, max_iter, sgd_schedule or SGDSchedule(), chunk_rows, penalize_intercept)
    if curvature_dtype not in CURVATURE_DTYPES:
        raise InputError(f"curvature dtype must be one of {', '.join(CURVATURE_DTYPES)}, got {curvature_dtype!r}")
    check_output_dir(out, RUN_JSON, overwrite)  # fail before the work, not after it
    model = LogisticRegression(dataset.n_features, dataset.n_classes)
    if profile == "exact" and curvature_dtype != "float64":
        profile = f"exact:dtype={curvature_dtype}"
    chosen = None
    if config.mode == "converged" and mini_history:  # refuse a bad profile or budget before training
        chosen = resolve_profile(profile, model, history_budget, memory_budget or DEFAULT_MEMORY_BUDGET)
    rows = Rows(dataset.X_train, dataset.y_train, chunk_rows=config.chunk_rows)
    fingerprint = dataset.fingerprint()
    total = config.sgd.n_iterations(len(rows)) if config.mode == "trajectory" else None
    with progress_bar(f"train {dataset.name} ({config.mode})", total) as advance, measure() as timing:
        theta, info, record = fit(model, rows, config,
                                  record_trajectory=deltagrad_history and config.mode == "trajectory", progress=advance)
    training = {**info, **timing.as_dict()}
    if config.mode == "trajectory":  # SGD does not converge; record where it stopped (outside the timing)
        value, grad = Objective(model, rows, config.penalty(model)).value_grad(theta)
        training.update(objective=value, grad_norm=float(grad.norm()))

    history = None
    history_meta: dict = {}
    if config.mode == "converged" and mini_history:
        history, history_meta["mini"] = record_mini_history(Objective(model, rows, config.penalty(model)), theta,
                                                            chosen, fingerprint, history_budget)
    elif deltagrad_history:
        history = DeltaGradHistory(record.weights, record.grads, fingerprint)
        history_meta["deltagrad"] = {"file": DELTAGRAD_FILE, "iterations": history.n_iterations}

    out = prepare_output_dir(out, RUN_JSON, overwrite)
    for entry in history_meta.values():
        entry["bytes"] = history.save(out / entry["file"])
    save_model(out, model, theta, {"source": "train"}, dataset.preprocessing)
    described = dataset.describe()
    described["keys"] = store_keys(out, _row_keys(dataset))
    if not dataset.reloadable:
        described["stored"] = store_data(out, dataset)
    metrics = {
        "train_accuracy": accuracy(model, theta, dataset.X_train, dataset.y_train),
        "test_accuracy": accuracy(model, theta, dataset.X_test, dataset.y_test),
    }
    meta = {
        "format": RUN_FORMAT,
        "created": _now(),
        "model": model.describe(),
        "dataset": described,
        "config": config.as_dict(),
        "training": training,
        "metrics": metrics,
        "history": history_meta,
        "threads": torch.get_num_threads(),
    }
    atomic_write_json(out / RUN_JSON, meta)
    return Run(out)
