"""What turns a user's raw rows into the features and class numbers the model sees, kept with the model.

A :class:`Preprocessing` record holds

* the per-feature affine map ``x -> (x - mean) / scale`` (``mean`` and ``scale`` float64 vectors;
  absent means the raw features are used as they are),
* the class labels in the user's own values (``classes[c]`` is the label of class number ``c``;
  integers, finite numbers, strings or booleans -- what JSON can hold),
* the feature names (columns of a table, when the data had them) and a description of the split.

Model weights are defined on the preprocessed features, so a model applies to raw features
``x`` as ``logits = W (x - mean) / scale + b``; :meth:`Preprocessing.raw_linear` folds the map
into the weights, ``W' = W / scale`` and ``b' = b - W' mean``, for tools that want one linear map
on raw features (scikit-learn's ``coef_`` and ``intercept_``).

The means and variances are accumulated in chunks by :class:`RunningMoments` (Chan et al.'s
pairwise update of count, mean and sum of squared deviations), so a memory-mapped set is never
copied whole and the variance does not suffer the cancellation of ``E[x^2] - E[x]^2``.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field

import numpy as np
import torch

from miniunlearn.core.errors import DataError

# Standardisation keeps constant features finite: their scale is 1 (they become zero after centring).
STANDARDIZE = "standardize (train mean and std; constant features unscaled)"
MAX_CLASSES = 10_000


@dataclass
class RunningMoments:
    """Per-feature count, mean and sum of squared deviations ``M2``, updated one chunk at a time.

    Merging a chunk with count m, mean mu_b and M2_b into (n, mu_a, M2_a) gives
    ``mu = mu_a + (mu_b - mu_a) m / (n + m)`` and
    ``M2 = M2_a + M2_b + (mu_b - mu_a)^2 n m / (n + m)``; the standard deviation is ``sqrt(M2 / n)``.
    """

    n_features: int
    count: int = 0
    mean: np.ndarray = field(init=False)
    m2: np.ndarray = field(init=False)

    def __post_init__(self):
        self.mean = np.zeros(self.n_features)
        self.m2 = np.zeros(self.n_features)

    def update(self, X: np.ndarray) -> None:
        m = int(X.shape[0])
        if m == 0:
            return
        X = np.asarray(X, dtype=np.float64)
        chunk_mean = X.mean(axis=0)
        chunk_m2 = ((X - chunk_mean) ** 2).sum(axis=0)
        total = self.count + m
        delta = chunk_mean - self.mean
        self.mean = self.mean + delta * (m / total)
        self.m2 = self.m2 + chunk_m2 + delta ** 2 * (self.count * m / total)
        self.count = total

    def mean_and_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """The training mean and standard deviation (1 where a feature is constant)."""
        if self.count == 0:
            raise DataError("no training rows to compute feature statistics from")
        scale = np.sqrt(self.m2 / self.count)
        scale[scale == 0] = 1.0
        return self.mean.copy(), scale


def plain_label(value, what: str = "labels"):
    """A label as a plain Python value that JSON stores exactly: int, finite float, str or bool."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise DataError(f"{what}: a label is {number}; labels must be finite")
        return number
    if isinstance(value, (str, np.str_)):
        return str(value)
    raise DataError(f"{what}: labels must be integers, numbers, strings or booleans; found "
                    f"{type(value).__name__} {value!r}")


def class_labels(values, what: str = "labels") -> list:
    """The sorted distinct labels of ``values`` as plain values (see :func:`plain_label`).

    Refuses labels JSON cannot hold, missing labels, and mixtures that have no order (numbers
    with strings): the class numbers are the positions in this sorted list.
    """
    array = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    if array.ndim != 1:
        raise DataError(f"{what} must be one label per row (a 1-d array), got shape {array.shape}")
    if array.dtype.kind in "biuf":
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise DataError(f"{what}: {int((~np.isfinite(array)).sum())} label(s) are missing (NaN) or infinite")
        distinct = np.unique(array)
    else:
        distinct = _distinct_objects(array, what)
    labels = [plain_label(v, what) for v in distinct]
    kinds = {_kind(v) for v in labels}
    if len(kinds) > 1:
        raise DataError(f"{what} mix {' and '.join(sorted(kinds))}; use one kind of label (e.g. all strings)")
    if len(labels) > MAX_CLASSES:
        raise DataError(f"{what}: {len(labels)} distinct labels (at most {MAX_CLASSES} classes); is this column "
                        "a class label?")
    return sorted(labels)


def _distinct_objects(array: np.ndarray, what: str) -> list:
    # imported here: pandas takes ~0.35 s to load; only text labels need it
    import pandas as pd

    series = pd.Series(array, dtype=object)
    missing = series.isna()
    if missing.any():
        row = int(np.flatnonzero(missing.to_numpy())[0])
        raise DataError(f"{what}: row {row} has no label (missing value)")
    return list(pd.unique(series))


def _kind(value) -> str:
    if isinstance(value, bool):
        return "booleans"
    return "strings" if isinstance(value, str) else "numbers"


@dataclass(frozen=True, eq=False)
class Preprocessing:
    """Raw features -> model features, class numbers <-> the user's labels (see the module docstring)."""

    classes: tuple
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    feature_names: tuple[str, ...] | None = None
    description: str = "none (features used as given)"
    split: str = ""

    def __post_init__(self):
        object.__setattr__(self, "classes", tuple(plain_label(c, "class labels") for c in self.classes))
        if (self.mean is None) != (self.scale is None):
            raise ValueError("give both mean and scale, or neither")
        if self.mean is not None:
            object.__setattr__(self, "mean", np.asarray(self.mean, dtype=np.float64).reshape(-1))
            object.__setattr__(self, "scale", np.asarray(self.scale, dtype=np.float64).reshape(-1))
            if self.mean.shape != self.scale.shape or not (np.isfinite(self.mean).all()
                                                           and np.isfinite(self.scale).all() and (self.scale > 0).all()):
                raise DataError("preprocessing: mean and scale must be finite vectors of one length, scale positive")
        if self.feature_names is not None:
            object.__setattr__(self, "feature_names", tuple(str(n) for n in self.feature_names))

    @classmethod
    def fit(cls, X_train: np.ndarray, classes, standardize: bool, feature_names=None, split: str = "") -> "Preprocessing":
        """Standardisation statistics of ``X_train`` (when ``standardize``) with the given classes."""
        if not standardize:
            return cls(tuple(classes), feature_names=feature_names, split=split)
        moments = RunningMoments(X_train.shape[1])
        moments.update(X_train)
        mean, scale = moments.mean_and_scale()
        return cls(tuple(classes), mean, scale, feature_names, STANDARDIZE, split)

    @classmethod
    def class_numbers(cls, n_classes: int, **kwargs) -> "Preprocessing":
        """Labels that are already the class numbers 0..C-1."""
        return cls(tuple(range(int(n_classes))), **kwargs)

    # -- features -------------------------------------------------------------------------------
    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def scaled(self) -> bool:
        return self.mean is not None

    def transform(self, X_raw: np.ndarray) -> np.ndarray:
        """``(X - mean) / scale`` in float64 (a float64 copy of X when there is no scaling)."""
        X = np.asarray(X_raw, dtype=np.float64)
        if self.mean is None:
            return X.copy() if X is X_raw else X
        if X.shape[-1] != self.mean.shape[0]:
            raise DataError(f"the data have {X.shape[-1]} features, the model expects {self.mean.shape[0]}")
        out = X - self.mean
        out /= self.scale
        return out

    def inverse(self, Z: np.ndarray) -> np.ndarray:
        """The raw features of preprocessed rows, ``z scale + mean`` (float64; a copy)."""
        X = np.array(Z, dtype=np.float64)
        if self.mean is None:
            return X
        X *= self.scale
        X += self.mean
        return X

    def raw_linear(self, weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model ``W z + b`` on preprocessed features ``z`` as ``W' x + b'`` on raw features ``x``."""
        weight, bias = np.asarray(weight, dtype=np.float64), np.asarray(bias, dtype=np.float64)
        if self.mean is None:
            return weight.copy(), bias.copy()
        folded = weight / self.scale
        return folded, bias - folded @ self.mean

    def feature_linear(self, weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`raw_linear`: ``W' x + b'`` on raw features as ``W z + b`` on this record's
        features, ``W = W' scale`` and ``b = b' + W' mean`` (the same logits for every raw row)."""
        weight, bias = np.asarray(weight, dtype=np.float64), np.asarray(bias, dtype=np.float64)
        if self.mean is None:
            return weight.copy(), bias.copy()
        return weight * self.scale, bias + weight @ self.mean

    # -- labels ---------------------------------------------------------------------------------
    def labels_array(self) -> np.ndarray:
        """The class labels as a numpy array (strings, integers, floats or booleans)."""
        return np.asarray(self.classes)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Class numbers -> the user's labels."""
        return self.labels_array()[np.asarray(codes, dtype=np.int64)]

    def encode(self, labels, what: str = "labels") -> np.ndarray:
        """The user's labels -> class numbers; a label the model does not know is an error naming it.

        Equal values match across types (the label ``1.0`` is the class ``1``), as in a dict.
        """
        lookup = {label: code for code, label in enumerate(self.classes)}
        values = np.asarray(labels)
        if values.ndim != 1:
            raise DataError(f"{what} must be one label per row (a 1-d array), got shape {values.shape}")
        plain = values.tolist()
        codes = np.fromiter((lookup.get(v, -1) if _hashable(v) else -1 for v in plain), dtype=np.int64, count=len(plain))
        unknown = np.flatnonzero(codes < 0)
        if unknown.size:
            raise DataError(f"{what}: row {int(unknown[0])} has the label {plain[unknown[0]]!r}, "
                            f"which is none of the model's classes ({_preview(self.classes)})")
        return codes

    # -- storage --------------------------------------------------------------------------------
    def to_json(self) -> dict:
        """Everything but the statistics, as JSON (the statistics are tensors: :meth:`tensors`)."""
        return {"features": self.description, "split": self.split, "scaled": self.scaled,
                "classes": list(self.classes), "feature_names": None if self.feature_names is None
                else list(self.feature_names)}

    def tensors(self) -> dict:
        """``{"feature_mean", "feature_scale"}`` float64 torch tensors (empty without scaling)."""
        if self.mean is None:
            return {}
        return {"feature_mean": torch.from_numpy(self.mean.copy()), "feature_scale": torch.from_numpy(self.scale.copy())}

    def metadata(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, record: dict, tensors: dict | None = None, where: str = "preprocessing") -> "Preprocessing":
        """Inverse of :meth:`to_json` plus :meth:`tensors`; a malformed record is a :class:`DataError`."""
        try:
            classes = record["classes"]
            names = record.get("feature_names")
            scaled = bool(record.get("scaled"))
            mean = scale = None
            if scaled:
                mean, scale = (tensors or {})["feature_mean"].numpy(), (tensors or {})["feature_scale"].numpy()
            return cls(tuple(classes), mean, scale, None if names is None else tuple(names),
                       str(record.get("features", "")), str(record.get("split", "")))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise DataError(f"{where} is malformed ({type(exc).__name__}: {exc})") from None

    def same_as(self, other: "Preprocessing") -> bool:
        """Equal classes, feature names and statistics (bit for bit)."""
        def same(a, b):
            return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))

        return (self.classes == other.classes and self.feature_names == other.feature_names
                and same(self.mean, other.mean) and same(self.scale, other.scale))


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _preview(values, limit: int = 5) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")
