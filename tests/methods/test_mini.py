"""Mini-Unlearning against independent computations (numpy/scipy, written here)."""

import numpy as np
import pytest
import torch

from miniunlearn.core.errors import InputError, RunError
from miniunlearn.data import load_dataset
from miniunlearn.runs import train
from miniunlearn.service import forget
from miniunlearn.service.requests import random_forget_ids
from miniunlearn.training import SGDSchedule
from tests.helpers import scipy_optimum, softmax_objective

L2 = 1e-2
SPEC = "synthetic:n_samples=700,n_features=6,n_classes=3,seed=4"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    dataset = load_dataset(SPEC)
    run = train(dataset, L2, tmp_path_factory.mktemp("mini") / "run")
    return run, dataset


def reference_error(ds, keep, w_R):
    """||w_R(scipy) - w_R(exact)|| <= ||grad F_R(w_R(scipy))|| / lambda by strong convexity."""
    f = softmax_objective(ds.X_train[keep], ds.y_train[keep], ds.n_classes, L2)
    return np.linalg.norm(f(w_R)[1]) / L2


def _dense_hessian_sum(X, y, C, w):
    """sum_i (diag(p_i) - p_i p_i^T) (x) x~_i x~_i^T by explicit loops over classes (numpy)."""
    n, d = X.shape
    Xa = np.hstack([X, np.ones((n, 1))])
    Z = Xa @ w.reshape(C, d + 1).T
    P = np.exp(Z - Z.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    H = np.zeros((C * (d + 1), C * (d + 1)))
    for c in range(C):
        for k in range(C):
            weight = P[:, c] * ((c == k) - P[:, k])
            H[c * (d + 1):(c + 1) * (d + 1), k * (d + 1):(k + 1) * (d + 1)] = (Xa * weight[:, None]).T @ Xa
    return H


def test_refine0_is_the_exact_newton_step_on_the_retained_objective(setup):
    run, ds = setup
    U = random_forget_ids(ds.n_train, 0.2, 0)
    keep = np.setdiff1d(np.arange(ds.n_train), U)
    w_T = run.theta().numpy()
    f = softmax_objective(ds.X_train[keep], ds.y_train[keep], ds.n_classes, L2)
    H = _dense_hessian_sum(ds.X_train[keep], ds.y_train[keep], ds.n_classes, w_T) / len(keep) + L2 * np.eye(len(w_T))
    newton = w_T - np.linalg.solve(H, f(w_T)[1])
    result = forget(run, U, "mini", refine=0, tol=1e-9)
    assert np.linalg.norm(result.theta.numpy() - newton) <= 1e-6 * np.linalg.norm(newton - w_T)
    s = result.stats
    assert s["passes_retained"] == 0 and s["passes_forget"] >= 1 and s["curvature_profile"] == "exact"
    assert 0 < s["contraction_factor"] < 1 and s["converged"]


@pytest.mark.parametrize("ratio", [0.05, 0.3])
def test_refine_passes_converge_to_the_retrained_optimum_and_certificate_bounds(setup, ratio):
    run, ds = setup
    U = random_forget_ids(ds.n_train, ratio, 1)
    keep = np.setdiff1d(np.arange(ds.n_train), U)
    w_R = scipy_optimum(ds.X_train[keep], ds.y_train[keep], ds.n_classes, L2)
    w_T = run.theta().numpy()
    base = np.linalg.norm(w_T - w_R)
    residuals = []
    for refine in (0, 1, 2, 3):
        result = forget(run, U, "mini", refine=refine)
        distance = np.linalg.norm(result.theta.numpy() - w_R)
        residuals.append(distance / base)
        if refine:
            assert result.stats["passes_retained"] == refine
            # a valid upper bound (up to the reference's own certified error)
            assert result.stats["certificate"] + reference_error(ds, keep, w_R) >= distance
    assert residuals[0] < 0.2
    assert residuals[1] < residuals[0] and residuals[3] < 1e-4


def test_banach_bound_covers_the_distance_to_the_surrogate_fixed_point(setup):
    run, ds = setup
    U = random_forget_ids(ds.n_train, 0.4, 2)
    keep = np.setdiff1d(np.arange(ds.n_train), U)
    w_T = run.theta().numpy()
    f = softmax_objective(ds.X_train[keep], ds.y_train[keep], ds.n_classes, L2)
    H = _dense_hessian_sum(ds.X_train[keep], ds.y_train[keep], ds.n_classes, w_T) / len(keep) + L2 * np.eye(len(w_T))
    exact = w_T - np.linalg.solve(H, f(w_T)[1])
    for tol in (1e-2, 1e-4):
        result = forget(run, U, "mini", tol=tol)
        assert np.linalg.norm(result.theta.numpy() - exact) <= max(result.stats["banach_bound"], 1e-12)


def test_workers_do_not_change_the_result(setup):
    run, ds = setup
    U = random_forget_ids(ds.n_train, 0.5, 3)
    one = forget(run, U, "mini", refine=1, workers=1).theta
    three = forget(run, U, "mini", refine=1, workers=3).theta
    assert torch.norm(one - three) <= 1e-10 * torch.norm(one)


def test_minimal_profile_converges_with_passes(tmp_path):
    ds = load_dataset(SPEC)
    run = train(ds, L2, tmp_path / "minimal", profile="minimal")
    assert run.meta["history"]["mini"]["profile"] == "minimal"
    U = random_forget_ids(ds.n_train, 0.1, 0)
    keep = np.setdiff1d(np.arange(ds.n_train), U)
    w_R = scipy_optimum(ds.X_train[keep], ds.y_train[keep], ds.n_classes, L2)
    w_T = run.theta().numpy()
    far = forget(run, U, "mini", refine=2).theta.numpy()
    near = forget(run, U, "mini", refine=30)
    distance = np.linalg.norm(near.theta.numpy() - w_R)
    assert distance < np.linalg.norm(far - w_R) and distance < 1e-3 * np.linalg.norm(w_T - w_R)
    assert near.stats["certificate"] + reference_error(ds, keep, w_R) >= distance


def test_bad_requests_are_refused(setup, tmp_path):
    run, ds = setup
    with pytest.raises(InputError, match=r"option refine must be an integer in \[0, "):
        forget(run, [1, 2], "mini", refine=-1)
    with pytest.raises(InputError, match="has no option"):
        forget(run, [1, 2], "mini", colour="red")
    traj = train(ds, L2, tmp_path / "traj", mode="trajectory",
                 sgd_schedule=SGDSchedule(epochs=1, batch_size=100, lr=0.1, lr_steps=()))
    with pytest.raises((InputError, RunError), match="trajectory"):
        forget(traj, [1, 2], "mini", out=tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()
