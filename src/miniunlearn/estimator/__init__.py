"""The scikit-learn door: an estimator that forgets training rows in place, in memory or in a saved run
directory, and pipelines that forget through their transformers (docs/sklearn.md)."""

from miniunlearn.estimator.logistic import UnlearningLogisticRegression
from miniunlearn.estimator.pipeline import UnlearningPipeline, forget_pipeline

__all__ = ["UnlearningLogisticRegression", "UnlearningPipeline", "forget_pipeline"]
