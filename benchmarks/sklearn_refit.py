"""The references shared by the benchmarks: the polished optimum on the kept rows, and scikit-learn's
warm-started refit there.

``polished_optimum`` runs Newton-CG from a start until ||grad F|| <= 1e-11; F being l2-strongly convex,
the result is within ||grad F|| / l2 of the true optimum, the bound it returns.

scikit-learn's ``LogisticRegression`` on the rows with a bias column appended, ``fit_intercept=False`` and
``C = 1 / (l2 * m)``, minimises the same objective as a run that penalises its intercept,
(1/m) sum_i loss_i(W) + (l2/2) ||W||^2, up to the factor m * C. Started from ``W_start``, it is timed at the
smallest ``max_iter`` whose result lies within ``target`` of ``W_target``.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from miniunlearn.models import Objective, Rows
from miniunlearn.models.penalty import Penalty
from miniunlearn.solvers.newton import newton_cg

POLISH_TOL = 1e-11
MAX_ITERS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


def polished_optimum(run, keep: np.ndarray, start: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The optimum of F on the training rows ``keep``, from ``start``; with its error bound ||grad F|| / l2."""
    ds = run.dataset
    penalty = Penalty(run.model, run.l2, run.penalize_intercept)
    objective = Objective(run.model, Rows(ds.X_train, ds.y_train, keep, chunk_rows=8192), penalty)
    theta, _ = newton_cg(objective, start.to(torch.float64), tol=POLISH_TOL, max_iter=30)
    theta = penalty.project(theta)
    _, grad = objective.value_grad(theta)
    return theta, float(grad.norm()) / run.l2


def warm_refit(run, forgotten: np.ndarray, W_start: np.ndarray, W_target: np.ndarray, target: float,
               solver: str = "newton-cg", max_iter_cap: int = 2048) -> dict:
    """Time the refit at the smallest max_iter (up to ``max_iter_cap``) within ``target`` of ``W_target``.

    Returns ``solver``, ``max_iter``, ``n_iter``, ``time_s`` (the last fit), ``distance`` (its
    ||W - W_target||) and ``reached``.
    """
    from sklearn.exceptions import ConvergenceWarning  # scikit-learn: only the benchmarks that compare load it
    from sklearn.linear_model import LogisticRegression

    if not run.penalize_intercept:
        raise SystemExit("the scikit-learn comparison assumes a penalised intercept")
    ds = run.dataset
    keep = np.setdiff1d(np.arange(run.n_train), forgotten)
    X = np.hstack([np.asarray(ds.X_train[keep], dtype=np.float64), np.ones((len(keep), 1))])
    y = np.asarray(ds.y_train[keep])
    C = 1.0 / (run.l2 * len(keep))
    for max_iter in [i for i in MAX_ITERS if i <= max_iter_cap]:
        clf = LogisticRegression(C=C, fit_intercept=False, solver=solver, tol=1e-14, max_iter=max_iter,
                                 warm_start=True)
        clf.coef_ = W_start.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            start = time.perf_counter()
            clf.fit(X, y)
            seconds = time.perf_counter() - start
        distance = float(np.linalg.norm(clf.coef_ - W_target))
        if distance <= target:
            break
    return {"solver": solver, "max_iter": max_iter, "n_iter": int(np.max(clf.n_iter_)), "time_s": seconds,
            "distance": distance, "reached": distance <= target}
