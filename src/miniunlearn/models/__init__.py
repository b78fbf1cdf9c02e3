"""Model definitions (loss, gradients, curvature) and the regularised objective over row sets."""

from miniunlearn.models.logistic import LogisticRegression
from miniunlearn.models.objective import Objective
from miniunlearn.models.rows import Rows

__all__ = ["LogisticRegression", "Objective", "Rows"]
