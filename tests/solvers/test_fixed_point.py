"""Anderson-accelerated fixed points and the measured contraction factor, on maps with known answers."""

import numpy as np
import pytest
import torch

from miniunlearn.solvers.fixed_point import anderson, ritz_contraction


def _symmetric(rng, eigenvalues):
    Q, _ = np.linalg.qr(rng.normal(size=(len(eigenvalues), len(eigenvalues))))
    return torch.from_numpy(Q @ np.diag(eigenvalues) @ Q.T)


@pytest.mark.parametrize("depth", [0, 6])
def test_anderson_reaches_the_fixed_point_of_a_linear_contraction(rng, depth):
    M = _symmetric(rng, np.linspace(-0.6, 0.8, 30))
    b = torch.from_numpy(rng.normal(size=30))
    x_star = torch.linalg.solve(torch.eye(30, dtype=torch.float64) - M, b)
    result = anderson(lambda x: M @ x + b, torch.zeros(30, dtype=torch.float64), tol=1e-12, max_iter=2000,
                      depth=depth)
    assert result.converged
    assert float((result.x - x_star).norm()) <= 1e-9 * float(x_star.norm())
    if depth:
        plain = anderson(lambda x: M @ x + b, torch.zeros(30, dtype=torch.float64), tol=1e-12, max_iter=2000, depth=0)
        assert result.iterations < plain.iterations / 2  # acceleration is the point of Anderson


def test_the_measured_contraction_factor_is_the_spectral_radius(rng):
    eigenvalues = np.r_[0.9, rng.uniform(-0.5, 0.5, size=19)]
    M = _symmetric(rng, eigenvalues)
    dx = [torch.from_numpy(rng.normal(size=20)) for _ in range(20)]
    assert ritz_contraction(dx, [M @ d for d in dx]) == pytest.approx(0.9, rel=1e-8)
    # from the iterates of plain iteration the estimate approaches the dominant eigenvalue
    result = anderson(lambda x: M @ x + 1.0, torch.zeros(20, dtype=torch.float64), tol=1e-10, max_iter=500, depth=0)
    assert result.contraction_factor == pytest.approx(0.9, abs=0.02)


def test_a_map_that_is_not_a_contraction_does_not_converge():
    M = torch.diag(torch.tensor([1.5, 0.2], dtype=torch.float64))
    result = anderson(lambda x: M @ x + 1.0, torch.zeros(2, dtype=torch.float64), tol=1e-10, max_iter=40, depth=0)
    assert not result.converged and result.iterations == 40
    assert result.contraction_factor == pytest.approx(1.5, rel=1e-6) and result.banach_bound == float("inf")
