"""Anderson-accelerated fixed points and the measured contraction factor, on maps with known answers."""

import numpy as np
import pytest
import torch

from miniunlearn.solvers.fixed_point import STALL_EVALUATIONS, anderson, ritz_contraction


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
    result = anderson(lambda x: M @ x + 1.0, torch.zeros(2, dtype=torch.float64), tol=1e-10, max_iter=10, depth=0)
    assert not result.converged and result.iterations == 10
    assert result.contraction_factor == pytest.approx(1.5, rel=1e-6) and result.banach_bound == float("inf")
    # its step grows from the first evaluation on: it stops once that many evaluations brought no new low
    result = anderson(lambda x: M @ x + 1.0, torch.zeros(2, dtype=torch.float64), tol=1e-10, max_iter=1000, depth=0)
    assert not result.converged and result.iterations == STALL_EVALUATIONS + 1


@pytest.mark.parametrize("depth", [0, 8])
def test_a_map_floored_by_its_own_rounding_stops_near_that_floor(rng, depth):
    """phi rounded to float32 cannot bring the step below ~1e-7 of x: asked for 1e-12, the iteration stops
    once the step stalls (not at max_iter), unconverged, with x = phi(previous) and x as close as float32 allows."""
    M = _symmetric(rng, np.linspace(-0.5, 0.7, 40))
    b = torch.from_numpy(rng.normal(size=40))
    x_star = torch.linalg.solve(torch.eye(40, dtype=torch.float64) - M, b)
    phi = lambda x: (M.float() @ x.float() + b.float()).double()  # noqa: E731
    result = anderson(phi, torch.zeros(40, dtype=torch.float64), tol=1e-12, max_iter=1000, depth=depth)
    assert not result.converged and result.iterations < 200
    assert torch.equal(result.x, phi(result.previous))
    assert float((result.x - x_star).norm()) <= 1e-5 * float(x_star.norm())
