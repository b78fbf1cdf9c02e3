"""Certified Newton-CG: its certificate bounds the distance to an independently computed optimum on
1,000 random instances (none may violate it), and the bound itself matches its definition."""

import itertools
import math

import numpy as np
import pytest
import torch

from miniunlearn.data import load_dataset
from miniunlearn.models import CachedCurvature, LogisticRegression, Objective, Penalty, Rows
from miniunlearn.solvers.certificate import newton_certificate, phi, self_concordance_constant, smallest_root
from miniunlearn.solvers.certified_newton import certified_newton_cg
from tests.helpers import reference_optimum, softmax_hessian

N_INSTANCES = 1000


@pytest.fixture(scope="module")
def pool():
    """Source rows: two real sets, a noisy synthetic one and two separable ones (no label noise)."""
    specs = {"digits": "digits", "breast_cancer": "breast_cancer",
             "synthetic": "synthetic:n_samples=2000,n_features=20,n_classes=3,seed=1",
             "separable": "synthetic:n_samples=2000,n_features=12,n_classes=4,seed=2,separation=30,label_noise=0",
             "separable2": "synthetic:n_samples=2000,n_features=8,n_classes=2,seed=3,separation=50,label_noise=0"}
    return {name: load_dataset(spec) for name, spec in specs.items()}


def _instance(rng, pool):
    ds = pool[rng.choice(sorted(pool))]
    n = int(rng.integers(30, 160))
    d = int(rng.integers(2, min(12, ds.n_features) + 1))
    rows = rng.choice(ds.n_train, size=n, replace=False)
    X = ds.X_train[np.ix_(rows, rng.choice(ds.n_features, size=d, replace=False))]
    if rng.random() < 0.2:
        X = X * rng.uniform(1, 5)  # larger rows: stronger third-order effects
    labels, y = np.unique(ds.y_train[rows], return_inverse=True)
    l2 = float(10 ** rng.uniform(-6, 0))
    r = int(np.clip(round(10 ** rng.uniform(-3, np.log10(0.95)) * n), 1, n - 2))
    forget = rng.choice(n, size=r, replace=False)
    keep = np.setdiff1d(np.arange(n), forget)
    if len(labels) < 2 or len(np.unique(y[keep])) < 2:
        return None
    return X, y.astype(np.int64), len(labels), l2, keep


def _instances(rng, pool):
    """Random instances of :func:`_instance`, without the draws it rejects."""
    while True:
        instance = _instance(rng, pool)
        if instance is not None:
            yield instance


def _history_and_optima(X, y, C, l2, keep):
    """What a solve from w_T needs and what checks it: w_T, the retained optimum w_R with its error bound, the
    model, P (the history's curvature at w_T: the inverse Hessian of all rows) and R."""
    w_T, _ = reference_optimum(X, y, C, l2)
    w_R, error_R = reference_optimum(X[keep], y[keep], C, l2)
    P = torch.from_numpy(np.linalg.inv(softmax_hessian(X, C, l2, w_T)))
    R = self_concordance_constant(float(np.linalg.norm(X[keep], axis=1).max()))
    return w_T, w_R, error_R, LogisticRegression(X.shape[1], C), P, R


@pytest.mark.slow  # 1,000 instances, each solved four times (scipy twice, the certified solver in both precisions)
def test_the_certificate_bounds_the_true_distance_on_random_instances(pool):
    """Also with CG's products in float32 (``single``): every point it certifies was checked in float64."""
    rng = np.random.default_rng(2026)
    checked, violations, worst = 0, dict.fromkeys((False, True), 0), dict.fromkeys((False, True), 0.0)
    for X, y, C, l2, keep in itertools.islice(_instances(rng, pool), N_INSTANCES):
        w_T, w_R, error_R, model, P, R = _history_and_optima(X, y, C, l2, keep)
        emptied = [int(c) for c in np.setdiff1d(np.arange(C), y[keep])]  # their blocks get their own length
        for single in (False, True):
            objective = Objective(model, Rows(X[keep], y[keep]), l2)
            result = certified_newton_cg(objective, lambda v: P @ v, torch.from_numpy(w_T), torch.from_numpy(w_T),
                                         R=R, tol=1e-3, max_passes=5000, single=single, separate=emptied)
            true = float(np.linalg.norm(result.w.numpy() - w_R))
            # converged, unless tol * ||w - w_T|| lies below what float64 can certify (a tiny deletion, tiny l2)
            assert result.converged or result.stop.startswith("the tolerance is below"), (l2, len(keep), result.stop)
            if true > result.certificate + error_R:
                violations[single] += 1
            worst[single] = max(worst[single], (true - error_R) / result.certificate)
        checked += 1
    assert violations == {False: 0, True: 0}, f"certificates below the true distance of {checked} (worst {worst})"
    assert max(worst.values()) <= 1.0


def test_deletions_that_empty_a_class_are_certified_with_and_without_separate_block_lengths(pool):
    """Random instances with every row of one class forgotten too: both step-length rules converge, and
    every certificate bounds the distance to the independently computed optimum."""
    rng = np.random.default_rng(31)
    checked = 0
    for X, y, C, l2, keep in _instances(rng, pool):
        if checked == 40:
            break
        present = np.unique(y[keep])
        if len(present) < 3:
            continue
        emptied = int(rng.choice(present))
        keep = keep[y[keep] != emptied]
        w_T, w_R, error_R, model, P, R = _history_and_optima(X, y, C, l2, keep)
        separate = [int(c) for c in np.setdiff1d(np.arange(C), y[keep])]
        for classes in ((), separate):
            objective = Objective(model, Rows(X[keep], y[keep]), l2)
            result = certified_newton_cg(objective, lambda v: P @ v, torch.from_numpy(w_T), torch.from_numpy(w_T),
                                         R=R, tol=1e-3, max_passes=5000, separate=classes)
            assert result.converged or result.stop.startswith("the tolerance is below"), (l2, classes, result.stop)
            assert np.linalg.norm(result.w.numpy() - w_R) <= result.certificate + error_R
        checked += 1


def test_with_a_free_intercept_the_local_curvature_certifies_the_zero_mean_bias_optimum(pool):
    """Without the biases in the penalty the objective is flat along a common bias shift: the solver
    keeps zero-mean biases and certifies with each iterate's smallest eigenvalue on that subspace."""
    rng = np.random.default_rng(7)
    checked = 0
    for X, y, C, l2, keep in _instances(rng, pool):
        if checked == 30:
            break
        l2 = max(l2, 1e-4)  # the bias directions have only the data's curvature: keep the instances solvable
        if len(np.unique(y[keep])) < C:
            continue
        w_T, _ = reference_optimum(X, y, C, l2, penalize_intercept=False)
        w_R, error_R = reference_optimum(X[keep], y[keep], C, l2, penalize_intercept=False)
        model = LogisticRegression(X.shape[1], C)
        objective = Objective(model, Rows(X[keep], y[keep]), Penalty(model, l2, penalize_intercept=False))
        R = self_concordance_constant(float(np.linalg.norm(X[keep], axis=1).max()))
        result = certified_newton_cg(objective, None, torch.from_numpy(w_T), torch.from_numpy(w_T), R=R, tol=1e-3,
                                     max_passes=5000)
        assert result.converged or result.stop.startswith("the tolerance is below"), result.stop
        biases = result.w.numpy().reshape(C, -1)[:, -1]
        assert abs(biases.mean()) <= 1e-12 * (1 + np.abs(biases).max())
        assert np.linalg.norm(result.w.numpy() - w_R) <= result.certificate + error_R
        checked += 1


def test_the_bound_is_the_smallest_root_of_its_equation():
    a, b, s0, R = 1e-4, 2e-3, 0.05, 30.0
    y = smallest_root(a, b, s0, R)
    f = lambda t: a + b * phi(s0 + R * t)  # noqa: E731
    assert f(y) <= y and y <= f(y) * (1 + 1e-9)  # a fixed point, from above
    grid = np.linspace(0, y * (1 - 1e-6), 2000)
    assert all(f(t) > t for t in grid)  # and no smaller one
    assert smallest_root(a, 10.0, s0, R) == math.inf  # b R too large: no root, no bound
    assert smallest_root(a, 0.0, s0, R) == a


def test_phi_bounds_the_spread_of_the_average_hessian():
    """phi(s) >= max over eigenvalues e of E of |e / (1 + e)| and of |e| / sqrt(1 + e) taken at their
    smaller value, for e in [psi_lo - 1, psi_hi - 1]: checked against a dense grid of e."""
    for s in (1e-6, 1e-3, 0.1, 1.0, 3.0, 10.0, 40.0):
        lo, hi = -math.expm1(-s) / s, math.expm1(s) / s
        e = np.linspace(lo - 1, hi - 1, 20001)
        first = np.max(np.abs(e / (1 + e)))
        second = np.max(np.abs(e) / np.sqrt(1 + e))
        assert phi(s) >= min(first, second) * (1 - 1e-9) - 1e-15
        assert phi(s) <= min(first, second) * (1 + 1e-6) + 1e-12


def test_certificate_of_an_exact_newton_step_is_nearly_the_step_itself(rng):
    """At a point close to the optimum the Newton step is (almost) the distance: the certificate for
    the point is the step's length up to a small relative term."""
    X, y = rng.normal(size=(300, 4)), rng.integers(0, 3, size=300)
    l2 = 1e-2
    w_star, _ = reference_optimum(X, y, 3, l2)
    w = w_star + 1e-4 * rng.normal(size=w_star.size)
    Xa = np.hstack([X, np.ones((300, 1))])
    H = softmax_hessian(X, 3, l2, w)
    from tests.helpers import softmax_objective

    g = softmax_objective(X, y, 3, l2)(w)[1]
    D = -np.linalg.solve(H, g)
    span = np.ptp(Xa @ D.reshape(3, -1).T, axis=1).max()
    bound = newton_certificate(np.linalg.norm(D), D @ H @ D, 0.0, span, np.linalg.norm(g), np.linalg.norm(H @ D),
                               self_concordance_constant(np.linalg.norm(X, axis=1).max()), l2, np.linalg.norm(w))
    true = np.linalg.norm(w - w_star)
    assert true <= bound.at_point <= 1.05 * true
    assert np.linalg.norm(w + D - w_star) <= bound.after_step < 0.05 * true


def _preconditioned_problem(pool):
    """400 synthetic rows at l2 1e-3 from w = 0, preconditioned by the exact inverse Hessian at 0; returns the
    rows, the model, R, the start and the preconditioner."""
    ds = pool["synthetic"]
    X, y = ds.X_train[:400], ds.y_train[:400].astype(np.int64)
    model = LogisticRegression(X.shape[1], ds.n_classes)
    R = self_concordance_constant(float(np.linalg.norm(X, axis=1).max()))
    w0 = torch.zeros(model.n_params, dtype=torch.float64)
    P = torch.from_numpy(np.linalg.inv(softmax_hessian(X, ds.n_classes, 1e-3, w0.numpy())))
    return X, y, model, R, w0, lambda v: P @ v


def test_with_float32_products_every_certified_point_was_checked_in_float64(pool):
    """The same solve with CG's products in float32: certified against the independently computed optimum,
    one certificate pass per float64 check (the products stay counted as products), and no farther from
    the float64 solve's point than the two certificates allow."""
    X, y, model, R, w0, precondition = _preconditioned_problem(pool)
    results = {}
    for single in (False, True):
        objective = Objective(model, Rows(X, y), 1e-3)
        results[single] = result = certified_newton_cg(objective, precondition, w0, w0, R=R, tol=1e-6,
                                                       max_passes=500, single=single)
        assert result.converged and sum(result.passes.values()) == pytest.approx(objective.passes)
        assert result.passes["hvp"] == result.cg_iterations
    w_R, error = reference_optimum(X, y, model.n_classes, 1e-3)
    single = results[True]
    assert single.passes["certificate"] >= 1 and results[False].passes["certificate"] == 0
    assert np.linalg.norm(single.w.numpy() - w_R) <= single.certificate + error
    apart = float((single.w - results[False].w).norm())
    assert apart <= single.certificate + results[False].certificate


def test_float32_products_that_lie_never_certify_a_point(pool, monkeypatch):
    """Every float32 product scaled by 0.7: CG then solves a wrong system, its estimated residual vanishes at a
    step 1/0.7 times too long, and only the float64 check stands between that estimate and a certificate.
    The solve must still end certified within the true distance (the checks fall short, then float64)."""
    original = CachedCurvature.hvp_sum_with_logits

    def lying(self, v, single=False):
        total, logits = original(self, v, single)
        return (0.7 * total, logits) if single else (total, logits)

    monkeypatch.setattr(CachedCurvature, "hvp_sum_with_logits", lying)
    X, y, model, R, w0, precondition = _preconditioned_problem(pool)
    result = certified_newton_cg(Objective(model, Rows(X, y), 1e-3), precondition, w0, w0, R=R, tol=1e-6,
                                 max_passes=500, single=True)
    w_R, error = reference_optimum(X, y, model.n_classes, 1e-3)
    assert result.converged and result.passes["certificate"] >= 2  # the checks that fell short
    assert np.linalg.norm(result.w.numpy() - w_R) <= result.certificate + error


def test_a_float32_solve_that_stalls_hands_the_rest_to_float64(pool, monkeypatch):
    """Float32 products too noisy for CG ever to meet the target (as rounding makes them on an ill-conditioned
    system): no estimate meets it, so no check can miss. The first float32 solve that runs out of iterations
    must hand the rest of the solve to float64 products, which then certify."""
    original = CachedCurvature.hvp_sum_with_logits
    noise = torch.Generator().manual_seed(5)
    precisions = []  # True for every float32 product, in order

    def noisy(self, v, single=False):
        total, logits = original(self, v, single)
        precisions.append(single)
        if not single:
            return total, logits
        kick = torch.randn(total.shape, generator=noise, dtype=total.dtype)
        return total + 0.3 * float(total.norm()) * kick / float(kick.norm()), logits

    from miniunlearn.solvers.certified_newton import _Single

    stalled = _Single.stalled

    def marked(self):
        precisions.append(None)  # where the solver saw a float32 solve stall
        stalled(self)

    monkeypatch.setattr(CachedCurvature, "hvp_sum_with_logits", noisy)
    monkeypatch.setattr(_Single, "stalled", marked)
    X, y, model, R, w0, precondition = _preconditioned_problem(pool)
    max_cg = 20
    result = certified_newton_cg(Objective(model, Rows(X, y), 1e-3), precondition, w0, w0, R=R, tol=1e-6,
                                 max_passes=500, single=True, max_cg=max_cg)
    w_R, error = reference_optimum(X, y, model.n_classes, 1e-3)
    assert result.converged
    assert np.linalg.norm(result.w.numpy() - w_R) <= result.certificate + error
    assert None in precisions  # a float32 solve stalled (noisy products never meet tol 1e-6) ...
    stall = precisions.index(None)
    assert precisions[stall - max_cg:stall] == [True] * max_cg  # ... after max_cg float32 products
    assert True not in precisions[stall:]  # and every product after it was float64


def test_passes_are_counted_by_kind_and_add_up(pool):
    ds = pool["synthetic"]
    X, y = ds.X_train[:400], ds.y_train[:400].astype(np.int64)
    model = LogisticRegression(X.shape[1], ds.n_classes)
    objective = Objective(model, Rows(X, y), 1e-3)
    R = self_concordance_constant(float(np.linalg.norm(X, axis=1).max()))
    w0 = torch.zeros(model.n_params, dtype=torch.float64)
    result = certified_newton_cg(objective, None, w0, w0, R=R, tol=1e-6, max_passes=500)
    assert result.converged
    assert sum(result.passes.values()) == pytest.approx(objective.passes)
    assert result.passes["gradient"] == result.newton_iterations  # the start and every accepted line-search point
    assert result.passes["hvp"] == result.cg_iterations and result.passes["certificate"] == 0
    w_R, error = reference_optimum(X, y, ds.n_classes, 1e-3)
    assert np.linalg.norm(result.w.numpy() - w_R) <= result.certificate + error


def test_the_drift_widens_the_spread_and_vanishes_at_zero():
    from miniunlearn.solvers.certificate import phi_drift
    for s in (0.0, 1e-3, 0.3, 2.0, 40.0):
        assert phi_drift(s, 0.0) == phi(s)
        assert phi(s) <= phi_drift(s, 1e-6) <= phi_drift(s, 0.1) <= phi_drift(s, 1.0)
    # at s = 0 the spread is that of e^{+-drift} alone: 2 sinh(drift / 2) by the second bound
    assert phi_drift(0.0, 0.2) == pytest.approx(2 * math.sinh(0.1), rel=1e-12)


def test_the_line_minimum_is_the_minimiser_of_the_objective_along_the_step(pool):
    """The step length chosen from the cached probabilities and the step's logit changes is the
    minimiser of F along the step computed by scipy from the objective itself, also when it lies
    beyond the unit Newton step (a whole class forgotten: its logits keep falling)."""
    import scipy.optimize
    from miniunlearn.models.curvature import LogitSpan
    from miniunlearn.solvers.certified_newton import _line_minimum
    from tests.helpers import softmax_objective

    ds = pool["digits"]
    X, y = ds.X_train[:600], ds.y_train[:600].astype(np.int64)
    l2 = 1e-3
    w_T, _ = reference_optimum(X, y, ds.n_classes, l2)
    keep = y != 0  # forget class 0
    model = LogisticRegression(X.shape[1], ds.n_classes)
    objective = Objective(model, Rows(X[keep], y[keep]), l2)
    here = objective.curvature(torch.from_numpy(w_T), diag=False, value=True)
    P = torch.from_numpy(np.linalg.inv(softmax_hessian(X, ds.n_classes, l2, w_T)))
    step = -(P @ here.grad)  # the history's Newton step: the curvature of all rows, class 0 included
    along = LogitSpan(here.cache)
    along.accumulate(here.hvp_with_logits(step)[1], 1.0)
    t = _line_minimum(here, torch.from_numpy(w_T), step, along, objective.penalty)
    f = softmax_objective(X[keep], y[keep], ds.n_classes, l2)
    reference = scipy.optimize.minimize_scalar(lambda s: f(w_T + s * step.numpy())[0], bounds=(0, 64),
                                               method="bounded", options={"xatol": 1e-10}).x
    # the step uses the curvature of all rows, which the forgotten class's rows enlarge: it falls short
    assert t > 1.0
    assert t == pytest.approx(reference, rel=2e-3)
    # a step a thousand times too short: the longest step is taken, not searched for beyond it
    from miniunlearn.solvers.certified_newton import LINE_MAX
    short = LogitSpan(here.cache)
    short.accumulate(here.hvp_with_logits(step)[1], 1e-3)
    assert _line_minimum(here, torch.from_numpy(w_T), 1e-3 * step, short, objective.penalty) == LINE_MAX


def test_the_block_step_lengths_minimise_the_objective_over_the_two_blocks(pool):
    """A whole class forgotten: its block of the Newton step and the rest get their own lengths (a, b), and
    those are the minimiser of F(w + a D_S + b D_rest) computed by scipy from the objective itself. F there
    is below F at the line minimum, where one length serves both."""
    import scipy.optimize
    from miniunlearn.models.curvature import LogitSpan
    from miniunlearn.solvers.certified_newton import _block_minimum, _line_minimum
    from tests.helpers import softmax_objective

    ds = pool["digits"]
    X, y = ds.X_train[:600], ds.y_train[:600].astype(np.int64)
    l2 = 1e-4
    w_T, _ = reference_optimum(X, y, ds.n_classes, l2)
    keep = y != 0
    model = LogisticRegression(X.shape[1], ds.n_classes)
    objective = Objective(model, Rows(X[keep], y[keep]), l2)
    here = objective.curvature(torch.from_numpy(w_T), diag=False, value=True)
    P = torch.from_numpy(np.linalg.inv(softmax_hessian(X, ds.n_classes, l2, w_T)))
    step = -(P @ here.grad)
    along = LogitSpan(here.cache)
    along.accumulate(here.hvp_with_logits(step)[1], 1.0)
    w = torch.from_numpy(w_T)
    t = _line_minimum(here, w, step, along, objective.penalty)
    passes = objective.passes
    moved = _block_minimum(here, w, step, along, objective.penalty, [0])
    assert objective.passes == passes  # no pass over the rows
    own = np.zeros_like(w_T).reshape(ds.n_classes, -1)
    own[0] = step.numpy().reshape(ds.n_classes, -1)[0]
    parts = (own.ravel(), step.numpy() - own.ravel())
    f = softmax_objective(X[keep], y[keep], ds.n_classes, l2)

    def along_blocks(ab):
        value, g = f(w_T + ab[0] * parts[0] + ab[1] * parts[1])
        return value, np.array([g @ parts[0], g @ parts[1]])

    reference = scipy.optimize.minimize(along_blocks, [t, t], jac=True, method="BFGS", options={"gtol": 1e-12}).x
    lengths = np.linalg.lstsq(np.column_stack(parts), moved.numpy(), rcond=None)[0]
    np.testing.assert_allclose(lengths, reference, rtol=1e-3)
    assert f(w_T + moved.numpy())[0] < f(w_T + t * step.numpy())[0]
    assert lengths[0] > lengths[1]  # the emptied class's block goes further than the rest


@pytest.mark.parametrize("separate", [(), (3,)])
def test_a_whole_class_forgotten_is_certified(pool, separate):
    ds = pool["digits"]
    X, y = ds.X_train[:600], ds.y_train[:600].astype(np.int64)
    l2 = 1e-4
    w_T, _ = reference_optimum(X, y, ds.n_classes, l2)
    keep = y != 3
    model = LogisticRegression(X.shape[1], ds.n_classes)
    objective = Objective(model, Rows(X[keep], y[keep]), l2)
    P = torch.from_numpy(np.linalg.inv(softmax_hessian(X, ds.n_classes, l2, w_T)))
    R = self_concordance_constant(float(np.linalg.norm(X[keep], axis=1).max()))
    w0 = torch.from_numpy(w_T)
    result = certified_newton_cg(objective, lambda v: P @ v, w0, w0, R=R, tol=1e-3, max_passes=1000,
                                 separate=separate)
    w_R, error = reference_optimum(X[keep], y[keep], ds.n_classes, l2)
    assert result.converged
    assert np.linalg.norm(result.w.numpy() - w_R) <= result.certificate + error
    assert result.certificate <= 1e-3 * np.linalg.norm(result.w.numpy() - w_T)


def test_a_preconditioner_that_reads_diagonal_blocks_not_computed_is_refused(pool):
    ds = pool["synthetic"]
    X, y = ds.X_train[:100], ds.y_train[:100].astype(np.int64)
    model = LogisticRegression(X.shape[1], ds.n_classes)
    objective = Objective(model, Rows(X, y), 1e-3)
    w0 = torch.zeros(model.n_params, dtype=torch.float64)
    with pytest.raises(ValueError, match="Jacobi preconditioner reads every diagonal block"):
        certified_newton_cg(objective, None, w0, w0, R=1.0, tol=1e-3, max_passes=10, refresh_diag=[0])
    with pytest.raises(ValueError, match="refresh_diag must name its blocks"):
        certified_newton_cg(objective, lambda v: v, w0, w0, R=1.0, tol=1e-3, max_passes=10,
                            refresh=lambda here: (lambda v: v), refresh_diag=False)
    assert objective.passes == 0  # refused before any pass
