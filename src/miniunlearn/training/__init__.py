"""Fitting multinomial logistic regression: converged Newton-CG to the unique optimum, or seeded
mini-batch SGD (DeltaGrad's setting). Pure computation: no files (see :mod:`miniunlearn.runs`)."""

from miniunlearn.training.config import MODES, TrainConfig
from miniunlearn.training.fit import fit
from miniunlearn.training.trajectory import SGDSchedule

__all__ = ["MODES", "TrainConfig", "SGDSchedule", "fit"]
