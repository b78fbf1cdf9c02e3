import json

import numpy as np
import pytest
import torch

from miniunlearn.core.errors import InputError, RunError
from miniunlearn.data import load_dataset
from miniunlearn.models import LogisticRegression, Rows
from miniunlearn.runs import train
from miniunlearn.runs import load_model
from miniunlearn.training import SGDSchedule, TrainConfig, fit
from tests.helpers import scipy_optimum


@pytest.mark.parametrize("name", ["digits", "breast_cancer"])
def test_converged_training_equals_an_independent_minimiser(tmp_path, name):
    ds = load_dataset(name)
    run = train(ds, 1e-3, tmp_path / "run")
    reference = scipy_optimum(ds.X_train, ds.y_train, ds.n_classes, 1e-3)
    theta = run.theta().numpy()
    assert np.linalg.norm(theta - reference) <= 1e-6 * np.linalg.norm(reference)
    meta = run.meta
    assert meta["training"]["converged"] and meta["training"]["grad_norm"] <= 1e-9
    W = reference.reshape(ds.n_classes, -1)
    predicted = (ds.X_test @ W[:, :-1].T + W[:, -1]).argmax(axis=1)
    assert meta["metrics"]["test_accuracy"] == np.mean(predicted == ds.y_test)
    assert meta["history"]["mini"]["bytes"] > 0
    assert meta["dataset"]["fingerprint"] == ds.fingerprint()


def test_run_directory_layout(tmp_path):
    ds = load_dataset("breast_cancer")
    run = train(ds, 1e-2, tmp_path / "run")
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["history.safetensors", "model.safetensors", "run.json"]
    model, theta, meta = load_model(tmp_path / "run")
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert tensors["weight"].shape == (2, 30) and tensors["bias"].shape == (2,)
    assert torch.equal(theta, run.theta())
    config = json.loads((tmp_path / "run" / "run.json").read_text())["config"]
    assert config == {"l2": 0.01, "mode": "converged", "init": "zeros", "chunk_rows": 8192, "solver": "newton-cg",
                      "tol": 1e-9, "max_iter": 100, "penalize_intercept": True}
    with pytest.raises(RunError, match="already holds results"):
        train(ds, 1e-2, tmp_path / "run")


def test_bad_training_configuration_is_refused(tmp_path):
    ds = load_dataset("breast_cancer")
    for l2 in (0.0, -1.0, float("nan")):
        with pytest.raises(InputError, match=r"option l2 must be a finite number in \(0, "):
            train(ds, l2, tmp_path / "x")
    with pytest.raises(InputError, match="option mode must be one of 'converged', 'trajectory'"):
        TrainConfig(1e-3, mode="sometimes")
    assert not (tmp_path / "x" / "run.json").exists()


def test_trajectory_retraining_replays_batches_without_forgotten_rows(rng):
    X, y = rng.normal(size=(90, 4)), rng.integers(0, 3, size=90)
    model = LogisticRegression(4, 3)
    schedule = SGDSchedule(epochs=3, batch_size=20, lr=0.5, lr_steps=((2, 0.25),), seed=5)
    config = TrainConfig(1e-2, mode="trajectory", sgd=schedule)
    removed = np.array([0, 5, 17, 44, 89])
    theta, info, record = fit(model, Rows(X, y), config, removed=removed, record_trajectory=True)
    # independent replay with numpy
    w = np.zeros(model.n_params)
    keep = np.ones(90, bool)
    keep[removed] = False
    for epoch in range(3):
        lr = 0.5 if epoch < 2 else 0.25
        order = np.random.default_rng([5, epoch]).permutation(90)
        for start in range(0, 90, 20):
            ids = order[start:start + 20]
            ids = ids[keep[ids]]
            Wb = w.reshape(3, 5)
            Z = X[ids] @ Wb[:, :4].T + Wb[:, 4]
            P = np.exp(Z - Z.max(1, keepdims=True))
            P /= P.sum(1, keepdims=True)
            P[np.arange(len(ids)), y[ids]] -= 1
            g = np.hstack([P.T @ X[ids], P.sum(0)[:, None]]).ravel() / len(ids)
            w = w - lr * (g + 1e-2 * w)
    assert np.allclose(theta.numpy(), w, atol=1e-12)
    assert record.weights.shape == (schedule.n_iterations(90), model.n_params)
    assert info["iterations"] == 15


def test_trajectory_run_records_deltagrad_history(tmp_path):
    ds = load_dataset("synthetic:n_samples=600,n_features=5,n_classes=3")
    run = train(ds, 1e-3, tmp_path / "t", mode="trajectory", deltagrad_history=True,
                sgd_schedule=SGDSchedule(epochs=4, batch_size=128, lr=0.5, lr_steps=()))
    history = run.deltagrad_history()
    assert history.n_iterations == 4 * 4
    assert run.meta["history"]["deltagrad"]["bytes"] >= history.nbytes
    assert torch.allclose(history.weights[0], torch.zeros(run.model.n_params, dtype=torch.float64))
