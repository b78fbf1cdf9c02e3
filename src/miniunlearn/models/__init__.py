"""The model and its mathematics: multinomial logistic regression (loss, gradient and curvature sums,
one implementation each), chunked bounded-memory row access, the regularised objective, and
cached curvature products."""

from miniunlearn.models.curvature import CachedCurvature
from miniunlearn.models.logistic import LogisticRegression
from miniunlearn.models.objective import Curvature, Objective
from miniunlearn.models.penalty import Penalty
from miniunlearn.models.rows import Rows

__all__ = ["CachedCurvature", "Curvature", "LogisticRegression", "Objective", "Penalty", "Rows"]
