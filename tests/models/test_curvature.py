import numpy as np
import pytest
import torch

from miniunlearn.models import CachedCurvature, LogisticRegression, Rows
from miniunlearn.models.curvature import LogitSpan
from tests.helpers import softmax_objective


@pytest.mark.parametrize("workers", [1, 3])
def test_the_loss_along_a_step_matches_the_objective_computed_at_each_point(rng, workers):
    n, d, C = 250, 6, 4
    X, y = rng.normal(size=(n, d)), rng.integers(0, C, size=n)
    model = LogisticRegression(d, C)
    theta, step = rng.normal(size=model.n_params), rng.normal(size=model.n_params)
    rows = Rows(X, y, chunk_rows=40, workers=workers)
    cache = CachedCurvature(model, rows, torch.from_numpy(theta))
    along = LogitSpan(cache)
    _, logits = cache.hvp_sum_with_logits(torch.from_numpy(step))
    along.accumulate(logits, 1.0)
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
