"""The training configuration: everything that determines the trained parameters (init is always zeros).

Retraining (the gold standard every unlearning method is measured against) runs the very same
configuration on the retained rows, so it is stored in every run and read back from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral, Real

from miniunlearn.core.errors import InputError
from miniunlearn.core.params import Boolean, Interval, Options, Param, validate_params
from miniunlearn.models.penalty import Penalty
from miniunlearn.solvers.newton import DEFAULT_MAX_ITER, DEFAULT_TOL
from miniunlearn.training.trajectory import SGDSchedule

MODES = ("converged", "trajectory")
DEFAULT_CHUNK_ROWS = 8192

PARAMETERS = {
    "l2": Param(None, Interval(Real, 0, 1e6, closed="right"),
                help="L2 strength lambda; positive, so the objective is strongly convex"),
    "mode": Param("converged", Options(MODES),
                  help="converged: Newton-CG to the unique optimum; trajectory: seeded mini-batch SGD"),
    "tol": Param(DEFAULT_TOL, Interval(Real, 1e-14, 1e-2, closed="both"),
                 help="converged mode: stop when ||grad F||_2 <= tol"),
    "max_iter": Param(DEFAULT_MAX_ITER, Interval(Integral, 1, 10_000), help="converged mode: Newton iterations at most"),
    "chunk_rows": Param(DEFAULT_CHUNK_ROWS, Interval(Integral, 1, 1 << 24), help="rows per chunk of every pass"),
    "penalize_intercept": Param(True, Boolean(),
                                help="L2 on the biases too (weight decay); False leaves the intercept free"),
}


@dataclass
class TrainConfig:
    """Validated training configuration (see ``PARAMETERS`` for ranges)."""

    l2: float
    mode: str = "converged"
    tol: float = DEFAULT_TOL
    max_iter: int = DEFAULT_MAX_ITER
    sgd: SGDSchedule = field(default_factory=SGDSchedule)
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    penalize_intercept: bool = True

    def __post_init__(self):
        values = validate_params("training", PARAMETERS, {
            "l2": self.l2, "mode": self.mode, "tol": self.tol, "max_iter": self.max_iter,
            "chunk_rows": self.chunk_rows, "penalize_intercept": self.penalize_intercept})
        for name, value in values.items():
            setattr(self, name, value)
        if self.mode == "trajectory" and not self.penalize_intercept:
            raise InputError("trajectory (SGD) training applies weight decay to every parameter; "
                             "penalize_intercept=False needs converged mode")

    def penalty(self, model) -> Penalty:
        return Penalty(model, self.l2, self.penalize_intercept)

    def as_dict(self) -> dict:
        out = {"l2": self.l2, "mode": self.mode, "init": "zeros", "chunk_rows": self.chunk_rows,
               "penalize_intercept": self.penalize_intercept}
        if self.mode == "converged":
            out.update(solver="newton-cg", tol=self.tol, max_iter=self.max_iter)
        else:
            out.update(solver="sgd", sgd=self.sgd.as_dict())
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        sgd_cfg = SGDSchedule.from_dict(data["sgd"]) if "sgd" in data else SGDSchedule()
        return cls(float(data["l2"]), data["mode"], float(data.get("tol", DEFAULT_TOL)),
                   int(data.get("max_iter", DEFAULT_MAX_ITER)), sgd_cfg, int(data.get("chunk_rows", DEFAULT_CHUNK_ROWS)),
                   bool(data.get("penalize_intercept", True)))
