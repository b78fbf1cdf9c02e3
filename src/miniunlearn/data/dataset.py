"""The :class:`Dataset` every loader returns, dataset specs, and the loader registry."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from miniunlearn.core.errors import DataError, InputError
from miniunlearn.core.params import Param, validate_params
from miniunlearn.core.text import parse_spec
from miniunlearn.data.fingerprint import fingerprint_arrays
from miniunlearn.data.preprocessing import Preprocessing, class_labels


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split exactly as training sees it (``Dataset.from_arrays``: data in memory,
    :func:`miniunlearn.data.arrays.from_arrays`).

    Features are preprocessed (see ``preprocessing``, a
    :class:`~miniunlearn.data.preprocessing.Preprocessing` record that also holds the class
    labels in the user's own values) and carry no bias column: the model has its own bias.
    ``X_train`` is float64 in memory, or a float32 memory map for data larger than RAM; labels
    are class numbers ``0..n_classes-1``.

    ``keys`` are the training rows' keys (:mod:`miniunlearn.data.keys`; ``None``: the row
    numbers 0..n_train-1), ``test_keys`` the test rows'. ``reloadable`` is True when
    ``load_dataset(spec)`` gives these rows back (every registered loader); otherwise a run
    trained on the data stores it (:func:`miniunlearn.runs.train`).

    ``split_rule`` names how the test rows were chosen, and run.json records it: ``key`` or ``row``
    (a data file's held-out draw, :mod:`miniunlearn.data.split`), ``given`` (test rows of their
    own: a test file, test arrays, or none given), ``none`` (``test_size=0``) or ``loader`` (a
    built-in set's fixed split).
    """

    name: str
    spec: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    preprocessing: Preprocessing
    source: str
    synthetic: bool = False
    keys: np.ndarray | None = None
    test_keys: np.ndarray | None = None
    reloadable: bool = False
    split_rule: str = "loader"
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
            "split": self.split_rule,
            "preprocessing": self.preprocessing.to_json(),
            "fingerprint": self.fingerprint(),
        }


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    summary: str
    loader: Callable[..., Dataset]
    parameters: dict[str, Param]
    available: Callable[[], tuple[bool, str]]
    suffixes: tuple[str, ...] = ()  # a file format: its loader reads a user's file (``path=``)


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(name: str, summary: str, parameters: dict[str, Param] | None = None,
                     available: Callable[[], tuple[bool, str]] | None = None, suffixes: tuple[str, ...] = ()):
    """Decorator: make ``loader(**options) -> Dataset`` loadable as ``name[:key=value,...]``.

    ``parameters`` declare the options (:class:`~miniunlearn.core.params.Param`); values are
    validated before the loader is called. A file format names its file ``suffixes``: a spec
    that is just the path of such a file (``own.npz``) means ``name:path=own.npz``, and its
    loader returns the spec to record (with an absolute path, so a run finds the file from anywhere).
    """

    def decorate(loader: Callable[..., Dataset]) -> Callable[..., Dataset]:
        _REGISTRY[name] = DatasetInfo(name, summary, loader, dict(parameters or {}),
                                      available or (lambda: (True, "built in")), tuple(suffixes))
        return loader

    return decorate


def dataset_names() -> list[str]:
    return sorted(_REGISTRY)


def dataset_info(name: str) -> DatasetInfo:
    if name not in _REGISTRY:
        formats = ", ".join(f"{n}:path=FILE" for n in dataset_names() if _REGISTRY[n].suffixes)
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(dataset_names())}. "
                        f"Your own data: {formats} (see `miniunlearn data list`)")
    return _REGISTRY[name]


def parse_dataset_spec(spec: str) -> tuple[DatasetInfo, dict[str, Any]]:
    """The loader and validated options of a spec; a bare file path is read by its suffix's format."""
    if isinstance(spec, str) and ":" not in spec and "=" not in spec:
        for info in _REGISTRY.values():
            if info.suffixes and spec.strip().lower().endswith(info.suffixes):
                spec = f"{info.name}:path={spec.strip()}"
                break
    try:
        name, options = parse_spec(spec, "dataset spec")
    except InputError as exc:
        raise DataError(f"{exc}; see `miniunlearn data list`") from None
    info = dataset_info(name)
    try:
        return info, validate_params(f"dataset {name!r}", info.parameters, options)
    except InputError as exc:
        raise DataError(str(exc)) from None


def load_dataset(spec: str, statistics: Preprocessing | None = None) -> Dataset:
    """Load a dataset from its spec, e.g. ``"digits"``, ``"synthetic:n_samples=5000,n_classes=3"``,
    ``"csv:path=own.csv,target=label"`` or just ``"own.npz"``.

    ``statistics`` (a standardising :class:`Preprocessing`): standardise with its means and scales
    instead of the data's own -- what a compacted run's base uses (its statistics are those of the
    rows it kept). File formats apply them as they read the raw rows, so the features are the
    same, bit for bit, whether or not the file still holds rows the base left out; other datasets
    are mapped back to raw features and forward again (:func:`restandardized`).
    """
    info, values = parse_dataset_spec(spec)
    if statistics is not None and info.suffixes:
        values = {**values, "statistics": statistics}
    dataset = info.loader(**values)
    recorded = dataset.spec if info.suffixes else spec.strip()
    dataset = dataclasses.replace(dataset, spec=recorded, reloadable=True)
    if statistics is not None and not info.suffixes:
        dataset = restandardized(dataset, statistics)
    return dataset


def recorded_spec(record: dict) -> str:
    """The spec that loads a run's data again with the held-out draw the run was trained with.

    ``record`` is run.json's ``dataset`` section. Runs record their split rule (``"split"``) since
    data files with keys are split by key; a record without it comes from a run trained with the
    row rule, so a data file's spec then asks for that rule (``split=row``) explicitly.
    """
    spec = record["spec"]
    if "split" in record:
        return spec
    try:
        info, values = parse_dataset_spec(spec)
    except DataError:
        return spec  # (loading it reports the problem)
    if "split" not in info.parameters or values.get("split") is not None or values.get("test") is not None:
        return spec
    return f"{spec},split=row"


def is_file_format(spec: str) -> bool:
    """True when ``spec`` names a data file (csv, parquet, npz, svmlight), which a user may edit."""
    info, _ = parse_dataset_spec(spec)
    return bool(info.suffixes)


def restandardized(dataset: Dataset, statistics: Preprocessing, chunk_rows: int = 1 << 16) -> Dataset:
    """``dataset`` standardised by ``statistics``' means and scales instead of its own.

    Every feature goes back to its raw value and forward again, ``z' = (z s + m - m') / s'``
    (float64, in chunks; float32 features stay float32). Labels, keys and the split are unchanged.
    """
    own = dataset.preprocessing
    if not (own.scaled and statistics.scaled):
        raise DataError(f"dataset {dataset.name!r}: only standardised features can take other statistics")
    if np.array_equal(own.mean, statistics.mean) and np.array_equal(own.scale, statistics.scale):
        return dataset

    def remap(X: np.ndarray) -> np.ndarray:
        out = np.empty(X.shape, dtype=np.float32 if X.dtype == np.float32 else np.float64)
        for start in range(0, X.shape[0], chunk_rows):
            out[start:start + chunk_rows] = statistics.transform(own.inverse(X[start:start + chunk_rows]))
        return out

    record = dataclasses.replace(own, mean=statistics.mean, scale=statistics.scale,
                                 description=statistics.description)
    return dataclasses.replace(dataset, X_train=remap(dataset.X_train), X_test=remap(dataset.X_test),
                               preprocessing=record, _fingerprint=[])


def standardize(X_train: np.ndarray, X_test: np.ndarray, classes, split: str,
                feature_names=None) -> tuple[np.ndarray, np.ndarray, Preprocessing]:
    """Centre and scale every feature by the training mean and standard deviation.

    Constant features keep scale 1 so they stay finite (and zero after centring). Returns the
    transformed arrays and the :class:`Preprocessing` record that reproduces the map.
    """
    record = Preprocessing.fit(X_train, classes, True, feature_names, split)
    return record.transform(X_train), record.transform(X_test), record


def stratified_split(X: np.ndarray, y: np.ndarray, test_size: float, seed: int):
    # imported here: scikit-learn takes ~1.5 s to load; only the built-in sets' stratified split needs it
    from sklearn.model_selection import train_test_split

    return train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)


def check_finite(name: str, *arrays: np.ndarray) -> None:
    for array in arrays:
        if not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).sum())
            raise DataError(f"dataset {name!r} holds {bad} NaN or infinite value(s); clean the data first")


def as_labels(name: str, y: np.ndarray) -> tuple[np.ndarray, list]:
    """Map labels to class numbers 0..C-1 (sorted order); return them with the labels themselves."""
    classes = class_labels(y, f"dataset {name!r}")
    if len(classes) < 2:
        raise DataError(f"dataset {name!r} has a single class; classification needs at least two")
    codes = Preprocessing(tuple(classes)).encode(y, f"dataset {name!r}")
    return codes, classes
