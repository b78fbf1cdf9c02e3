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
