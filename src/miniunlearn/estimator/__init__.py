"""A scikit-learn estimator over the deletion service: fit, predict, forget rows in place, save as a run."""

from miniunlearn.estimator.logistic import UnlearningLogisticRegression

__all__ = ["UnlearningLogisticRegression"]
