"""Predictions of a trained run or an unlearned model on raw rows, with labels in the user's own values.

A model directory (``run.json`` or ``result.json`` beside ``model.safetensors``) carries its
preprocessing (:func:`~miniunlearn.runs.model_file.load_preprocessing`), so for raw features ``x``

    z = (x - mean) / scale,      p = softmax(W z + b),      prediction = classes[argmax p].

:class:`Predictor` is the one implementation of this; ``miniunlearn predict`` and the
scikit-learn estimator both use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from miniunlearn.core.errors import DataError
from miniunlearn.core.progress import progress_bar
from miniunlearn.core.storage import atomic_path
from miniunlearn.data import Preprocessing, Reader, load_dataset, raw_reader
from miniunlearn.data.keys import canonical, normalize_keys
from miniunlearn.models.logistic import LogisticRegression
from miniunlearn.runs.model_file import load_model, load_preprocessing

PREDICTION_COLUMN = "prediction"


@dataclass
class Predictor:
    """A model on raw features: its parameters and its preprocessing."""

    model: LogisticRegression
    theta: torch.Tensor
    preprocessing: Preprocessing

    @classmethod
    def load(cls, model_dir: str | Path) -> "Predictor":
        model, theta, _ = load_model(model_dir)
        return cls(model, theta, load_preprocessing(model_dir))

    def logits_of_features(self, Z: np.ndarray) -> np.ndarray:
        """Logits of rows already preprocessed (the model's own features)."""
        return self.model.logits(self.theta, torch.from_numpy(np.ascontiguousarray(Z, dtype=np.float64))).numpy()

    def logits(self, X_raw: np.ndarray) -> np.ndarray:
        """``W (x - mean) / scale + b`` for every raw row (n x C)."""
        if X_raw.shape[1] != self.model.n_features:
            raise DataError(f"the rows have {X_raw.shape[1]} features, the model expects {self.model.n_features}")
        return self.logits_of_features(self.preprocessing.transform(X_raw))

    @staticmethod
    def softmax(logits: np.ndarray) -> np.ndarray:
        return torch.softmax(torch.from_numpy(logits), dim=1).numpy()

    def labels(self, logits: np.ndarray) -> np.ndarray:
        """The predicted labels, in the user's values."""
        return self.preprocessing.decode(logits.argmax(axis=1))


def probability_columns(classes, taken: set[str]) -> list[str]:
    """One column name per class: the label itself, or ``p(label)`` when a label would clash."""
    names = [str(c) for c in classes]
    if len(set(names)) != len(names) or set(names) & taken:
        names = [f"p({c})" for c in classes]
    return names


def _rows_of(spec: str, predictor: Predictor):
    """``(chunks of (keys, Z, label codes or None), key column name or None, where)`` of the data to predict."""
    pre = predictor.preprocessing
    names = None if pre.feature_names is None else list(pre.feature_names)
    reader: Reader | None = raw_reader(spec, names, predictor.model.n_features)
    if reader is not None:
        def chunks():
            for chunk in reader.chunks():
                codes = None if chunk.labels is None else pre.encode(chunk.labels, f"{reader.where}: labels")
                yield chunk.keys, pre.transform(chunk.X), codes

        return chunks, reader.key_column, reader.where
    dataset = load_dataset(spec)  # a registered dataset: its test rows, already preprocessed
    if not dataset.preprocessing.same_as(pre):
        raise DataError(f"dataset {spec!r} is preprocessed differently from the model's training data (other "
                        "statistics, classes or features); give its raw rows as a file (csv, parquet, npz, svmlight)")
    keys = dataset.test_keys

    def test_rows():
        for start in range(0, dataset.n_test, 1 << 16):
            stop = min(start + (1 << 16), dataset.n_test)
            yield (None if keys is None else keys[start:stop]), np.asarray(dataset.X_test[start:stop]), \
                np.asarray(dataset.y_test[start:stop])

    return test_rows, ("key" if keys is not None else None), f"dataset {spec} (its test rows)"


def predict_to_csv(model_dir: str | Path, spec: str, out: str | Path, proba: bool = False) -> dict:
    """Predict every row of ``spec`` with the model in ``model_dir``; write ``out`` (CSV) atomically.

    Columns: the data's key column (when it has one), ``prediction`` (the label, in the user's
    values) and with ``proba`` one probability column per class, named by its label. Returns a
    summary (rows, accuracy when the data hold labels, columns).
    """
    import pandas as pd  # imported here: pandas takes ~0.4 s to load and only CSV output needs it

    predictor = Predictor.load(model_dir)
    chunks, key_column, where = _rows_of(spec, predictor)
    taken = {PREDICTION_COLUMN, *([key_column] if key_column else [])}
    proba_names = probability_columns(predictor.preprocessing.classes, taken) if proba else []
    rows = correct = labelled = 0
    with atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle, \
            progress_bar(f"predict {where}", None) as advance:
        for keys, Z, codes in chunks():
            logits = predictor.logits_of_features(Z)
            frame = pd.DataFrame({PREDICTION_COLUMN: predictor.labels(logits)})
            if key_column:
                frame.insert(0, key_column, canonical(normalize_keys(keys, f"{where}: keys")))
            if proba:
                frame[proba_names] = predictor.softmax(logits)
            frame.to_csv(handle, header=rows == 0, index=False)
            if codes is not None:
                correct += int((logits.argmax(axis=1) == codes).sum())
                labelled += len(codes)
            rows += len(Z)
            advance(len(Z), rows_read=len(Z))
        if rows == 0:  # (raised inside the block: nothing is written)
            raise DataError(f"{where}: no rows to predict")
    return {"model": str(model_dir), "data": spec, "out": str(out), "rows": rows, "key_column": key_column,
            "columns": [*([key_column] if key_column else []), PREDICTION_COLUMN, *proba_names],
            "classes": list(predictor.preprocessing.classes),
            "accuracy": (correct / labelled) if labelled else None}
