import numpy as np
import pytest
import torch

from miniunlearn.models import CachedCurvature, LogisticRegression, Objective, Rows


@pytest.fixture
def problem(rng):
    n, d, C = 40, 5, 4
    X = torch.from_numpy(rng.normal(size=(n, d)))
    y = torch.from_numpy(rng.integers(0, C, size=n))
    model = LogisticRegression(d, C)
    theta = torch.from_numpy(rng.normal(size=model.n_params))
    return model, theta, X, y


def test_closed_form_derivatives_match_autograd(problem):
    model, theta, X, y = problem
    loss = lambda t: torch.nn.functional.cross_entropy(model.logits(t, X), y, reduction="sum")
    t = theta.clone().requires_grad_()
    grad_auto = torch.autograd.grad(loss(t), t)[0]
    hess_auto = torch.autograd.functional.hessian(loss, theta)
    loss_sum, grad_sum = model.loss_grad_sum(theta, X, y)
    assert torch.allclose(loss_sum, loss(theta))
    assert torch.allclose(grad_sum, grad_auto, atol=1e-12)
    probs = model.probabilities(theta, X)
    assert torch.allclose(model.hessian_sum(X, probs), hess_auto, atol=1e-12)
    V = torch.randn(model.n_params, 3, dtype=torch.float64)
    assert torch.allclose(model.hvp_sum(X, probs, V), hess_auto @ V, atol=1e-12)
    assert torch.allclose(model.hvp_sum(X, probs, V[:, 0]), hess_auto @ V[:, 0], atol=1e-12)
    assert torch.allclose(model.hessian_diag_sum(X, probs), hess_auto.diagonal(), atol=1e-12)


def test_hessian_diagonal_from_float32_squares_matches_autograd(problem):
    """Squared features handed over in float32 (as a set held in memory keeps them): the diagonal
    comes back in float64, within float32's precision of the exact one."""
    model, theta, X, y = problem
    loss = lambda t: torch.nn.functional.cross_entropy(model.logits(t, X), y, reduction="sum")
    expected = torch.autograd.functional.hessian(loss, theta).diagonal()
    got = model.hessian_diag_sum(X, model.probabilities(theta, X), squares=(X * X).to(torch.float32))
    assert got.dtype == torch.float64
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert not torch.equal(got, model.hessian_diag_sum(X, model.probabilities(theta, X)))  # float32 was used


def test_hessian_diagonal_from_float32_squares_that_overflow_is_computed_in_float64(problem):
    model, theta, X, _ = problem
    X = X.clone()
    X[3, 2] = 1e20  # its square is beyond float32's range
    probs = model.probabilities(theta, X)
    got = model.hessian_diag_sum(X, probs, squares=(X.to(torch.float32)).square())
    assert torch.isfinite(got).all()
    assert torch.allclose(got, model.hessian_diag_sum(X, probs), rtol=1e-12)


def test_hessian_diagonal_of_some_classes_leaves_the_others_nan(problem):
    model, theta, X, y = problem
    loss = lambda t: torch.nn.functional.cross_entropy(model.logits(t, X), y, reduction="sum")
    expected = torch.autograd.functional.hessian(loss, theta).diagonal().reshape(model.n_classes, -1)
    got = model.hessian_diag_sum(X, model.probabilities(theta, X), classes=[3, 1]).reshape(model.n_classes, -1)
    assert torch.allclose(got[[1, 3]], expected[[1, 3]], atol=1e-12)
    assert torch.isnan(got[[0, 2]]).all()


def test_hessian_with_float32_products_accumulates_in_float64(problem):
    model, theta, X, _ = problem
    loss = lambda t: torch.nn.functional.cross_entropy(model.logits(t, X), torch.zeros(len(X), dtype=torch.long),
                                                       reduction="sum")
    hess_auto = torch.autograd.functional.hessian(loss, theta)  # the Hessian does not depend on the labels
    probs = model.probabilities(theta, X)
    out = torch.zeros(model.n_params, model.n_params, dtype=torch.float64)
    for part in (slice(0, 17), slice(17, None)):  # two chunks, each with its own reference class
        model.hessian_sum(X[part], probs[part], out=out, gemm_dtype=torch.float32)
    assert out.dtype == torch.float64
    assert torch.linalg.matrix_norm(out - hess_auto) <= 1e-6 * torch.linalg.matrix_norm(hess_auto)
    # every row of A_i = diag(p_i) - p_i p_i^T sums to zero: so do the class blocks of H
    blocks = out.view(model.n_classes, model.n_features + 1, model.n_classes, model.n_features + 1)
    assert blocks.sum(dim=2).abs().max() <= 1e-6 * hess_auto.abs().max()


@pytest.mark.parametrize("keep_rows, workers", [(False, 1), (True, 3)])
def test_cached_curvature_equals_autograd_and_counts_its_passes(rng, keep_rows, workers):
    n, d, C, l2 = 300, 4, 3, 0.05
    X, y = rng.normal(size=(n, d)), rng.integers(0, C, size=n)
    model = LogisticRegression(d, C)
    theta = torch.from_numpy(rng.normal(size=model.n_params))
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    loss = lambda t: torch.nn.functional.cross_entropy(model.logits(t, Xt), yt, reduction="sum")
    hess_auto = torch.autograd.functional.hessian(loss, theta)
    t = theta.clone().requires_grad_()
    grad_auto = torch.autograd.grad(loss(t), t)[0]
    rows = Rows(X, y, chunk_rows=37, workers=workers)
    cache = CachedCurvature(model, rows, theta, keep_rows=keep_rows, grad=True, diag=True)
    v = torch.from_numpy(rng.normal(size=model.n_params))
    assert torch.allclose(cache.grad_sum, grad_auto, atol=1e-11)
    assert torch.allclose(cache.diag_sum, hess_auto.diagonal(), atol=1e-11)
    assert torch.allclose(cache.hvp_sum(v), hess_auto @ v, atol=1e-11)
    assert rows.rows_read == 2 * n  # the sweep that cached the probabilities, then one product
    curvature = Objective(model, Rows(X, y), l2).curvature(theta)
    assert torch.allclose(curvature.hvp(v), hess_auto @ v / n + l2 * v, atol=1e-12)
    assert torch.allclose(curvature.diag, hess_auto.diagonal() / n + l2, atol=1e-12)


def test_linear_layout_round_trip(problem):
    model, theta, X, _ = problem
    parts = model.to_linear(theta)
    layer = torch.nn.Linear(model.n_features, model.n_classes, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(parts["weight"])
        layer.bias.copy_(parts["bias"])
    assert torch.allclose(layer(X), model.logits(theta, X))
    assert torch.equal(model.from_linear(parts["weight"], parts["bias"]), theta)


@pytest.mark.parametrize("workers", [1, 3])
def test_objective_chunks_and_workers_do_not_change_sums(rng, workers):
    n, d, C = 1000, 6, 3
    X, y = rng.normal(size=(n, d)), rng.integers(0, C, size=n)
    model = LogisticRegression(d, C)
    theta = torch.from_numpy(rng.normal(size=model.n_params))
    whole = Objective(model, Rows(X, y, chunk_rows=10_000), 0.1)
    chunked = Objective(model, Rows(X, y, chunk_rows=97, workers=workers), 0.1)
    v1, g1 = whole.value_grad(theta)
    v2, g2 = chunked.value_grad(theta)
    assert v1 == pytest.approx(v2, rel=1e-13) and torch.allclose(g1, g2, rtol=1e-12)
    assert torch.allclose(whole.hessian_loss_mean(theta), chunked.hessian_loss_mean(theta), atol=1e-13)
    assert chunked.passes == 2.0
    # a subset of rows equals the same rows given directly
    ids = np.array([3, 10, 500, 999])
    sub = Objective(model, Rows(X, y, ids, chunk_rows=2), 0.1)
    direct = Objective(model, Rows(X[ids], y[ids]), 0.1)
    assert torch.allclose(sub.value_grad(theta)[1], direct.value_grad(theta)[1], atol=1e-14)


def test_memmap_rows_are_served_as_float64(tmp_path, rng):
    X = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.float32, (50, 3))
    X[:] = rng.normal(size=(50, 3))
    X.flush()
    X = np.load(tmp_path / "x.npy", mmap_mode="r")
    y = rng.integers(0, 2, size=50)
    rows = Rows(X, y, np.array([1, 4, 9]), chunk_rows=2)
    chunks = list(rows.iter_chunks())
    assert [len(c[1]) for c in chunks] == [2, 1] and chunks[0][0].dtype == torch.float64
    assert np.allclose(chunks[0][0].numpy(), X[[1, 4]])
