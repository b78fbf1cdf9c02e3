"""The scikit-learn reference shared by the benchmarks: a warm-started refit on the kept rows.

scikit-learn's ``LogisticRegression`` on the rows with a bias column appended, ``fit_intercept=False`` and
``C = 1 / (l2 * m)``, minimises the same objective as a run that penalises its intercept,
(1/m) sum_i loss_i(W) + (l2/2) ||W||^2, up to the factor m * C. Started from ``W_start``, it is timed at the
smallest ``max_iter`` whose result lies within ``target`` of ``W_target``.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

MAX_ITERS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


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
