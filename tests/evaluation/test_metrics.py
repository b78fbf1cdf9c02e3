"""Fidelity metrics against the retrained model, checked against independent numpy computations."""

import numpy as np
import pytest
import torch

from miniunlearn.evaluation.metrics import compare_on_rows, evaluate_models, parameter_distance, relative_residual
from miniunlearn.models import LogisticRegression


def _numpy_probs(theta: np.ndarray, X: np.ndarray, n_classes: int) -> np.ndarray:
    W = theta.reshape(n_classes, -1)
    Z = X @ W[:, :-1].T + W[:, -1]
    Z -= Z.max(axis=1, keepdims=True)
    P = np.exp(Z)
    return P / P.sum(axis=1, keepdims=True)


def test_metrics_match_an_independent_numpy_computation(rng):
    n, d, C = 157, 6, 4
    X, y = rng.normal(size=(n, d)), rng.integers(0, C, size=n)
    model = LogisticRegression(d, C)
    thetas = {"a": torch.from_numpy(rng.normal(size=model.n_params)),
              "ref": torch.from_numpy(rng.normal(size=model.n_params))}
    ids = np.sort(rng.choice(n, 60, replace=False))
    # chunks of 7 rows: the sums must not depend on the chunking
    got = compare_on_rows(model, thetas, "ref", X, y, ids, chunk_rows=7)
    P = _numpy_probs(thetas["a"].numpy(), X[ids], C)
    R = _numpy_probs(thetas["ref"].numpy(), X[ids], C)
    assert got.n_rows == 60
    assert got.accuracy("a") == pytest.approx(np.mean(P.argmax(1) == y[ids]))
    assert got.mean_kl("a") == pytest.approx(np.mean(np.sum(R * (np.log(R) - np.log(P)), axis=1)), rel=1e-10)
    assert got.agreement("a") == pytest.approx(np.mean(P.argmax(1) == R.argmax(1)))
    assert got.mean_kl("ref") == 0.0 and got.agreement("ref") == 1.0


def test_distance_and_relative_residual():
    w_R = torch.tensor([1.0, 2.0, 3.0])
    w_T = torch.tensor([1.0, 6.0, 0.0])  # ||w_T - w_R|| = 5
    w = torch.tensor([1.0, 2.0 + 0.3, 3.0 - 0.4])  # ||w - w_R|| = 0.5
    assert parameter_distance(w, w_R) == pytest.approx(0.5)
    assert relative_residual(w, w_R, w_T) == pytest.approx(0.1)
    assert relative_residual(w_T, w_R, w_T) == pytest.approx(1.0)
    assert np.isnan(relative_residual(w, w_R, w_R))  # nothing was removed: no share defined
    with pytest.raises(ValueError, match="differ in shape"):
        parameter_distance(w, torch.zeros(4))


def test_the_report_matches_an_independent_computation(overfit, rng):
    run, ds, ids = overfit["run"], overfit["dataset"], overfit["ids"]
    w_R, w_T = overfit["theta_R"], overfit["theta_T"]
    w = w_R + 0.3 * (w_T - w_R) + torch.from_numpy(rng.normal(scale=0.05, size=w_R.numel()))
    report = evaluate_models(run.model, {"w": w}, w_R, w_T, ds, ids, chunk_rows=64)
    got = report["models"]["w"]
    keep = np.setdiff1d(np.arange(ds.n_train), ids)
    C = ds.n_classes

    def accuracy(theta, X, y):
        return np.mean(_numpy_probs(theta.numpy(), X, C).argmax(1) == y)

    for key, X, y in (("test", ds.X_test, ds.y_test), ("retained", ds.X_train[keep], ds.y_train[keep]),
                      ("forget", ds.X_train[ids], ds.y_train[ids])):
        assert got[f"{key}_accuracy"] == pytest.approx(accuracy(w, X, y))
        assert got[f"{key}_accuracy_gap"] == pytest.approx(accuracy(w, X, y) - accuracy(w_R, X, y))
    distance = np.linalg.norm((w - w_R).numpy())
    assert got["distance_to_retrained"] == pytest.approx(distance, rel=1e-12)
    assert got["relative_residual"] == pytest.approx(distance / np.linalg.norm((w_T - w_R).numpy()), rel=1e-12)
    P, R = _numpy_probs(w.numpy(), ds.X_test, C), _numpy_probs(w_R.numpy(), ds.X_test, C)
    assert got["kl_test"] == pytest.approx(np.mean(np.sum(R * (np.log(R) - np.log(P)), axis=1)), rel=1e-9)
    assert got["agreement_test"] == pytest.approx(np.mean(P.argmax(1) == R.argmax(1)))
    assert report["rows"] == {"test": ds.n_test, "retained": ds.n_train - len(ids), "forget": len(ids)}


def test_the_original_model_differs_where_it_should(overfit):
    run, ds, ids = overfit["run"], overfit["dataset"], overfit["ids"]
    report = evaluate_models(run.model, {}, overfit["theta_R"], overfit["theta_T"], ds, ids)
    original = report["original"]
    assert original["relative_residual"] == pytest.approx(1.0)
    # the overfit original model knows its forgotten rows; the retrained one does not
    assert original["forget_accuracy"] > 0.95 and original["forget_accuracy_gap"] > 0.3
    assert original["kl_forget"] > 0 and original["agreement_forget"] < 1
    P = _numpy_probs(overfit["theta_T"].numpy(), ds.X_test, ds.n_classes)
    assert original["test_accuracy"] == pytest.approx(np.mean(P.argmax(1) == ds.y_test))
