"""Mini-Unlearning's certificates against optima computed independently (scipy, tests.helpers):
the no-pass certificate of step 0 on random instances, and every fixed budget ``refine = k``."""

import numpy as np
import pytest
import torch

from miniunlearn.data import load_dataset
from miniunlearn.history.profiles.exact import inverse_defect
from miniunlearn.methods.mini import reference_certificate, surrogate_step
from miniunlearn.models import CachedCurvature, LogisticRegression, Penalty, Rows
from miniunlearn.runs import train
from miniunlearn.service import forget
from miniunlearn.service.requests import random_forget_ids
from miniunlearn.solvers.certificate import logit_span_bound, self_concordance_constant
from tests.helpers import reference_optimum, softmax_hessian, softmax_objective

N_NO_PASS = 300


class _Applied:
    def __init__(self, P):
        self.apply = lambda v: P @ v


def _span(X, C, step):
    """max_i span_c (Theta_step x~_i)_c, in numpy."""
    Z = np.hstack([X, np.ones((len(X), 1))]) @ step.reshape(C, -1).T
    return float((Z.max(axis=1) - Z.min(axis=1)).max())


def _certificates(X, y, C, l2, forget_rows):
    """Step 0 and its no-pass certificate from w_T, G_D(w_T), P = A^-1 (its defect measured) and the
    forgotten rows; then the chord step from step 0 (the gradient there and the drift computed here
    with numpy) and its certificate. Returns (w0, c0, w1, c1)."""
    n = len(y)
    w_T, _ = reference_optimum(X, y, C, l2)
    theta = torch.from_numpy(w_T)
    model = LogisticRegression(X.shape[1], C)
    penalty = Penalty(model, l2)
    A = torch.from_numpy(softmax_hessian(X, C, l2, w_T))
    P = torch.linalg.inv(A)
    P = 0.5 * (P + P.T)
    defect = inverse_defect(A, lambda E: P @ E)
    G_D = CachedCurvature(model, Rows(X, y), theta, grad=True).grad_sum
    U = CachedCurvature(model, Rows(X[forget_rows], y[forget_rows], materialize=False), theta, keep_rows=True,
                        grad=True)
    m = n - len(forget_rows)
    b = G_D - U.grad_sum + m * l2 * theta
    step = surrogate_step(_Applied(P), U, penalty, n, b, 1e-10, 300, 8)
    row_norm = float(np.linalg.norm(X, axis=1).max())
    R = self_concordance_constant(row_norm)
    c0 = reference_certificate(step, b, m, defect, theta, l2, R, logit_span_bound(step.x, C, row_norm)).after_step
    w0 = theta - step.x
    keep = np.setdiff1d(np.arange(n), forget_rows)
    g0 = torch.from_numpy(softmax_objective(X[keep], y[keep], C, l2)(w0.numpy())[1])
    chord = surrogate_step(_Applied(P), U, penalty, n, m * g0, 1e-10, 300, 8)
    drift = _span(X[keep], C, step.x.numpy())
    c1 = reference_certificate(chord, m * g0, m, defect, w0, l2, R, logit_span_bound(chord.x, C, row_norm),
                               drift=drift).after_step
    return w0, c0, w0 - chord.x, c1


@pytest.mark.slow
def test_the_no_pass_and_chord_certificates_bound_the_true_distance_on_random_instances():
    """Standardised rows, tiny to large deletions, l2 from 1e-4 to 1: the certificate of step 0 read
    from the history and the forgotten rows alone, and that of the chord step after it (the history's
    retained Hessian at w_T, the logit drift since w_T), are never below the true distance."""
    rng = np.random.default_rng(11)
    ds = load_dataset("synthetic:n_samples=3000,n_features=10,n_classes=3,seed=5")
    checked, finite, violations = 0, [0, 0], [0, 0]
    while checked < N_NO_PASS:
        n = int(rng.integers(40, 200))
        rows = rng.choice(ds.n_train, size=n, replace=False)
        X = ds.X_train[rows][:, : int(rng.integers(2, 11))] * rng.uniform(0.1, 1.5)
        y = ds.y_train[rows].astype(np.int64)
        if len(np.unique(y)) < 3:
            continue
        l2 = float(10 ** rng.uniform(-4, 0))
        r = int(np.clip(round(10 ** rng.uniform(-2.5, -0.5) * n), 1, n // 2))
        forget_rows = rng.choice(n, size=r, replace=False)
        keep = np.setdiff1d(np.arange(n), forget_rows)
        if len(np.unique(y[keep])) < 3:
            continue
        w0, c0, w1, c1 = _certificates(X, y, 3, l2, forget_rows)
        w_R, error_R = reference_optimum(X[keep], y[keep], 3, l2)
        for j, (w, certificate) in enumerate(((w0, c0), (w1, c1))):
            finite[j] += np.isfinite(certificate)
            violations[j] += float(np.linalg.norm(w.numpy() - w_R)) > certificate + error_R
        checked += 1
    assert violations == [0, 0]
    assert min(finite) >= N_NO_PASS // 5  # and not vacuous


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return train(load_dataset("digits"), 1e-3, tmp_path_factory.mktemp("digits") / "run")


def test_every_fixed_budget_returns_the_furthest_point_with_a_valid_certificate(digits_run):
    """digits, l2 1e-3, 1 % forgotten: refine = k spends k passes over R, each k returns a certificate
    that bounds the true distance, and one pass already moves the model closer than step 0."""
    ds = digits_run.dataset
    U = random_forget_ids(ds.n_train, 0.01, 0)
    keep = np.setdiff1d(np.arange(ds.n_train), U)
    w_R, error_R = reference_optimum(ds.X_train[keep], ds.y_train[keep], ds.n_classes, 1e-3)
    distances = []
    for k in range(4):
        result = forget(digits_run, U, "mini", refine=k, ledger=False)
        s = result.stats
        distance = float(np.linalg.norm(result.theta.numpy() - w_R))
        distances.append(distance)
        assert s["passes_retained"] <= k and sum(s["passes_by_kind"].values()) == pytest.approx(s["passes_retained"])
        if k == 0:
            continue  # digits' unscaled pixels are too far apart for the no-pass bound: step 0 is not certified
        assert s["certificate"] is not None and distance <= s["certificate"] + error_R
    assert distances[1] < distances[0] and distances[3] < distances[0]


def test_a_small_request_is_certified_without_a_pass_over_the_retained_rows(tmp_path):
    ds = load_dataset("synthetic:n_samples=20000,n_features=8,n_classes=3,seed=6")
    run = train(ds, 1e-2, tmp_path / "run")
    U = random_forget_ids(ds.n_train, 1 / ds.n_train, 1)
    keep = np.setdiff1d(np.arange(ds.n_train), U)
    w_R, error_R = reference_optimum(ds.X_train[keep], ds.y_train[keep], ds.n_classes, 1e-2)
    result = forget(run, U, "mini", tol=1e-2, ledger=False)
    s = result.stats
    assert s["passes_retained"] == 0 and s["converged"] and s["refine_stop"].startswith("step 0 certified")
    assert float(np.linalg.norm(result.theta.numpy() - w_R)) <= s["certificate"] + error_R
    assert s["certificate"] <= 1e-2 * float(np.linalg.norm(result.theta.numpy() - run.theta().numpy()))
