"""Mini-Unlearning's history profiles against dense linear algebra computed independently."""

import numpy as np
import pytest
import torch

from miniunlearn.data import load_dataset
from miniunlearn.history import build_mini_history
from miniunlearn.methods.mini import HistoryPreconditioner
from miniunlearn.models import LogisticRegression, Objective, Penalty, Rows
from miniunlearn.training import TrainConfig, fit


@pytest.fixture(scope="module")
def digits_optimum():
    ds = load_dataset("digits")
    model = LogisticRegression(ds.n_features, ds.n_classes)
    objective = Objective(model, Rows(ds.X_train, ds.y_train), 1e-2)
    theta, _, _ = fit(model, objective.rows, TrainConfig(1e-2))
    return ds, model, objective, theta


def _dense_mean_hessian(ds, model, theta):
    X = np.hstack([ds.X_train, np.ones((ds.n_train, 1))])
    W = theta.numpy().reshape(ds.n_classes, -1)
    Z = X @ W.T
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    C, d1 = ds.n_classes, X.shape[1]
    H = np.zeros((C * d1, C * d1))
    for c in range(C):
        for k in range(C):
            weight = P[:, c] * ((c == k) - P[:, k])
            H[c * d1:(c + 1) * d1, k * d1:(k + 1) * d1] = (X * weight[:, None]).T @ X
    return H / ds.n_train


def test_exact_profile_is_the_inverse_of_the_regularised_hessian(digits_optimum):
    ds, model, objective, theta = digits_optimum
    history = build_mini_history(objective, theta, "exact", "fp")
    H = _dense_mean_hessian(ds, model, theta) + 1e-2 * np.eye(model.n_params)
    assert np.allclose(history.tensors["precond"].numpy() @ H, np.eye(model.n_params), atol=1e-8)
    # the fast build (float32 Gram products, float64 sums) is as accurate as float32 rounding of H allows
    fast = build_mini_history(objective, theta, "exact:fast_build=1", "fp").tensors["precond"].numpy()
    assert np.linalg.norm(fast @ H - np.eye(model.n_params), 2) <= 1e-4
    grad = history.grad_sum.numpy() / ds.n_train + 1e-2 * theta.numpy()
    assert np.linalg.norm(grad) <= 1e-8  # G_D(w_T) / n + lambda w_T = grad F_D(w_T) = 0 at the optimum


def test_minimal_profile_with_far_more_parameters_than_vectors(digits_optimum):
    ds, model, objective, theta = digits_optimum
    assert model.n_params == 650  # 62 basis vectors cannot span it
    history = build_mini_history(objective, theta, "minimal", "fp", minimal_rank=20)
    basis, eigvals = history.tensors["basis"].numpy(), history.tensors["eigvals"].numpy()
    assert basis.shape == (20, 650)
    assert np.allclose(basis @ basis.T, np.eye(20), atol=1e-10)
    H = _dense_mean_hessian(ds, model, theta)
    top = np.sort(np.linalg.eigvalsh(H))[::-1][:20]
    assert np.allclose(eigvals[:5], top[:5], rtol=1e-3)  # subspace iteration finds the leading pairs
    assert np.allclose(history.tensors["diag"].numpy(), np.diag(H), atol=1e-12)
    # the preconditioner is the exact inverse of its own model D + V diag(eig) V^T (Woodbury)
    rest = np.maximum(np.diag(H) - (basis ** 2).T @ np.maximum(eigvals, 0), 0) + 1e-2
    model_matrix = np.diag(rest) + basis.T @ np.diag(np.maximum(eigvals, 0)) @ basis
    v = np.random.default_rng(0).normal(size=650)
    applied = HistoryPreconditioner(history, Penalty(model, 1e-2)).apply(torch.from_numpy(v)).numpy()
    assert np.allclose(model_matrix @ applied, v, atol=1e-8)
