"""The dense route for small models: its fit is scikit-learn's optimum, and every certificate it
reports -- after a dense Newton step or after chord steps -- bounds the true distance to an
independently computed optimum of the kept rows."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from miniunlearn import UnlearningLogisticRegression
from miniunlearn.estimator import dense


def _softmax_parameters(coef, intercept):
    """[W | b] with the biases centred (the free-intercept optimum is unique up to a common shift)."""
    return np.hstack([coef, (intercept - intercept.mean())[:, None]])


@pytest.fixture(scope="module")
def problem():
    X, y = make_classification(n_samples=1500, n_features=10, n_informative=6, n_classes=3, random_state=2)
    return X.astype(np.float32).astype(np.float64), y


@pytest.mark.parametrize("penalize_intercept", [False, True], ids=["free_intercept", "penalised_intercept"])
def test_dense_forget_certificates_bound_the_distance_to_the_kept_rows_optimum(problem, penalize_intercept):
    X, y = problem
    alpha = 1e-4
    model = UnlearningLogisticRegression(alpha=alpha, penalize_intercept=penalize_intercept).fit(X, y)
    gone = np.arange(0, len(y), 6)  # 17 % of the rows: step 0 lands far enough that chord steps follow
    model.forget(rows=gone)
    stats = model.forget_stats_
    assert stats["route"] == "dense" and stats["newton_iterations"] >= 3  # a dense step, then chords
    kept = np.setdiff1d(np.arange(len(y)), gone)
    Xk, yk = X[kept], y[kept]
    if penalize_intercept:  # scikit-learn without an intercept on [X, 1]: the ones column's weight is the bias
        ref = LogisticRegression(C=1.0 / (len(kept) * alpha), fit_intercept=False, solver="newton-cg", tol=1e-13,
                                 max_iter=10_000).fit(np.hstack([Xk, np.ones((len(kept), 1))]), yk)
        theirs = ref.coef_
        ours = np.hstack([model.coef_, model.intercept_[:, None]])
    else:
        ref = LogisticRegression(C=1.0 / (len(kept) * alpha), solver="newton-cg", tol=1e-13, max_iter=10_000).fit(Xk, yk)
        theirs = _softmax_parameters(ref.coef_, ref.intercept_)
        ours = _softmax_parameters(model.coef_, model.intercept_)
    distance = float(np.linalg.norm(ours - theirs))
    assert distance <= stats["certificate"]
    assert stats["certificate"] <= 1e-6 * stats["certificate"] / stats["certified_relative"]  # tol met


def test_a_chord_step_certificate_holds_where_the_curvature_moved(problem):
    """One dense step from a point far from the optimum, then a chord step with its factor: the
    chord step's certificate (curvature bound carried by self-concordance) bounds the true distance."""
    from miniunlearn.models import LogisticRegression as Model
    from miniunlearn.models import Objective, Rows
    from miniunlearn.models.penalty import Penalty

    X, y = problem
    model = Model(X.shape[1], 3)
    penalty = Penalty(model, 1e-3, penalize_intercept=False)
    objective = Objective(model, Rows(X, y), penalty)
    optimum, _ = dense.fit(model, Rows(X, y), penalty, model.zeros(), 1e-12, 100)
    start = penalty.project(optimum + 0.001 * torch.from_numpy(np.random.default_rng(0).normal(size=model.n_params)))
    first = dense.dense_newton(objective, start)
    second = dense.chord_step(objective, penalty.project(first["w"]), first)
    for step in (first, second):
        assert float((penalty.project(step["w"]) - optimum).norm()) <= step["certificate"]
    assert np.isfinite(second["certificate"])  # (the first step, from further away, may certify nothing)
