"""Forgetting through a scikit-learn Pipeline: every fitted step ends where ``clone(pipe).fit(X_kept, y_kept)`` ends.

:func:`forget_pipeline` (and :meth:`UnlearningPipeline.forget`):

1. refuses, by name, a step whose fitted state it cannot bring to the kept rows
   (:mod:`miniunlearn.estimator.transformers`), before anything changes;
2. refits every transformer on the kept rows (their statistics and categories: categories only
   forgotten rows had disappear, with their columns);
3. maps the classifier to the new features: the parameters whose logits on the kept rows are
   closest, in least squares, to the current model's (exact when the features changed by an affine
   map per column, as a scaler's new statistics do, or lost columns that are zero on every kept
   row, as a vanished category's);
4. solves the classifier's objective on the new features from there, certifies the result
   (``forget_stats_["certificate"]`` bounds the distance to that objective's optimum) and records
   the history there: the classifier's new base
   (:meth:`~miniunlearn.estimator.UnlearningLogisticRegression.refit_on`).

Steps 2-4 are computed before any transformer changes, and the classifier changes only if its
solve succeeds; then every transformer takes its new state in place. The raw training rows are
needed for step 2: an :class:`UnlearningPipeline` keeps them (its ``fit`` records them); for a
plain ``Pipeline`` pass ``X`` and ``y``, the rows it was fitted on.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from miniunlearn.core.errors import InputError
from miniunlearn.estimator.logistic import UnlearningLogisticRegression
from miniunlearn.estimator.transformers import PASSING, adopt, check_forgettable


def forget_pipeline(pipe: Pipeline, keys=None, rows=None, X=None, y=None, tol=None, max_passes=None) -> Pipeline:
    """Forget rows (by ``keys`` or row number ``rows``) from every fitted step of ``pipe``, in place;
    returns ``pipe``. See the module docstring. The classifier's statistics are in its
    ``forget_stats_``. ``X`` and ``y``: the rows a plain ``Pipeline`` was fitted on (an
    :class:`UnlearningPipeline` keeps its own)."""
    classifier = _classifier(pipe)
    X, y = _training_rows(pipe, X, y)
    for name, step in pipe.steps[:-1]:
        check_forgettable(step, name)
    kept = classifier.kept_after(rows=rows, keys=keys)
    if len(y) != len(kept):
        raise InputError(f"forget_pipeline: X has {len(y)} rows, the pipeline's classifier was fitted on {len(kept)}")
    X_kept, y_kept = _take(X, kept), np.asarray(y)[kept]
    refitted, features = [], X_kept
    for _, step in pipe.steps[:-1]:
        if step in PASSING:
            continue
        fitted = clone(step)
        features = fitted.fit_transform(features, y_kept)
        refitted.append((step, fitted))
    old_features = X_kept
    for _, step in pipe.steps[:-1]:
        if step not in PASSING:
            old_features = step.transform(old_features)
    scores = classifier.decision_function(old_features)  # the model as it is, on the old features
    classifier.refit_on(features, y_kept, kept, scores, tol=tol, max_passes=max_passes)
    for step, fitted in refitted:
        adopt(step, fitted)
    if isinstance(pipe, UnlearningPipeline):
        pipe.X_fit_, pipe.y_fit_ = X_kept, y_kept
    return pipe


def _classifier(pipe) -> UnlearningLogisticRegression:
    if not isinstance(pipe, Pipeline):
        raise InputError(f"forget_pipeline needs a scikit-learn Pipeline, got {type(pipe).__name__}")
    classifier = pipe.steps[-1][1]
    if not isinstance(classifier, UnlearningLogisticRegression):
        raise InputError(f"forget_pipeline: the pipeline's last step {pipe.steps[-1][0]!r} is "
                         f"{type(classifier).__name__}, not an UnlearningLogisticRegression")
    check_is_fitted(classifier)
    return classifier


def _training_rows(pipe, X, y):
    if X is None and y is None:
        if not isinstance(pipe, UnlearningPipeline):
            raise InputError("forget_pipeline: a plain Pipeline does not keep its training rows; pass X= and y= "
                             "(the rows it was fitted on) or fit an UnlearningPipeline")
        check_is_fitted(pipe, "X_fit_")
        return pipe.X_fit_, pipe.y_fit_
    if X is None or y is None:
        raise InputError("forget_pipeline: give both X and y, or neither")
    return X, np.asarray(y)


def _take(X, mask: np.ndarray):
    """Rows ``mask`` of an array, sparse matrix or DataFrame."""
    rows = np.flatnonzero(mask)
    if hasattr(X, "iloc"):
        return X.iloc[rows]
    return X[rows] if hasattr(X, "tocsr") else np.asarray(X)[rows]


class UnlearningPipeline(Pipeline):
    """A ``Pipeline`` that keeps its training rows, so that :meth:`forget` can refit its transformers on
    the kept rows (:func:`forget_pipeline`). ``fit(X, y, keys=...)`` hands the keys to the final
    ``UnlearningLogisticRegression``. Memory: a reference to X (and y) as given to ``fit``."""

    def fit(self, X, y=None, keys=None, **params):
        if keys is not None:
            params[f"{self.steps[-1][0]}__keys"] = keys
        super().fit(X, y, **params)
        self.X_fit_, self.y_fit_ = X, np.asarray(y)
        return self

    def forget(self, keys=None, rows=None, tol=None, max_passes=None):
        """Forget rows from every step (see :func:`forget_pipeline`); returns self."""
        return forget_pipeline(self, keys=keys, rows=rows, tol=tol, max_passes=max_passes)
