"""Datasets from data in memory: numpy arrays, pandas DataFrames and Series (:func:`from_arrays`,
also reachable as ``Dataset.from_arrays``).

Such a dataset has no spec that could load it again, so a run trained on it stores its data
(:func:`miniunlearn.runs.train`) as float32. The features are therefore rounded to float32 here,
once, after the preprocessing: what is trained on is exactly what is stored, and the stored
data's fingerprint is the training data's.
"""

from __future__ import annotations

import numpy as np

from miniunlearn.core.errors import DataError
from miniunlearn.data.dataset import Dataset
from miniunlearn.data.features import numeric_features
from miniunlearn.data.keys import normalize_keys
from miniunlearn.data.preprocessing import Preprocessing, class_labels


def features_of(X, what: str, feature_names=None) -> tuple[np.ndarray, list[str] | None]:
    """Raw float64 features of an array or DataFrame, checked (finite numbers), with the column names."""
    # imported here: pandas takes ~0.35 s to load; used only to recognise a DataFrame
    import pandas as pd

    if isinstance(X, pd.DataFrame):
        names = [str(c) for c in X.columns]
        frame = X.reset_index(drop=True)
        frame.columns = names
        if len(set(names)) != len(names):
            raise DataError(f"{what}: the DataFrame has repeated column names")
        return numeric_features(frame, names, 0, what, 0), names
    array = np.asarray(X)
    if array.ndim != 2:
        raise DataError(f"{what}: features must be a 2-d array (rows x features), got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        frame = pd.DataFrame(array, columns=[str(j) for j in range(array.shape[1])])
        return numeric_features(frame, list(frame.columns), 0, what, 0), _names(feature_names, array.shape[1], what)
    values = array.astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i, j = (int(v[0]) for v in np.nonzero(bad))
        raise DataError(f"{what}: row {i}, feature {j} is {values[i, j]} (missing or not finite)")
    return values, _names(feature_names, array.shape[1], what)


def _names(feature_names, n_features: int, what: str) -> list[str] | None:
    if feature_names is None:
        return None
    names = [str(n) for n in feature_names]
    if len(names) != n_features:
        raise DataError(f"{what}: {len(names)} feature names for {n_features} features")
    return names


def _labels(y, n_rows: int, what: str) -> np.ndarray:
    # imported here: pandas takes ~0.35 s to load; used only to recognise a Series
    import pandas as pd

    labels = y.to_numpy() if isinstance(y, (pd.Series, pd.Index)) else np.asarray(y)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != n_rows:
        raise DataError(f"{what}: {n_rows} rows of features but labels of shape {labels.shape}")
    return labels


def float32_exact(X: np.ndarray) -> np.ndarray:
    """``X`` rounded to float32 and held as float64 (the values a run stores and trains on)."""
    return np.ascontiguousarray(X, dtype=np.float32).astype(np.float64)


def from_arrays(X, y, ids=None, X_test=None, y_test=None, *, standardize: bool = True,
                feature_names=None, name: str = "arrays") -> Dataset:
    """A dataset from in-memory data: numpy arrays or pandas DataFrames / Series.

    ``y`` holds labels of any kind JSON can store (integers, numbers, strings, booleans); they
    become the run's classes. ``ids`` are the rows' keys (default: row numbers). Without
    ``X_test`` there are no test rows. Features are standardised on ``X`` when ``standardize``,
    then rounded to float32 -- the precision a run stores them in -- so the stored data are
    exactly the data trained on (see the module docstring).
    """
    X_raw, names = features_of(X, "training features", feature_names)
    if X_raw.shape[0] == 0:
        raise DataError("training features: no rows")
    labels = _labels(y, X_raw.shape[0], "training labels")
    if (X_test is None) != (y_test is None):
        raise DataError("give both X_test and y_test, or neither")
    if X_test is not None:
        Xt_raw, _ = features_of(X_test, "test features", names)
        if Xt_raw.shape[1] != X_raw.shape[1]:
            raise DataError(f"test features have {Xt_raw.shape[1]} columns, training features {X_raw.shape[1]}")
        test_labels = _labels(y_test, Xt_raw.shape[0], "test labels")
    else:
        Xt_raw, test_labels = np.zeros((0, X_raw.shape[1])), np.zeros(0, dtype=np.int64)
    seen = class_labels(labels, "training labels")
    if len(seen) < 2:
        raise DataError(f"training labels: every row has the label {seen[0]!r}; classification needs at least two classes")
    classes = class_labels(np.concatenate([np.asarray(labels, dtype=object), np.asarray(test_labels, dtype=object)]),
                           "labels") if len(test_labels) else seen
    keys = None
    if ids is not None:
        keys = normalize_keys(ids, "ids")
        if len(keys) != X_raw.shape[0]:
            raise DataError(f"ids: {len(keys)} keys for {X_raw.shape[0]} rows")
    record = Preprocessing.fit(X_raw, classes, standardize, names,
                               "the test arrays given" if X_test is not None else "no test rows")
    return Dataset(name, name, float32_exact(record.transform(X_raw)), record.encode(labels, "training labels"),
                   float32_exact(record.transform(Xt_raw)), record.encode(test_labels, "test labels"),
                   record.n_classes, record, f"in-memory data ({X_raw.shape[0]} x {X_raw.shape[1]})", keys=keys,
                   split_rule="given")
