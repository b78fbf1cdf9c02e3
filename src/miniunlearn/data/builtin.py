"""Datasets that ship inside scikit-learn's wheel, and the seeded synthetic generator."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np

from miniunlearn.core.errors import DataError
from miniunlearn.core.params import Interval, Param
from miniunlearn.data.dataset import Dataset, as_labels, register_dataset, standardize, stratified_split

_SPLIT = {"test_size": 0.25, "seed": 0}


def _from_sklearn(name: str, X: np.ndarray, y: np.ndarray, source: str, feature_names=None) -> Dataset:
    y, classes = as_labels(name, y)
    X_tr, X_te, y_tr, y_te = stratified_split(X.astype(np.float64), y, _SPLIT["test_size"], _SPLIT["seed"])
    split = f"stratified, test {_SPLIT['test_size']:.0%}, seed {_SPLIT['seed']}"
    X_tr, X_te, record = standardize(X_tr, X_te, classes, split, feature_names)
    return Dataset(name, name, np.ascontiguousarray(X_tr), y_tr, np.ascontiguousarray(X_te), y_te,
                   len(classes), record, source)


@register_dataset("digits", "8x8 handwritten digits, 1797 x 64, 10 classes (inside scikit-learn)")
def load_digits() -> Dataset:
    # imported here: scikit-learn takes ~1.5 s to load; only these sets need it
    from sklearn.datasets import load_digits as sk_load

    bunch = sk_load()
    return _from_sklearn("digits", bunch.data, bunch.target, "sklearn.datasets.load_digits", bunch.feature_names)


@register_dataset("breast_cancer", "Wisconsin breast cancer, 569 x 30, binary (inside scikit-learn)")
def load_breast_cancer() -> Dataset:
    # imported here: scikit-learn takes ~1.5 s to load; only these sets need it
    from sklearn.datasets import load_breast_cancer as sk_load

    bunch = sk_load()
    return _from_sklearn("breast_cancer", bunch.data, bunch.target, "sklearn.datasets.load_breast_cancer",
                         bunch.feature_names)


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
    parameters={
        "n_samples": Param(5000, Interval(Integral, 10, 10**8), help="rows in all, train + test"),
        "n_features": Param(20, Interval(Integral, 1, 10_000), help="features"),
        "n_classes": Param(3, Interval(Integral, 2, 10_000), help="classes"),
        "seed": Param(0, Interval(Integral, 0, 2**63 - 1), help="generator seed"),
        "test_size": Param(0.2, Interval(Real, 0, 1, closed="neither"), help="share held out for test"),
        "separation": Param(1.0, Interval(Real, 0, 1e6), help="teacher scale, larger is easier"),
        "label_noise": Param(0.1, Interval(Real, 0, 1), help="share of random labels"),
    },
)
def load_synthetic(n_samples: int = 5000, n_features: int = 20, n_classes: int = 3, seed: int = 0,
                   test_size: float = 0.2, separation: float = 1.0, label_noise: float = 0.1) -> Dataset:
    X, y = make_synthetic(n_samples, n_features, n_classes, seed, separation, label_noise)
    n_test = max(1, int(round(len(y) * test_size)))
    if n_test >= len(y):
        raise DataError(f"synthetic: test_size {test_size} leaves no training rows out of {n_samples}")
    X_tr, X_te, y_tr, y_te = X[:-n_test], X[-n_test:], y[:-n_test], y[-n_test:]
    X_tr, X_te, record = standardize(X_tr, X_te, range(int(n_classes)), f"last {n_test} generated rows are the test set")
    return Dataset("synthetic", "synthetic", np.ascontiguousarray(X_tr), y_tr.astype(np.int64),
                   np.ascontiguousarray(X_te), y_te.astype(np.int64), int(n_classes), record,
                   f"seeded synthetic: n_samples={n_samples}, n_features={n_features}, n_classes={n_classes}, "
                   f"seed={seed}, separation={separation}, label_noise={label_noise}", synthetic=True)
