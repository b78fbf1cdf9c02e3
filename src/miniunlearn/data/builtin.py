"""Datasets that ship inside scikit-learn's wheel, and the seeded synthetic generator."""

from __future__ import annotations

import numpy as np

from miniunlearn.data.base import Dataset, as_labels, register_dataset, standardize, stratified_split

_SPLIT = {"test_size": 0.25, "seed": 0}


def _from_sklearn(name: str, X: np.ndarray, y: np.ndarray, source: str) -> Dataset:
    y, n_classes = as_labels(name, y)
    X_tr, X_te, y_tr, y_te = stratified_split(X.astype(np.float64), y, _SPLIT["test_size"], _SPLIT["seed"])
    X_tr, X_te, record = standardize(X_tr, X_te)
    record["split"] = f"stratified, test {_SPLIT['test_size']:.0%}, seed {_SPLIT['seed']}"
    return Dataset(name, name, np.ascontiguousarray(X_tr), y_tr, np.ascontiguousarray(X_te), y_te,
                   n_classes, record, source)


@register_dataset("digits", "8x8 handwritten digits, 1797 x 64, 10 classes (inside scikit-learn)")
def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as sk_load

    bunch = sk_load()
    return _from_sklearn("digits", bunch.data, bunch.target, "sklearn.datasets.load_digits")


@register_dataset("breast_cancer", "Wisconsin breast cancer, 569 x 30, binary (inside scikit-learn)")
def load_breast_cancer() -> Dataset:
    from sklearn.datasets import load_breast_cancer as sk_load

    bunch = sk_load()
    return _from_sklearn("breast_cancer", bunch.data, bunch.target, "sklearn.datasets.load_breast_cancer")


def make_synthetic(n_samples: int, n_features: int, n_classes: int, seed: int,
                   separation: float = 1.0, label_noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Correlated Gaussian features; labels drawn from a softmax of a random linear teacher.

    ``separation`` scales the teacher's logits (larger = easier); ``label_noise`` is the share
    of labels replaced by uniformly random classes, so no class is perfectly separable.
    """
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(n_features, n_features)) / np.sqrt(n_features)
    mixing += np.eye(n_features)
    X = rng.normal(size=(n_samples, n_features)) @ mixing
    teacher = rng.normal(size=(n_features, n_classes)) * separation / np.sqrt(n_features) * 3.0
    logits = X @ teacher + rng.normal(size=n_classes)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    y = (probs.cumsum(axis=1) > rng.random((n_samples, 1))).argmax(axis=1)
    flip = rng.random(n_samples) < label_noise
    y[flip] = rng.integers(0, n_classes, size=int(flip.sum()))
    return X, y


@register_dataset(
    "synthetic",
    "seeded synthetic classification set (Gaussian features, softmax teacher, label noise)",
    options={"n_samples": "rows in all, train + test (default 5000)",
             "n_features": "features (default 20)",
             "n_classes": "classes (default 3)",
             "seed": "generator seed (default 0)",
             "test_size": "share held out for test (default 0.2)",
             "separation": "teacher scale, larger is easier (default 1.0)",
             "label_noise": "share of random labels (default 0.1)"},
)
def load_synthetic(n_samples: int = 5000, n_features: int = 20, n_classes: int = 3, seed: int = 0,
                   test_size: float = 0.2, separation: float = 1.0, label_noise: float = 0.1) -> Dataset:
    from miniunlearn.errors import DataError

    for option, value in (("n_samples", n_samples), ("n_features", n_features), ("n_classes", n_classes),
                          ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
                or value in (float("inf"), float("-inf")) or int(value) != value or value < 0:
            raise DataError(f"synthetic option {option} must be a non-negative integer, got {value!r}")
    for option, value in (("test_size", test_size), ("separation", separation), ("label_noise", label_noise)):
        if not isinstance(value, (int, float)) or not abs(value) < float("inf"):
            raise DataError(f"synthetic option {option} must be a finite number, got {value!r}")
    if int(n_samples) < 10 or int(n_features) < 1 or int(n_classes) < 2:
        raise DataError("synthetic needs n_samples >= 10, n_features >= 1 and n_classes >= 2")
    if not 0 < float(test_size) < 1:
        raise DataError(f"synthetic test_size must lie in (0, 1), got {test_size}")
    X, y = make_synthetic(int(n_samples), int(n_features), int(n_classes), int(seed), float(separation),
                          float(label_noise))
    n_test = max(1, int(round(len(y) * float(test_size))))
    X_tr, X_te, y_tr, y_te = X[:-n_test], X[-n_test:], y[:-n_test], y[-n_test:]
    X_tr, X_te, record = standardize(X_tr, X_te)
    record["split"] = f"last {n_test} generated rows are the test set"
    return Dataset("synthetic", "synthetic", np.ascontiguousarray(X_tr), y_tr.astype(np.int64),
                   np.ascontiguousarray(X_te), y_te.astype(np.int64), int(n_classes), record,
                   f"seeded synthetic: n_samples={n_samples}, n_features={n_features}, n_classes={n_classes}, "
                   f"seed={seed}, separation={separation}, label_noise={label_noise}", synthetic=True)
