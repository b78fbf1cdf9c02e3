import numpy as np
import pytest
import torch

from miniunlearn.models import CachedCurvature, LogisticRegression, Rows
from miniunlearn.models.rows import RowsWithout
from miniunlearn.models.curvature import LogitSpan
from tests.helpers import softmax_hessian, softmax_objective


def _random_step(rng, n, d, C, chunk_rows, workers):
    """Random rows, a random point theta and a random step, with the step's logit changes over the rows
    (one product); returns X, y, theta, step, the rows and the :class:`LogitSpan`."""
    X, y = rng.normal(size=(n, d)), rng.integers(0, C, size=n)
    model = LogisticRegression(d, C)
    theta, step = rng.normal(size=model.n_params), rng.normal(size=model.n_params)
    rows = Rows(X, y, chunk_rows=chunk_rows, workers=workers)
    cache = CachedCurvature(model, rows, torch.from_numpy(theta))
    along = LogitSpan(cache)
    along.accumulate(cache.hvp_sum_with_logits(torch.from_numpy(step))[1], 1.0)
    return X, y, theta, step, rows, along


@pytest.mark.parametrize("workers", [1, 3])
def test_the_loss_along_a_step_matches_the_objective_computed_at_each_point(rng, workers):
    n, d, C = 250, 6, 4
    X, y, theta, step, rows, along = _random_step(rng, n, d, C, chunk_rows=40, workers=workers)
    read = rows.rows_read
    f = softmax_objective(X, y, C, 0.0)  # the mean loss, no penalty: an independent computation
    for t in (0.0, 0.3, 1.0, 2.5):
        value, first, second = along.loss_along(t)
        loss, grad = f(theta + t * step)
        h = 1e-5
        numeric_second = (f(theta + (t + h) * step)[1] - f(theta + (t - h) * step)[1]) @ step / (2 * h)
        assert value == pytest.approx(n * loss, rel=1e-12)
        assert first == pytest.approx(n * grad @ step, rel=1e-10, abs=1e-10)
        assert second == pytest.approx(n * numeric_second, rel=1e-6)
    assert rows.rows_read == read  # no pass over the rows


@pytest.mark.parametrize("workers", [1, 3])
def test_the_loss_with_a_step_length_per_block_matches_the_objective_at_each_point(rng, workers):
    """Classes {1, 3} and the others moved by their own lengths (a, b): loss, gradient and Hessian in (a, b)
    against the objective computed at theta + a D_S + b D_rest and its finite differences."""
    n, d, C = 200, 5, 4
    X, y, theta, step, rows, along = _random_step(rng, n, d, C, chunk_rows=30, workers=workers)
    read = rows.rows_read
    own = np.zeros((C, d + 1))
    own[[1, 3]] = step.reshape(C, d + 1)[[1, 3]]
    parts = (own.ravel(), step - own.ravel())
    groups = torch.tensor([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    f = softmax_objective(X, y, C, 0.0)

    def loss(a, b):
        return n * f(theta + a * parts[0] + b * parts[1])[0]

    def grad(a, b):
        g = n * f(theta + a * parts[0] + b * parts[1])[1]
        return np.array([g @ parts[0], g @ parts[1]])

    for a, b in ((0.0, 0.0), (1.0, 1.0), (2.5, 0.4), (-0.3, 1.7)):
        value, first, second = along.loss_along_blocks(torch.tensor([a, b], dtype=torch.float64), groups)
        h = 1e-5
        numeric = np.column_stack([(grad(a + h, b) - grad(a - h, b)) / (2 * h), (grad(a, b + h) - grad(a, b - h)) / (2 * h)])
        assert value == pytest.approx(loss(a, b), rel=1e-12)
        np.testing.assert_allclose(first.numpy(), grad(a, b), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(second.numpy(), numeric, rtol=1e-6, atol=1e-8)
    # one group of every class is the line: the same numbers as loss_along
    line = along.loss_along(0.7)
    block = along.loss_along_blocks(torch.tensor([0.7], dtype=torch.float64), torch.ones(1, C, dtype=torch.float64))
    assert line == pytest.approx((block[0], float(block[1][0]), float(block[2][0, 0])), rel=1e-12)
    assert rows.rows_read == read  # no pass over the rows


@pytest.mark.parametrize("in_memory", [True, False])
def test_the_hessian_diagonal_over_chunks_matches_autograd(rng, tmp_path, in_memory):
    """Kept float32 squares (a set in memory) or one reused buffer (a memory-mapped set, chunks of
    different sizes: a stale tail of a larger chunk must not leak into the last one's sum)."""
    n, d, C = 90, 5, 3
    X, y = rng.normal(size=(n, d)), rng.integers(0, C, size=n)
    if not in_memory:
        mapped = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float64, shape=X.shape)
        mapped[:] = X
        X = mapped
    model = LogisticRegression(d, C)
    theta = torch.from_numpy(rng.normal(size=model.n_params))
    cache = CachedCurvature(model, Rows(X, y, chunk_rows=40), theta, diag=True)
    features = torch.from_numpy(np.asarray(X))
    loss = lambda t: torch.nn.functional.cross_entropy(model.logits(t, features), torch.from_numpy(y), reduction="sum")
    expected = torch.autograd.functional.hessian(loss, theta).diagonal()
    assert torch.allclose(cache.diag_sum, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("workers", [1, 3])
def test_rows_left_out_are_left_out_of_every_sum(rng, tmp_path, in_memory, workers):
    """Sums over a set read in place with rows left out, against autograd and numpy on the kept rows alone.
    The left-out rows are made extreme (large norms), so any of them leaking into a sum, a norm or a span
    shows; one chunk is left out entirely, and some at chunk edges."""
    n, d, C = 120, 5, 4
    X, y = rng.normal(size=(n, d)), rng.integers(0, C, size=n)
    left = np.array([0, 1, 39, 40] + list(range(80, 100)) + [119])
    X[left] *= 25.0
    keep = np.setdiff1d(np.arange(n), left)
    if not in_memory:
        mapped = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float64, shape=X.shape)
        mapped[:] = X
        X = mapped
    model = LogisticRegression(d, C)
    theta = torch.from_numpy(rng.normal(size=model.n_params) * 0.3)
    v = torch.from_numpy(rng.normal(size=model.n_params))
    rows = RowsWithout(X, y, left, chunk_rows=20, workers=workers)
    cache = CachedCurvature(model, rows, theta, grad=True, diag=True, loss=True, row_norm=True, span_of=v)

    Xk, yk = torch.from_numpy(np.asarray(X)[keep]), torch.from_numpy(y[keep])
    loss = lambda t: torch.nn.functional.cross_entropy(model.logits(t, Xk), yk, reduction="sum")
    hessian = torch.autograd.functional.hessian(loss, theta)
    assert cache.loss_sum == pytest.approx(float(loss(theta)), rel=1e-12)
    assert torch.allclose(cache.grad_sum, torch.func.grad(loss)(theta), rtol=1e-10, atol=1e-10)
    assert torch.allclose(cache.diag_sum, hessian.diagonal(), rtol=1e-6, atol=1e-6)
    assert torch.allclose(cache.hvp_sum(v), hessian @ v, rtol=1e-10, atol=1e-10)
    assert torch.allclose(cache.hessian_sum(), hessian, rtol=1e-10, atol=1e-10)
    assert cache.max_row_norm == pytest.approx(np.linalg.norm(np.asarray(X)[keep], axis=1).max(), rel=1e-14)
    Z = np.hstack([np.asarray(X)[keep], np.ones((len(keep), 1))]) @ v.numpy().reshape(C, d + 1).T
    assert cache.span == pytest.approx((Z.max(axis=1) - Z.min(axis=1)).max(), rel=1e-12)
    assert rows.rows_read == 3 * len(keep) and len(rows) == len(keep)  # pass, product, dense Hessian: over R

    along = LogitSpan(cache)
    hv, logits = cache.hvp_sum_with_logits(v)
    along.accumulate(logits, 1.0)
    assert torch.allclose(hv, hessian @ v, rtol=1e-10, atol=1e-10)
    assert along.span() == pytest.approx(cache.span, rel=1e-12)
    f = softmax_objective(np.asarray(X)[keep], y[keep], C, 0.0)
    for t in (0.0, 0.7, 2.0):
        value, first, _ = along.loss_along(t)
        expected_value, expected_grad = f(theta.numpy() + t * v.numpy())
        assert value == pytest.approx(len(keep) * expected_value, rel=1e-12)
        assert first == pytest.approx(len(keep) * expected_grad @ v.numpy(), rel=1e-10, abs=1e-10)
    # two groups of classes, each moved by its own length: the rows left out stay out of the sums too
    own = np.zeros((C, d + 1))
    own[0] = v.numpy().reshape(C, d + 1)[0]
    parts = (own.ravel(), v.numpy() - own.ravel())
    groups = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    value, first, _ = along.loss_along_blocks(torch.tensor([1.8, 0.4], dtype=torch.float64), groups)
    expected_value, expected_grad = f(theta.numpy() + 1.8 * parts[0] + 0.4 * parts[1])
    assert value == pytest.approx(len(keep) * expected_value, rel=1e-12)
    np.testing.assert_allclose(first.numpy(), len(keep) * np.array([expected_grad @ part for part in parts]),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("in_place", [False, True])
def test_a_float32_product_is_the_float64_one_to_float32_rounding(rng, in_place):
    """``single=True`` against numpy's float64 Hessian of the kept rows (written in the test helpers): as
    close as float32 allows, but not bitwise the float64 product (it did run in float32)."""
    n, d, C = 300, 9, 5
    X, y = rng.normal(size=(n, d)), rng.integers(0, C, size=n)
    left = np.sort(rng.choice(n, size=40, replace=False))
    keep = np.setdiff1d(np.arange(n), left)
    model = LogisticRegression(d, C)
    theta, v = rng.normal(size=model.n_params) * 0.3, rng.normal(size=model.n_params)
    rows = RowsWithout(X, y, left, chunk_rows=64) if in_place else Rows(X, y, keep, chunk_rows=64)
    cache = CachedCurvature(model, rows, torch.from_numpy(theta))
    expected = len(keep) * softmax_hessian(X[keep], C, 0.0, theta) @ v
    got, logits = cache.hvp_sum_with_logits(torch.from_numpy(v), single=True)
    assert got.dtype == torch.float64 and rows.rows_read == 2 * len(keep)  # the softmax pass, then this one
    error = np.linalg.norm(got.numpy() - expected) / np.linalg.norm(expected)
    assert 1e-12 < error < 1e-5
    Z = np.hstack([X, np.ones((n, 1))]) @ v.reshape(C, d + 1).T
    if in_place:
        Z[left] = 0.0  # rows left out change no logit
    else:
        Z = Z[keep]
    np.testing.assert_allclose(torch.cat(logits).numpy(), Z, rtol=1e-5, atol=1e-5 * np.abs(Z).max())
