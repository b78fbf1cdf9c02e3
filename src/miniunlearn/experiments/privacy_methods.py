"""The methods the privacy benchmark compares, grouped by the kind of run they unlearn.

The converged family unlearns Newton-CG runs (retraining is its reference), the trajectory family
SGD runs with DeltaGrad's history (the retrained SGD trajectory is its reference).
:data:`MINI_TOL_OPTIONS` are the options behind each ``mini tol ...`` label.
"""

from __future__ import annotations

from dataclasses import dataclass

from miniunlearn.experiments.shadows import ShadowMethod

__all__ = ["MINI_TOL_OPTIONS", "Family", "families"]

# Mini-Unlearning at the two tolerances of the benchmark: refine until the certificate is at most
# T ||w - w_T||.
MINI_TOL_OPTIONS = {"1e-3": {"tol": 1e-3}, "1e-2": {"tol": 1e-2}}


def _mini_tol(tol: str) -> ShadowMethod:
    return ShadowMethod(f"mini tol {tol}", "mini", dict(MINI_TOL_OPTIONS[tol]))


@dataclass(frozen=True)
class Family:
    """Methods that unlearn one kind of run, with their reference and the model before unlearning."""

    mode: str
    reference: str                   # the label of retraining in this family
    original: str                    # the label of the trained model itself
    models: tuple[ShadowMethod, ...]  # computed on the real forget sets
    ulira: tuple[str, ...]           # labels attacked by the population U-LiRA and the exactness test
    utility: tuple[str, ...] = ()    # labels released at every epsilon


def families() -> dict[str, Family]:
    """The benchmark's methods (rebuilt on each call so that :data:`MINI_TOL_OPTIONS` is read at run time)."""
    converged = (ShadowMethod("retrain", "retrain"), ShadowMethod("mini (refine 0)", "mini", {"refine": 0}),
                 _mini_tol("1e-3"), _mini_tol("1e-2"), ShadowMethod("newton", "newton", {"certify": True}),
                 ShadowMethod("finetune", "finetune"), ShadowMethod("neggrad", "neggrad"))
    return {
        "converged": Family("converged", "retrain", "original", converged,
                            ulira=("retrain", "mini (refine 0)", "mini tol 1e-3", "newton", "finetune", "neggrad"),
                            utility=("mini tol 1e-3", "mini tol 1e-2", "newton")),
        "trajectory": Family("trajectory", "retrain (SGD)", "original (SGD)",
                             (ShadowMethod("retrain (SGD)", "retrain"), ShadowMethod("deltagrad", "deltagrad")),
                             ulira=("retrain (SGD)", "deltagrad")),
    }
