"""The :class:`Dataset` every loader returns, dataset specs, and the loader registry."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from miniunlearn.core.errors import DataError, InputError
from miniunlearn.core.params import Param, validate_params
from miniunlearn.core.text import parse_spec


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split exactly as training sees it.

    Features are preprocessed (see ``preprocessing``) and carry no bias column: the model
    has its own bias. ``X_train`` is float64 in memory, or a float32 memory map for data
    larger than RAM; labels are integers ``0..n_classes-1``.
    """

    name: str
    spec: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    preprocessing: dict[str, Any]
    source: str
    synthetic: bool = False
    _fingerprint: list = field(default_factory=list, repr=False)

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.X_test.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    def fingerprint(self) -> str:
        """SHA-256 over the training rows' ids, labels and features (cached)."""
        if not self._fingerprint:
            from miniunlearn.data.fingerprint import fingerprint_arrays

            self._fingerprint.append(fingerprint_arrays(self.X_train, self.y_train, self.n_classes))
        return self._fingerprint[0]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "spec": self.spec,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_features": self.n_features,
            "n_classes": self.n_classes,
            "synthetic": self.synthetic,
            "source": self.source,
            "preprocessing": self.preprocessing,
            "fingerprint": self.fingerprint(),
        }


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    summary: str
    loader: Callable[..., Dataset]
    parameters: dict[str, Param]
    available: Callable[[], tuple[bool, str]]


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(name: str, summary: str, parameters: dict[str, Param] | None = None,
                     available: Callable[[], tuple[bool, str]] | None = None):
    """Decorator: make ``loader(**options) -> Dataset`` loadable as ``name[:key=value,...]``.

    ``parameters`` declare the options (:class:`~miniunlearn.core.params.Param`); values are
    validated before the loader is called.
    """

    def decorate(loader: Callable[..., Dataset]) -> Callable[..., Dataset]:
        _REGISTRY[name] = DatasetInfo(name, summary, loader, dict(parameters or {}),
                                      available or (lambda: (True, "built in")))
        return loader

    return decorate


def dataset_names() -> list[str]:
    return sorted(_REGISTRY)


def dataset_info(name: str) -> DatasetInfo:
    if name not in _REGISTRY:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(dataset_names())}")
    return _REGISTRY[name]


def load_dataset(spec: str) -> Dataset:
    """Load a dataset from its spec, e.g. ``"digits"`` or ``"synthetic:n_samples=5000,n_classes=3"``."""
    try:
        name, options = parse_spec(spec, "dataset spec")
    except InputError as exc:
        raise DataError(f"{exc}; see `miniunlearn data list`") from None
    info = dataset_info(name)
    try:
        values = validate_params(f"dataset {name!r}", info.parameters, options)
    except InputError as exc:
        raise DataError(str(exc)) from None
    dataset = info.loader(**values)
    return dataclasses.replace(dataset, spec=spec.strip())


def standardize(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Centre and scale every feature by the training mean and standard deviation.

    Constant features keep scale 1 so they stay finite (and zero after centring).
    """
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0] = 1.0
    record = {"features": "standardize (train mean and std; constant features unscaled)"}
    return (X_train - mean) / std, (X_test - mean) / std, record


def stratified_split(X: np.ndarray, y: np.ndarray, test_size: float, seed: int):
    from sklearn.model_selection import train_test_split

    return train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)


def check_finite(name: str, *arrays: np.ndarray) -> None:
    for array in arrays:
        if not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).sum())
            raise DataError(f"dataset {name!r} holds {bad} NaN or infinite value(s); clean the data first")


def as_labels(name: str, y: np.ndarray) -> tuple[np.ndarray, int]:
    """Map arbitrary labels to 0..C-1 (sorted order) and return them with C."""
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"dataset {name!r} has a single class; classification needs at least two")
    return codes.astype(np.int64), int(len(classes))
