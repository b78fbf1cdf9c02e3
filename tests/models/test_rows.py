import torch

from miniunlearn.models.rows import max_squared_norm


def test_max_squared_norm_is_the_largest_row_norm_squared(rng):
    X = rng.normal(size=(300, 17)) * rng.uniform(0.1, 10.0, size=(300, 1))
    expected = max(float(row @ row) for row in X)  # row by row, in numpy
    assert abs(max_squared_norm(torch.from_numpy(X)) - expected) <= 1e-13 * expected


def test_max_squared_norm_of_no_rows_is_zero():
    assert max_squared_norm(torch.empty(0, 5, dtype=torch.float64)) == 0.0
