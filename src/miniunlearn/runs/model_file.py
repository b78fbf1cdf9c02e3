"""``model.safetensors``: a model's parameters and the preprocessing that maps raw rows to its features.

The file holds ``weight`` (C, d) and ``bias`` (C,), as torch.nn.Linear stores them, and -- when the
features were standardised -- ``feature_mean`` and ``feature_scale`` (float64); its metadata holds
the class labels in the user's values and the feature names
(:class:`~miniunlearn.data.Preprocessing`), so a model directory -- trained or unlearned --
predicts on raw rows by itself. A run directory's model is its current base's
(:mod:`miniunlearn.runs.bases`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from miniunlearn.core.errors import DataError, RunError
from miniunlearn.core.storage import load_tensors, read_json, save_tensors
from miniunlearn.data import Preprocessing
from miniunlearn.models.logistic import LogisticRegression
from miniunlearn.runs.bases import read_base
from miniunlearn.runs.layout import MODEL_FILE, RUN_JSON
from miniunlearn.runs.meta import check_run_meta

MODEL_FORMAT = "miniunlearn-model/1"


def save_model(directory: str | Path, model: LogisticRegression, theta: torch.Tensor,
               metadata: dict | None = None, preprocessing: Preprocessing | None = None) -> Path:
    """Write ``model.safetensors``: the parameters and (when given) the preprocessing record."""
    path = Path(directory) / MODEL_FILE
    meta = {"format": MODEL_FORMAT, "kind": model.kind, "n_features": model.n_features,
            "n_classes": model.n_classes, **(metadata or {})}
    tensors = model.to_linear(theta)
    if preprocessing is not None:
        meta["preprocessing"] = preprocessing.metadata()
        tensors.update(preprocessing.tensors())
    save_tensors(path, tensors, meta)
    return path


def model_dir(path: str | Path) -> Path:
    """The directory holding a model: an unlearned model's own, or a run's current base (the run
    directory itself until a compaction; :mod:`miniunlearn.runs.bases`)."""
    path = Path(path)
    if (path / RUN_JSON).is_file():
        meta = read_json(path / RUN_JSON, RUN_JSON)
        if isinstance(meta, dict) and meta.get("base") is not None:
            check_run_meta(meta, path / RUN_JSON)
            return read_base(path, meta).dir
    return path


def load_preprocessing(path: str | Path) -> Preprocessing:
    """The preprocessing saved with a model (directory or file); class numbers 0..C-1 and no
    scaling for models saved before miniunlearn kept it."""
    path = Path(path)
    if path.is_dir():
        path = model_dir(path) / MODEL_FILE
    model, _, meta = load_model(path)
    if "preprocessing" not in meta:
        return Preprocessing.class_numbers(model.n_classes, description="not recorded (features used as given)")
    try:
        record = json.loads(meta["preprocessing"])
    except json.JSONDecodeError as exc:
        raise RunError(f"model file {path}: its preprocessing record is not JSON ({exc})") from None
    names = ["feature_mean", "feature_scale"] if record.get("scaled") else []
    tensors, _ = load_tensors(path, "model file", names=names) if names else ({}, None)
    try:
        found = Preprocessing.from_json(record, tensors, f"model file {path}: preprocessing")
    except DataError as exc:
        raise RunError(str(exc)) from None
    if found.n_classes != model.n_classes or (found.scaled and found.mean.shape[0] != model.n_features):
        raise RunError(f"model file {path}: its preprocessing does not fit the model's {model.n_classes} classes "
                       f"and {model.n_features} features")
    return found


def load_model(path: str | Path) -> tuple[LogisticRegression, torch.Tensor, dict]:
    """Load a model directory's (or file's) ``model.safetensors``: returns (model, theta, metadata).

    A run directory gives its current base's model."""
    path = Path(path)
    if path.is_dir():
        path = model_dir(path) / MODEL_FILE
    tensors, meta = load_tensors(path, "model file", names=["weight", "bias"])
    weight, bias = tensors["weight"], tensors["bias"]
    if weight.dim() != 2 or bias.dim() != 1 or weight.shape[0] != bias.shape[0]:
        raise RunError(f"model file {path} is corrupted: weight {tuple(weight.shape)}, bias {tuple(bias.shape)}")
    if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
        raise RunError(f"model file {path} is corrupted: NaN or inf parameters")
    model = LogisticRegression(weight.shape[1], weight.shape[0])
    return model, model.from_linear(weight, bias), meta
