"""Mini-Unlearning against independent computations (numpy/scipy, written here)."""

import numpy as np
import pytest
import torch

from miniunlearn.core.errors import ConvergenceError, InputError, RunError
from miniunlearn.data import load_dataset
from miniunlearn.runs import train
from miniunlearn.service import forget
from miniunlearn.service.ledger import Ledger
from miniunlearn.service.requests import random_forget_ids
from miniunlearn.training import SGDSchedule
from tests.helpers import reference_optimum, softmax_hessian, softmax_objective

L2 = 1e-2
SPEC = "synthetic:n_samples=700,n_features=6,n_classes=3,seed=4"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    dataset = load_dataset(SPEC)
    run = train(dataset, L2, tmp_path_factory.mktemp("mini") / "run")
    return run, dataset


def test_step0_is_the_exact_newton_step_on_the_retained_objective(setup):
    run, ds = setup
    U = random_forget_ids(ds.n_train, 0.2, 0)
    keep = np.setdiff1d(np.arange(ds.n_train), U)
    w_T = run.theta().numpy()
    f = softmax_objective(ds.X_train[keep], ds.y_train[keep], ds.n_classes, L2)
    H = softmax_hessian(ds.X_train[keep], ds.n_classes, L2, w_T)
    newton = w_T - np.linalg.solve(H, f(w_T)[1])
    result = forget(run, U, "mini", refine=0, fixed_point_tol=1e-9)
    assert np.linalg.norm(result.theta.numpy() - newton) <= 1e-6 * np.linalg.norm(newton - w_T)
    s = result.stats
    assert s["passes_retained"] == 0 and s["passes_forget"] >= 1 and s["curvature_profile"] == "exact"
    assert 0 < s["contraction_estimate"] < 1 and s["fixed_point_converged"] and s["certificate"] is None


def _certified_forget(setup, U, tol, **options) -> dict:
    """Forget U with mini at ``tol``; check the tolerance is met and the certificate bounds the
    distance to an independently computed retrained optimum. Returns the result's stats."""
    run, ds = setup
    keep = np.setdiff1d(np.arange(ds.n_train), U)
    w_R, reference_error = reference_optimum(ds.X_train[keep], ds.y_train[keep], ds.n_classes, L2)
    result = forget(run, U, "mini", tol=tol, **options)
    s = result.stats
    distance = np.linalg.norm(result.theta.numpy() - w_R)
    moved = np.linalg.norm(result.theta.numpy() - run.theta().numpy())
    assert s["converged"] and s["certificate"] <= tol * moved
    assert distance <= s["certificate"] + reference_error  # valid
    assert s["certified_relative"] == pytest.approx(s["certificate"] / moved)
    return s


@pytest.mark.parametrize("ratio", [0.05, 0.3, 0.9])
@pytest.mark.parametrize("tol", [1e-3, 1e-7])
def test_tol_refines_until_the_certificate_proves_the_distance(setup, ratio, tol):
    s = _certified_forget(setup, random_forget_ids(setup[1].n_train, ratio, 1), tol)
    assert s["start"] == ("step 0" if ratio < 0.2 else "w_T") and s["passes_retained"] >= 1
    assert s["retained_read_in_place"] == (ratio <= 0.15)  # few rows forgotten: R read in place, U left out


@pytest.mark.parametrize("tol", [1e-3, 1e-7])
def test_a_whole_class_forgotten_is_certified_with_its_block_following_the_iterate(setup, tol):
    s = _certified_forget(setup, np.flatnonzero(setup[1].y_train == 1), tol)  # every row of class 1
    assert "classes without retained rows [1]" in s["preconditioner"]


@pytest.mark.parametrize("ratio, copied", [(0.05, False), (0.3, True), ("class", True)])
def test_float32_products_are_certified_and_auto_takes_them_where_r_is_copied(setup, ratio, copied, monkeypatch):
    """Three classes: ``auto`` takes float32 products only for requests that copy R, and only on a large R; in
    either precision every certificate holds against the independently retrained optimum."""
    from miniunlearn.methods import mini

    ds = setup[1]
    U = np.flatnonzero(ds.y_train == 2) if ratio == "class" else random_forget_ids(ds.n_train, ratio, 2)
    assert _certified_forget(setup, U, 1e-7)["cg_products"] == "float64"  # 700 x 6 features: too few to pay
    monkeypatch.setattr(mini, "SINGLE_MIN_VALUES", 0)
    chosen = _certified_forget(setup, U, 1e-7)
    assert chosen["cg_products"] == ("float32, checked in float64" if copied else "float64")
    float32 = _certified_forget(setup, U, 1e-7, products="float32")
    float64 = _certified_forget(setup, U, 1e-7, products="float64")
    assert float32["cg_products"].startswith("float32") and float64["cg_products"] == "float64"
    assert float32["passes_by_kind"]["certificate"] >= 1 and float64["passes_by_kind"]["certificate"] == 0


def test_a_small_emptied_class_starts_at_w_t_and_a_fixed_budget_still_takes_step_0(tmp_path):
    """The smallest of six classes is under the share of rows that starts at w_T by size alone:
    with a tolerance the emptied class alone sends the solver to w_T; a fixed budget keeps step 0."""
    dataset = load_dataset("synthetic:n_samples=600,n_features=5,n_classes=6,seed=2")
    run = train(dataset, L2, tmp_path / "run")
    U = np.flatnonzero(dataset.y_train == np.argmin(np.bincount(dataset.y_train)))  # the smallest class
    assert len(U) <= 0.25 * (dataset.n_train - len(U))
    s = _certified_forget((run, dataset), U, 1e-6)
    assert s["start"] == "w_T" and s.get("iterations") is None
    budget = forget(run, U, "mini", refine=3).stats
    assert budget["start"] == "step 0" and budget["iterations"] >= 1


def test_the_emptied_class_preconditioner_is_a_block_of_p_beside_the_iterate_diagonal(rng):
    from miniunlearn.methods.mini import emptied_class_preconditioner

    C, d1 = 4, 3
    A = rng.normal(size=(C * d1, C * d1))
    P = torch.from_numpy(A @ A.T + np.eye(C * d1))
    diagonal = torch.from_numpy(rng.uniform(0.5, 2.0, size=C * d1))
    here = type("Here", (), {"diag": diagonal})()
    apply = emptied_class_preconditioner(lambda v: P @ v, [2], d1)(here)
    emptied = np.zeros(C * d1, dtype=bool)
    emptied[2 * d1:3 * d1] = True
    M = np.where(np.outer(~emptied, ~emptied), P.numpy(), 0.0)  # P's block on the other classes
    M[emptied, emptied] = 1.0 / diagonal.numpy()[emptied]
    v = torch.from_numpy(rng.normal(size=C * d1))
    assert np.allclose(apply(v).numpy(), M @ v.numpy(), rtol=1e-13, atol=1e-13)
    assert np.all(np.linalg.eigvalsh(M) > 0)


def test_refine_is_a_fixed_budget_of_passes(setup):
    run, ds = setup
    U = random_forget_ids(ds.n_train, 0.3, 2)
    keep = np.setdiff1d(np.arange(ds.n_train), U)
    w_R, reference_error = reference_optimum(ds.X_train[keep], ds.y_train[keep], ds.n_classes, L2)
    distances = []
    for refine in (1, 3, 8):
        result = forget(run, U, "mini", refine=refine)
        assert result.stats["passes_retained"] <= refine + 1  # a pass under way is finished
        assert result.stats["converged"] is None  # no tolerance was asked for, so none is claimed
        distance = np.linalg.norm(result.theta.numpy() - w_R)
        assert distance <= result.stats["certificate"] + reference_error
        distances.append(distance)
    assert distances[2] < distances[0]


def test_a_tolerance_out_of_reach_of_the_budget_fails_and_records_nothing(setup, tmp_path):
    run, ds = setup
    U = random_forget_ids(ds.n_train, 0.3, 3)
    with pytest.raises(ConvergenceError, match="did not converge.*tol 1e-09 not reached"):
        forget(run, U, "mini", tol=1e-9, max_passes=2, out=tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()
    with Ledger.open(run) as book:
        assert book.requests()[-1].status == "failed" and book.forgotten_ids().size == 0


def test_workers_do_not_change_the_result(setup):
    run, ds = setup
    U = random_forget_ids(ds.n_train, 0.1, 3)
    one = forget(run, U, "mini", refine=3, workers=1).theta
    three = forget(run, U, "mini", refine=3, workers=3).theta
    assert torch.norm(one - three) <= 1e-10 * torch.norm(one)


def test_reading_r_in_place_changes_neither_the_path_nor_the_passes(setup, monkeypatch):
    from miniunlearn.methods import mini

    run, ds = setup
    U = random_forget_ids(ds.n_train, 0.1, 5)
    in_place = forget(run, U, "mini", refine=4)
    monkeypatch.setattr(mini, "IN_PLACE_MAX_SHARE", 0.0)
    copied = forget(run, U, "mini", refine=4)
    assert in_place.stats["retained_read_in_place"] and not copied.stats["retained_read_in_place"]
    assert in_place.stats["passes_by_kind"] == copied.stats["passes_by_kind"]
    assert in_place.stats["passes_retained"] == copied.stats["passes_retained"] == 4
    assert torch.norm(in_place.theta - copied.theta) <= 1e-10 * torch.norm(copied.theta - run.theta())


def test_minimal_profile_converges_with_passes(tmp_path):
    ds = load_dataset(SPEC)
    run = train(ds, L2, tmp_path / "minimal", profile="minimal")
    assert run.meta["history"]["mini"]["profile"] == "minimal"
    U = random_forget_ids(ds.n_train, 0.1, 0)
    keep = np.setdiff1d(np.arange(ds.n_train), U)
    w_R, reference_error = reference_optimum(ds.X_train[keep], ds.y_train[keep], ds.n_classes, L2)
    w_T = run.theta().numpy()
    near = forget(run, U, "mini", tol=1e-4)
    distance = np.linalg.norm(near.theta.numpy() - w_R)
    assert distance < 1e-3 * np.linalg.norm(w_T - w_R)
    assert near.stats["certificate"] + reference_error >= distance


@pytest.mark.parametrize("profile", ["kron:k=2", "kron:k=0", "exact:dtype=float32,packed=1"])
def test_every_profile_is_certified_against_the_true_retrained_optimum(tmp_path, profile):
    ds = load_dataset(SPEC)
    run = train(ds, L2, tmp_path / "run", profile=profile)
    mini = run.meta["history"]["mini"]
    assert mini["profile_spec"].startswith(profile.split(":")[0]) and mini["profile_bytes"] > 0
    U = random_forget_ids(ds.n_train, 0.1, 5)
    keep = np.setdiff1d(np.arange(ds.n_train), U)
    w_R, reference_error = reference_optimum(ds.X_train[keep], ds.y_train[keep], ds.n_classes, L2)
    w_T = run.theta().numpy()
    start = forget(run, U, "mini", refine=0)
    assert start.stats["passes_retained"] == 0
    # step 0 from any profile moves towards w_R (an approximate one by the influence step -P b / m)
    assert np.linalg.norm(start.theta.numpy() - w_R) < 0.5 * np.linalg.norm(w_T - w_R)
    result = forget(run, U, "mini", tol=1e-5)
    distance = np.linalg.norm(result.theta.numpy() - w_R)
    assert result.stats["converged"] and distance <= result.stats["certificate"] + reference_error
    assert distance <= 1e-5 * np.linalg.norm(result.theta.numpy() - w_T) + reference_error


def test_with_many_classes_the_class_blocks_start_nearer_than_kron_and_certify(tmp_path):
    """15 classes: kron's top block spans 2 of 21 feature directions, the class blocks every one of them
    (and the shift no softmax sees). Step 0 -- the influence step -P b / m -- lands nearer w_R, and every
    request is certified against the true retrained optimum, also with blocks from a class's heaviest rows
    only. R is copied: with 15 classes the rows are read in place up to 10 % forgotten."""
    ds = load_dataset("synthetic:n_samples=3000,n_features=20,n_classes=15,seed=2")
    U = random_forget_ids(ds.n_train, 0.12, 5)
    keep = np.setdiff1d(np.arange(ds.n_train), U)
    w_R, reference_error = reference_optimum(ds.X_train[keep], ds.y_train[keep], ds.n_classes, L2)
    start = {}
    for spec in ("classblock", "classblock:rows=300", "kron:k=2"):
        run = train(ds, L2, tmp_path / spec.replace(":", "-"), profile=spec)
        w_T = run.theta().numpy()
        step0 = forget(run, U, "mini", refine=0).theta.numpy()
        start[spec] = np.linalg.norm(step0 - w_R) / np.linalg.norm(w_T - w_R)
        result = forget(run, U, "mini", tol=1e-5)
        distance = np.linalg.norm(result.theta.numpy() - w_R)
        assert result.stats["converged"] and distance <= result.stats["certificate"] + reference_error, spec
        # 15 classes: a pass costs 15 times a row's copy per row; 12 % forgotten (over 1.5 / 15) are copied out
        assert result.stats["retained_read_in_place"] is False
        assert distance <= 1e-5 * np.linalg.norm(result.theta.numpy() - w_T) + reference_error, spec
    assert start["classblock"] < start["kron:k=2"] < 1
    assert start["classblock"] < start["classblock:rows=300"] < 1


def test_the_chord_step_runs_only_where_its_certificate_can_stop_the_solve(tmp_path):
    """A float64 P with its measured defect certifies the chord step by itself; a float32 P cannot (its
    products are rounded in float32), and there the chord would only be CG's first guess, which cost more
    than it saved: the request goes straight to Newton-CG. Both land certified."""
    ds = load_dataset("synthetic:n_samples=3000,n_features=30,n_classes=5,seed=1")
    runs = {spec: train(ds, 1e-3, tmp_path / spec.replace(":", "-"), profile=spec)
            for spec in ("exact", "exact:dtype=float32")}
    U = random_forget_ids(ds.n_train, 0.015, 3)  # 36 rows: at most 2 % of R, where the chord step may run
    keep = np.setdiff1d(np.arange(ds.n_train), U)
    w_R, reference_error = reference_optimum(ds.X_train[keep], ds.y_train[keep], ds.n_classes, 1e-3)
    for spec, run in runs.items():
        result = forget(run, U, "mini", tol=1e-4, max_iter=300)
        s = result.stats
        assert s["converged"] and np.linalg.norm(result.theta.numpy() - w_R) <= s["certificate"] + reference_error
        assert ("chord_certificate" in s) == ("chord_iterations" in s) == (spec == "exact")
        if spec == "exact":
            assert 1 <= s["chord_iterations"] < 300


def test_step0_stops_at_the_precision_of_a_float32_p(tmp_path):
    """A fixed-point tolerance finer than a float32 P resolves is raised to 16 of its epsilons (the iteration
    would otherwise stall on P's rounding and run on); a float64 P keeps the tolerance asked."""
    ds = load_dataset("synthetic:n_samples=3000,n_features=30,n_classes=5,seed=1")
    U = random_forget_ids(ds.n_train, 0.05, 3)
    keep = np.setdiff1d(np.arange(ds.n_train), U)
    w_R, reference_error = reference_optimum(ds.X_train[keep], ds.y_train[keep], ds.n_classes, 1e-3)
    asked = 1e-9
    for spec, expected in (("exact", asked), ("exact:dtype=float32", 16 * float(np.finfo(np.float32).eps))):
        run = train(ds, 1e-3, tmp_path / spec.replace(":", "-"), profile=spec)
        result = forget(run, U, "mini", tol=1e-4, fixed_point_tol=asked)
        s, theta = result.stats, result.theta.numpy()
        assert s["fixed_point_tol"] == pytest.approx(expected, rel=1e-12)
        assert s["fixed_point_converged"] and s["iterations"] < 30
        assert s["converged"] and np.linalg.norm(theta - w_R) <= s["certificate"] + reference_error


def test_bad_requests_are_refused(setup, tmp_path):
    run, ds = setup
    with pytest.raises(InputError, match=r"option refine must be an integer in \[0, "):
        forget(run, [1, 2], "mini", refine=-1)
    with pytest.raises(InputError, match="has no option"):
        forget(run, [1, 2], "mini", colour="red")
    with pytest.raises(InputError, match="products"):
        forget(run, [1, 2], "mini", products="float16")
    with pytest.raises(InputError, match="give tol .* or refine .*, not both"):
        forget(run, [1, 2], "mini", refine=2, tol=1e-3)
    traj = train(ds, L2, tmp_path / "traj", mode="trajectory",
                 sgd_schedule=SGDSchedule(epochs=1, batch_size=100, lr=0.1, lr_steps=()))
    with pytest.raises((InputError, RunError), match="trajectory"):
        forget(traj, [1, 2], "mini", out=tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()
