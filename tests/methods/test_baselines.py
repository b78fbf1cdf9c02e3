"""The baselines (retrain, Newton, fine-tune, NegGrad, DeltaGrad) against independent computations.

References are written here with numpy/scipy only: the retrained optimum by scipy's L-BFGS-B, the
Newton step with a dense numpy Hessian, gradient steps with a numpy softmax gradient, BFGS by
its textbook recursive update.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from miniunlearn.cli import main
from miniunlearn.core.errors import InputError, RunError
from miniunlearn.data import load_dataset
from miniunlearn.methods import make_method
from miniunlearn.methods.deltagrad import CompactLBFGS, is_exact_step
from miniunlearn.runs import train
from miniunlearn.service import forget
from miniunlearn.service.requests import random_forget_ids, write_ids_file
from miniunlearn.training import SGDSchedule
from tests.helpers import scipy_optimum, softmax_objective

FORGET_RATIO = 0.05


# ---------------------------------------------------------------------------------------- references
def dense_hessian(X: np.ndarray, w: np.ndarray, n_classes: int, l2: float) -> np.ndarray:
    """Hess F(w) for mean softmax cross-entropy + (l2/2)||w||^2:
    block (c, c') = X~^T diag(p_c (d_cc' - p_c')) X~ / n, plus l2 I."""
    n, d = X.shape
    Xa = np.hstack([X, np.ones((n, 1))])
    Z = Xa @ w.reshape(n_classes, d + 1).T
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    H = np.zeros((n_classes * (d + 1),) * 2)
    for c in range(n_classes):
        for c2 in range(n_classes):
            weight = P[:, c] * ((c == c2) - P[:, c2])
            H[c * (d + 1):(c + 1) * (d + 1), c2 * (d + 1):(c2 + 1) * (d + 1)] = (Xa * weight[:, None]).T @ Xa / n
    return H + l2 * np.eye(H.shape[0])


def residual(theta, reference, original) -> float:
    theta, reference, original = (np.asarray(v, dtype=np.float64) for v in (theta, reference, original))
    return float(np.linalg.norm(theta - reference) / np.linalg.norm(original - reference))


class Setting:
    """A converged digits run, a 5 % forget set and the independent optimum of F_R."""

    def __init__(self, root, l2: float):
        self.ds = load_dataset("digits")
        self.l2 = l2
        self.run = train(self.ds, l2, root / f"digits-{l2:g}")
        self.ids = random_forget_ids(self.run.n_train, FORGET_RATIO, seed=0)
        self.keep = np.setdiff1d(np.arange(self.run.n_train), self.ids)
        self.X_R, self.y_R = self.ds.X_train[self.keep], self.ds.y_train[self.keep]
        self.X_U, self.y_U = self.ds.X_train[self.ids], self.ds.y_train[self.ids]
        self.w_T = self.run.theta().numpy()
        self.w_R = scipy_optimum(self.X_R, self.y_R, self.ds.n_classes, l2)

    def resid(self, theta) -> float:
        return residual(theta, self.w_R, self.w_T)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return Setting(tmp_path_factory.mktemp("baselines"), 1e-3)


@pytest.fixture(scope="module")
def digits_smooth(tmp_path_factory):
    """Stronger regularisation: F_R closer to quadratic over the deletion's step."""
    return Setting(tmp_path_factory.mktemp("baselines"), 1e-2)


# ---------------------------------------------------------------------------------------- retrain
def test_retrain_equals_the_independent_optimum(digits):
    result = forget(digits.run, digits.ids, method="retrain")
    theta = result.theta.numpy()
    assert np.linalg.norm(theta - digits.w_R) <= 1e-6 * np.linalg.norm(digits.w_R)
    # the deletion is not negligible, so the residual figures below mean something
    assert np.linalg.norm(digits.w_T - digits.w_R) > 0.05 * np.linalg.norm(digits.w_R)
    assert result.stats["passes_forget"] == 0 and result.stats["passes_retained"] > 1


# ---------------------------------------------------------------------------------------- Newton
def test_newton_step_equals_a_dense_newton_step_and_removes_the_deletion(digits_smooth):
    s = digits_smooth
    result = forget(s.run, s.ids, method="newton")
    f = softmax_objective(s.X_R, s.y_R, s.ds.n_classes, s.l2)
    H = dense_hessian(s.X_R, s.w_T, s.ds.n_classes, s.l2)
    reference = s.w_T - np.linalg.solve(H, f(s.w_T)[1])
    theta = result.theta.numpy()
    assert np.linalg.norm(theta - reference) <= 1e-6 * np.linalg.norm(reference - s.w_T)
    assert s.resid(theta) <= 0.05
    assert result.stats["newton_steps"] == 1 and not result.stats["cg_hit_limit"]
    # influence form: the first gradient came from the forgotten rows only
    assert result.stats["passes_forget"] == 1.0
    assert result.stats["passes_retained"] == 1 + result.stats["cg_iterations"][0]


def test_newton_influence_gradient_is_the_exact_retained_gradient_at_a_converged_run(digits):
    influence = forget(digits.run, digits.ids, method="newton").theta
    exact = forget(digits.run, digits.ids, method="newton", gradient="exact").theta
    assert torch.allclose(influence, exact, rtol=0, atol=1e-7 * float(exact.norm()))


def test_iterated_newton_converges_quadratically(digits):
    residuals = [digits.resid(forget(digits.run, digits.ids, method="newton", steps=k).theta) for k in (1, 2, 3)]
    assert residuals[1] <= 0.05 and residuals[2] <= 1e-3
    # quadratic: each error at most a constant times the square of the previous one
    assert residuals[1] < residuals[0] ** 2 * 5 and residuals[2] < residuals[1] ** 2 * 5


# ---------------------------------------------------------------------------------------- fine-tune
@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_finetune_full_batch_is_gradient_descent_on_the_retained_objective(digits, schedule):
    lr, steps = 0.5, 3
    result = forget(digits.run, digits.ids, method="finetune", epochs=steps, lr=lr, batch_size=10 ** 6,
                    lr_schedule=schedule)
    f = softmax_objective(digits.X_R, digits.y_R, digits.ds.n_classes, digits.l2)
    w = digits.w_T.copy()
    for k in range(steps):
        w = w - lr * (1 - k / steps if schedule == "linear" else 1) * f(w)[1]
    assert np.allclose(result.theta.numpy(), w, rtol=0, atol=1e-12)
    assert result.stats["passes_retained"] == steps and result.stats["passes_forget"] == 0


def test_finetune_moves_towards_the_retrained_model(digits):
    residuals = [digits.resid(forget(digits.run, digits.ids, method="finetune", epochs=k).theta) for k in (2, 5, 10)]
    assert residuals[0] < 1
    assert residuals[0] > residuals[1] > residuals[2]


def test_sgd_baselines_take_their_defaults_from_the_run(digits, trajectory):
    run, ids, _ = trajectory
    schedule = run.schedule()
    tuned = forget(run, ids, method="finetune", epochs=1).stats
    assert tuned["lr_used"] == schedule.lr_at(schedule.epochs - 1) and tuned["batch_size_used"] == schedule.batch_size
    assert tuned["passes_retained"] == 1.0
    # converged runs have no SGD step size: 1/L from the top eigenvalue of the retained Hessian at w_T
    stats = forget(digits.run, digits.ids, method="finetune", epochs=1).stats
    H = dense_hessian(digits.X_R, digits.w_T, digits.ds.n_classes, digits.l2)
    assert stats["lr_source"] == "1/L estimate"
    assert stats["lr_used"] == pytest.approx(1.0 / np.linalg.eigvalsh(H)[-1], rel=0.05)


# ---------------------------------------------------------------------------------------- NegGrad
def _mean_loss_grad(X, y, n_classes, w):
    return softmax_objective(X, y, n_classes, 0.0)(w)


def test_neggrad_is_gradient_ascent_on_the_forget_loss(digits):
    lr = 0.3
    result = forget(digits.run, digits.ids, method="neggrad", lr=lr, batch_size=10 ** 6)
    loss_before, grad = _mean_loss_grad(digits.X_U, digits.y_U, digits.ds.n_classes, digits.w_T)
    assert np.allclose(result.theta.numpy(), digits.w_T + lr * grad, rtol=0, atol=1e-12)
    loss_after, _ = _mean_loss_grad(digits.X_U, digits.y_U, digits.ds.n_classes, result.theta.numpy())
    assert loss_after > loss_before
    assert result.stats["passes_forget"] == 1 and result.stats["passes_retained"] == 0
    assert result.stats["variant"] == "neggrad"


def test_neggrad_plus_mixes_retained_descent_and_forget_ascent(digits):
    lr, alpha = 0.3, 0.8
    result = forget(digits.run, digits.ids, method="neggrad", lr=lr, batch_size=10 ** 6, retain_weight=alpha)
    _, g_U = _mean_loss_grad(digits.X_U, digits.y_U, digits.ds.n_classes, digits.w_T)
    _, g_R = softmax_objective(digits.X_R, digits.y_R, digits.ds.n_classes, digits.l2)(digits.w_T)
    expected = digits.w_T - lr * (alpha * g_R - (1 - alpha) * g_U)
    assert np.allclose(result.theta.numpy(), expected, rtol=0, atol=1e-12)
    assert result.stats["variant"] == "neggrad+" and result.stats["passes_retained"] == 1


# ---------------------------------------------------------------------------------------- DeltaGrad
def test_compact_lbfgs_equals_recursive_bfgs_updates():
    rng = np.random.default_rng(0)
    p, k = 9, 3
    A = rng.normal(size=(p, p))
    H = A @ A.T + 0.1 * np.eye(p)
    S = rng.normal(size=(p, k))
    Y = H @ S
    sigma = Y[:, -1] @ S[:, -1] / (S[:, -1] @ S[:, -1])
    B = sigma * np.eye(p)
    for i in range(k):  # textbook BFGS update, oldest pair first
        s, y = S[:, i], Y[:, i]
        Bs = B @ s
        B = B - np.outer(Bs, Bs) / (s @ Bs) + np.outer(y, y) / (y @ s)
    compact = CompactLBFGS(torch.from_numpy(S), torch.from_numpy(Y))
    dense = torch.stack([compact.matvec(e) for e in torch.eye(B.shape[0], dtype=torch.float64)], dim=1)
    assert np.allclose(dense.numpy(), B, rtol=0, atol=1e-10 * np.abs(B).max())
    assert np.allclose(compact.matvec(torch.from_numpy(S[:, -1])).numpy(), Y[:, -1], atol=1e-10)  # secant


def test_exact_step_schedule_matches_algorithm_1():
    exact = [t for t in range(40) if is_exact_step(t, t0=5, j0=20)]
    assert exact == list(range(21)) + [25, 30, 35]
    assert all(is_exact_step(t, t0=1, j0=0) for t in range(10))


@pytest.fixture(scope="module")
def trajectory(tmp_path_factory):
    ds = load_dataset("synthetic:n_samples=3000,n_features=20,n_classes=3")
    schedule = SGDSchedule(epochs=30, batch_size=512, lr=0.05, lr_steps=((15, 0.025),), seed=3)
    run = train(ds, 1e-2, tmp_path_factory.mktemp("traj") / "run", mode="trajectory", deltagrad_history=True,
                sgd_schedule=schedule)
    ids = random_forget_ids(run.n_train, FORGET_RATIO, seed=1)
    retrained = forget(run, ids, method="retrain")
    return run, ids, retrained


def test_deltagrad_with_every_step_exact_is_retraining(trajectory):
    run, ids, retrained = trajectory
    result = forget(run, ids, method="deltagrad", t0=1)
    assert torch.allclose(result.theta, retrained.theta, rtol=0, atol=1e-10)
    assert result.stats["approximate_steps"] == 0
    # both read every retained row once per epoch
    epochs = run.schedule().epochs
    assert result.stats["passes_retained"] == pytest.approx(epochs)
    assert retrained.stats["passes_retained"] == pytest.approx(epochs) and retrained.stats["passes_forget"] == 0


def test_deltagrad_matches_the_retrained_trajectory(trajectory):
    run, ids, retrained = trajectory
    w_T = run.theta()
    result = forget(run, ids, method="deltagrad")
    assert residual(result.theta, retrained.theta, w_T) <= 0.05
    stats = result.stats
    T = run.schedule().n_iterations(run.n_train)
    expected_exact = sum(is_exact_step(t, 5, 20) for t in range(T))
    assert stats["iterations"] == T and stats["exact_steps"] == expected_exact
    assert stats["approximate_steps"] == T - expected_exact and stats["fallback_exact_steps"] == 0
    assert stats["pairs_skipped"] == 1  # t = 0: w^I_0 = w_0, a degenerate pair
    assert stats["history_bytes_read"] == run.deltagrad_history().nbytes
    # every forgotten row once per epoch; retained rows only in the batches of exact steps
    assert stats["passes_forget"] == pytest.approx(run.schedule().epochs)
    assert stats["passes_retained"] == pytest.approx(run.schedule().epochs * expected_exact / T, rel=0.1)


def test_deltagrad_curvature_model_matters(trajectory, monkeypatch):
    """Sanity of the test above: with the L-BFGS model replaced by its scalar part the residual is far worse."""
    run, ids, retrained = trajectory
    monkeypatch.setattr(CompactLBFGS, "matvec", lambda self, v: self.sigma * v)
    crude = forget(run, ids, method="deltagrad").theta
    assert residual(crude, retrained.theta, run.theta()) > 0.1


# ---------------------------------------------------------------------------------------- interface
@pytest.mark.parametrize("method, options, message", [
    ("deltagrad", {"t0": 0}, "method 'deltagrad': option t0 must be an integer in [1, 1e+06], got 0"),
    ("deltagrad", {"m": 1.5}, "method 'deltagrad': option m must be an integer in [1, 100], got 1.5"),
    ("deltagrad", {"j0": -1}, "option j0 must be an integer in [0, "),
    ("newton", {"steps": 0}, "method 'newton': option steps must be an integer in [1, 100]"),
    ("newton", {"gradient": "fast"}, "option gradient must be one of 'influence', 'exact', got 'fast'"),
    ("newton", {"cg_tol": 2.0}, "method 'newton': option cg_tol must be a finite number in (0, 1), got 2.0"),
    ("finetune", {"lr": -0.1}, "method 'finetune': option lr must be a finite number in (0, 100] or None, got -0.1"),
    ("finetune", {"epochs": "many"}, "method 'finetune': option epochs must be an integer in [1, 1000], got 'many'"),
    ("finetune", {"batch_size": True}, "option batch_size must be an integer"),
    ("neggrad", {"retain_weight": 1.0}, "method 'neggrad': option retain_weight must be a finite number in [0, 1), got 1.0"),
    ("neggrad", {"lr": float("nan")}, "option lr must be a finite number"),
    ("newton", {"damping": 1}, "method 'newton' has no option damping"),
])
def test_bad_options_are_refused_clearly(method, options, message):
    with pytest.raises(InputError) as info:
        make_method(method, **options)
    assert message in str(info.value)


def test_methods_refuse_runs_they_cannot_unlearn(digits, trajectory, tmp_path):
    with pytest.raises(InputError, match="method 'deltagrad' does not support converged-mode runs"):
        forget(digits.run, digits.ids, method="deltagrad")
    run, ids, _ = trajectory
    with pytest.raises(InputError, match="method 'newton' does not support trajectory-mode runs"):
        forget(run, ids, method="newton")
    bare = train(load_dataset("synthetic:n_samples=300,n_features=4,n_classes=2"), 1e-2, tmp_path / "bare",
                 mode="trajectory", sgd_schedule=SGDSchedule(epochs=2, batch_size=64, lr=0.1, lr_steps=()))
    with pytest.raises(RunError, match="has no DeltaGrad history"):
        forget(bare, [0, 1, 2], method="deltagrad")


def test_cli_reports_cost_for_every_baseline(digits, trajectory, tmp_path, capsys):
    ids_file = tmp_path / "ids.txt"
    write_ids_file(ids_file, digits.ids)
    run, traj_ids, _ = trajectory
    traj_ids_file = tmp_path / "traj_ids.txt"
    write_ids_file(traj_ids_file, traj_ids)
    cases = [("newton", digits.run.path, ids_file, []), ("finetune", digits.run.path, ids_file, ["--set", "epochs=1"]),
             ("neggrad", digits.run.path, ids_file, []), ("deltagrad", run.path, traj_ids_file, ["--set", "t0=4"])]
    for method, source_dir, ids, extra in cases:
        run_dir = tmp_path / f"run-{method}"  # a fresh copy: each request goes to its own deletion ledger
        shutil.copytree(source_dir, run_dir)
        out = tmp_path / method
        code = 0
        try:
            main(["forget", str(run_dir), "--ids", str(ids), "--method", method, "--out", str(out), "--json", *extra])
        except SystemExit as exc:
            code = exc.code
        captured = capsys.readouterr()
        assert code == 0, captured.err
        payload = json.loads(captured.out)
        stored = json.loads((out / "result.json").read_text())
        for key in ("time_s", "cpu_time_s", "peak_rss_bytes", "passes_forget", "passes_retained", "history_bytes_read"):
            assert key in payload and key in stored, (method, key)
        assert payload["method"] == method and (out / "model.safetensors").is_file()
    assert stored["options"]["t0"] == 4 and stored["history_bytes_read"] > 0
    code = 0
    try:
        main(["forget", str(run.path), "--ids", str(traj_ids_file), "--method", "deltagrad", "--out",
              str(tmp_path / "bad"), "--set", "t0=0"])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and "option t0 must be an integer in [1, " in capsys.readouterr().err
