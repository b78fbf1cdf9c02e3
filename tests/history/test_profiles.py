"""History profiles: their numbers against dense linear algebra written here, their bytes against the
tensors they store, and the budget choice."""

import numpy as np
import pytest
import torch

from miniunlearn.core.errors import InputError
from miniunlearn.data import load_dataset
from miniunlearn.history import MiniHistory, build_mini_history, resolve_profile
from miniunlearn.history.profiles import available_profiles, choose_by_budget, make_profile
from miniunlearn.models import LogisticRegression, Objective, Rows
from miniunlearn.training import TrainConfig, fit

L2 = 1e-2


@pytest.fixture(scope="module")
def optimum():
    ds = load_dataset("synthetic:n_samples=900,n_features=12,n_classes=4,seed=3")
    model = LogisticRegression(ds.n_features, ds.n_classes)
    objective = Objective(model, Rows(ds.X_train, ds.y_train, chunk_rows=256), L2)
    theta, _, _ = fit(model, objective.rows, TrainConfig(L2))
    X = np.hstack([ds.X_train, np.ones((ds.n_train, 1))])
    Z = X @ theta.numpy().reshape(ds.n_classes, -1).T
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    return ds, model, objective, theta, X, P


def dense_hessian(X, P):
    n, C = P.shape
    d1 = X.shape[1]
    H = np.zeros((C * d1, C * d1))
    for c in range(C):
        for k in range(C):
            H[c * d1:(c + 1) * d1, k * d1:(k + 1) * d1] = (X * (P[:, c] * ((c == k) - P[:, k]))[:, None]).T @ X
    return H / n


def as_matrix(apply, p):
    return np.stack([apply(torch.from_numpy(e.copy())).numpy() for e in np.eye(p)], axis=1)


def test_exact_packed_and_float32_store_the_same_inverse(optimum, tmp_path):
    ds, model, objective, theta, X, P = optimum
    p = model.n_params
    inverse = np.linalg.inv(dense_hessian(X, P) + L2 * np.eye(p))
    for spec, rtol in (("exact", 1e-10), ("exact:packed=1", 1e-10), ("exact:dtype=float32", 1e-6),
                       ("exact:dtype=float32,packed=1", 1e-6)):
        history = build_mini_history(objective, theta, spec, "fp")
        profile = make_profile(spec)
        assert history.profile_bytes == profile.stored_bytes(model)
        history.save(tmp_path / "h.safetensors")
        loaded = MiniHistory.load(tmp_path / "h.safetensors")
        assert loaded.options == history.options
        M = as_matrix(loaded.preconditioner(objective.penalty), p)
        assert np.linalg.norm(M - inverse) <= rtol * np.linalg.norm(inverse), spec
    defect = 8  # a small float64 build also stores its measured defect ||A P - I|| (one float64)
    assert make_profile("exact:packed=1").stored_bytes(model) == 8 * p * (p + 1) // 2 + defect
    assert make_profile("exact:dtype=float32,packed=1").stored_bytes(model) == 4 * p * (p + 1) // 2 + defect
    assert make_profile("exact:packed=1,defect=0").stored_bytes(model) == 8 * p * (p + 1) // 2


def test_kron_without_a_top_block_is_the_eigenbasis_kfac_written_here(optimum):
    ds, model, objective, theta, X, P = optimum
    n, C = P.shape
    d1 = X.shape[1]
    A_trace = (P * (1 - P)).sum(axis=1)
    _, U = np.linalg.eigh((X * A_trace[:, None]).T @ X)
    U = U[:, ::-1]
    Z = X @ U
    blocks = np.einsum("nj,nck->jck", Z ** 2, np.einsum("nc,ck->nck", P, np.eye(C)) - np.einsum("nc,nk->nck", P, P))
    blocks = blocks / n + L2 * np.eye(C)
    inv_blocks = np.linalg.inv(blocks)
    v = np.random.default_rng(0).normal(size=C * d1)
    W = v.reshape(C, d1) @ U
    expected = (np.einsum("jck,kj->cj", inv_blocks, W) @ U.T).reshape(-1)
    history = build_mini_history(objective, theta, "kron:k=0,dtype=float64,max_rows=none", "fp")
    got = history.preconditioner(objective.penalty)(torch.from_numpy(v)).numpy()
    # eigenvectors are unique up to sign, which cancels in U B U^T; float32 products in the build
    assert np.linalg.norm(got - expected) <= 1e-4 * np.linalg.norm(expected)


def test_kron_keeping_every_direction_is_the_exact_inverse(optimum):
    ds, model, objective, theta, X, P = optimum
    p, d1 = model.n_params, X.shape[1]
    inverse = np.linalg.inv(dense_hessian(X, P) + L2 * np.eye(p))
    history = build_mini_history(objective, theta, f"kron:k={d1},dtype=float64", "fp")
    M = as_matrix(history.preconditioner(objective.penalty), p)
    assert np.linalg.norm(M - inverse) <= 1e-4 * np.linalg.norm(inverse)
    # float16 storage: a symmetric positive definite approximation, within float16 rounding
    half = build_mini_history(objective, theta, f"kron:k={d1}", "fp")
    assert half.profile_bytes == make_profile(f"kron:k={d1}").stored_bytes(model)
    M16 = as_matrix(half.preconditioner(objective.penalty), p)
    assert np.linalg.norm(M16 - inverse) <= 2e-2 * np.linalg.norm(inverse)


def class_block_inverse(X, P, weights_from=None):
    """Q blockdiag((H_cc + lambda I)^-1) Q + F / lambda, H_cc the diagonal blocks of the dense Hessian
    (when ``weights_from`` is given: from the rows ``weights_from[c]`` of class c, scaled to the trace of
    the block of every row)."""
    n, C = P.shape
    d1 = X.shape[1]
    H = dense_hessian(X, P)
    inverse = np.zeros((C * d1, C * d1))
    for c in range(C):
        s = slice(c * d1, (c + 1) * d1)
        block = H[s, s]
        if weights_from is not None:  # those rows' Gram, scaled to the trace of every row's
            rows = weights_from[c]
            weight = P[:, c] * (1 - P[:, c])
            part = (X[rows] * weight[rows, None]).T @ X[rows]
            block = part * (np.trace(block) * n / np.trace(part)) / n
        inverse[s, s] = np.linalg.inv(block + L2 * np.eye(d1))
    F = np.kron(np.ones((C, C)) / C, np.eye(d1))  # the class mean, broadcast to every class
    Q = np.eye(C * d1) - F
    return Q @ inverse @ Q + F / L2, Q @ inverse @ Q


def test_classblock_is_each_class_blocks_inverse_and_exact_on_the_shift_no_softmax_sees(optimum, tmp_path):
    ds, model, objective, theta, X, P = optimum
    p, (n, C), d1 = model.n_params, P.shape, X.shape[1]
    expected, blocks_part = class_block_inverse(X, P)
    history = build_mini_history(objective, theta, "classblock:dtype=float64,rows=none", "fp")
    assert history.profile_bytes == make_profile("classblock:dtype=float64").stored_bytes(model)
    history.save(tmp_path / "h.safetensors")
    M = as_matrix(MiniHistory.load(tmp_path / "h.safetensors").preconditioner(objective.penalty), p)
    # float32 products in the build
    assert np.linalg.norm(M - expected) <= 1e-5 * np.linalg.norm(expected)
    # one vector added to every class: the true Hessian is lambda I there, and P inverts it exactly
    u = np.random.default_rng(1).normal(size=d1)
    shift = np.tile(u, C)
    H = dense_hessian(X, P) + L2 * np.eye(p)
    assert np.allclose(H @ shift, L2 * shift)
    assert np.allclose(M @ (H @ shift), shift)
    # the heaviest rows of each class build its block
    heaviest = [np.argsort(-(P[:, c] * (1 - P[:, c])), kind="stable")[:100] for c in range(C)]
    partial = build_mini_history(objective, theta, "classblock:dtype=float64,rows=100", "fp")
    M100 = as_matrix(partial.preconditioner(objective.penalty), p)
    expected100, _ = class_block_inverse(X, P, heaviest)
    assert np.linalg.norm(M100 - expected100) <= 1e-5 * np.linalg.norm(expected100)
    assert np.linalg.norm(M100 - expected) > 1e-3 * np.linalg.norm(expected)
    # float32 and float16 storage (the default is float32): within their rounding, measured against the blocks'
    # part alone (F / lambda, stored exactly, would dominate the norm)
    for dtype, rtol in (("float32", 1e-5), ("float16", 2e-3)):
        stored = build_mini_history(objective, theta, f"classblock:dtype={dtype},rows=none", "fp")
        assert stored.profile_bytes == make_profile(f"classblock:dtype={dtype}").stored_bytes(model)
        stored.save(tmp_path / f"{dtype}.safetensors")
        loaded = MiniHistory.load(tmp_path / f"{dtype}.safetensors")
        M_stored = as_matrix(loaded.preconditioner(objective.penalty), p)
        assert np.linalg.norm(M_stored - expected) <= rtol * np.linalg.norm(blocks_part), dtype


def test_the_budget_picks_the_most_accurate_profile_that_fits():
    model = LogisticRegression(784, 10)
    p = model.n_params
    big = 8 << 30
    # from p = 4096 on the build is float32-accurate: P is kept in float32, packed, even where float64 would fit
    assert choose_by_budget(model, 8 * p * p, big).options == {"dtype": "float32", "packed": True,
                                                                 "fast_build": None, "defect": None}
    assert resolve_profile("auto", model).spec() == "exact:dtype=float32,packed=1,fast_build=None,defect=None"
    below = LogisticRegression(300, 10)  # p = 3010: float64 dense while it fits, then packed, then float32
    q = below.n_params
    dense = 8 * q * q + 8  # and its measured defect
    assert choose_by_budget(below, dense, big).spec() == "exact:dtype=float64,packed=0,fast_build=None,defect=None"
    assert resolve_profile("auto", below).spec() == "exact:dtype=float64,packed=0,fast_build=None,defect=None"
    assert choose_by_budget(below, dense - 1, big).options["packed"] is True
    half = choose_by_budget(below, 2 * q * (q + 1) + 8, big)
    assert half.options == {"dtype": "float32", "packed": True, "fast_build": None, "defect": None}
    assert choose_by_budget(model, 2 * p * (p + 1) - 1, big).name == "kron"
    small = choose_by_budget(model, 5_000_000, big)
    assert small.name == "kron" and small.stored_bytes(model) <= 5_000_000
    assert make_profile(f"kron:k={small.options['k'] + 1}").stored_bytes(model) > 5_000_000
    assert choose_by_budget(model, 10_000_000, big).options["k"] == 280  # the top block's build cap, C k <= 2800
    # exact does not fit the build memory: the most accurate of the others
    assert choose_by_budget(model, 8 * p * p, 100_000_000).name == "kron"
    tiny = choose_by_budget(model, 8 * (5 * p + 5 + p), big)
    assert tiny.name == "minimal" and tiny.options["rank"] == 5
    with pytest.raises(InputError, match="no history profile fits"):
        choose_by_budget(model, 1000, big)
    assert available_profiles()[:4] == ["exact", "classblock", "kron", "minimal"]
    # many classes: kron's exact top block would span 28 of 1,001 feature directions; the class blocks fit
    many = LogisticRegression(1000, 100)
    blocks = choose_by_budget(many, 1 << 30, big)
    assert blocks.spec() == "classblock:dtype=float32,rows=16384" and blocks.stored_bytes(many) <= 1 << 30
    assert choose_by_budget(many, 150_000_000, big).options["dtype"] == "float16"
    assert choose_by_budget(many, 90_000_000, big).name == "kron"
    # few classes, however many features: dropping the class coupling understates the curvature up to C / (C - 1)
    # (the blocks would fit these budgets, exact P would not, and kron's top block spans under a quarter)
    assert choose_by_budget(LogisticRegression(10_000, 2), 600_000_000, big).name == "kron"
    assert choose_by_budget(LogisticRegression(3000, 10), 1 << 30, big).name == "kron"
    assert choose_by_budget(LogisticRegression(3000, 15), 1 << 30, big).name == "classblock"


def test_resolve_profile_refuses_bad_specs_and_budgets():
    model = LogisticRegression(20, 3)
    with pytest.raises(InputError, match="unknown history profile 'dense'"):
        resolve_profile("dense", model)
    with pytest.raises(InputError, match="option dtype must be"):
        resolve_profile("exact:dtype=float16", model)
    with pytest.raises(InputError, match="more than the history budget"):
        resolve_profile("exact", model, history_budget=1000)
    assert resolve_profile("auto", model).name == "exact"
    assert resolve_profile("auto", LogisticRegression(1000, 100)).name == "classblock"  # 80 GB dense: not built
