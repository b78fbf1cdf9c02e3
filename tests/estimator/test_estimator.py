"""The scikit-learn estimator: scikit-learn's own conformance checks, parity with scikit-learn's
LogisticRegression (C <-> alpha), forgetting in memory against refitting without the rows, copies
that forget, and saved directories."""

import copy
import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_validate
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import check_estimator

from miniunlearn import UnlearningLogisticRegression
from miniunlearn.cli import main
from miniunlearn.runs import open_run
from miniunlearn.service import Ledger

# Checks scikit-learn may skip, and why (check_estimator reports them as "skipped", not failed).
KNOWN_SKIPS = {
    "check_array_api_input": "scikit-learn runs it only with SCIPY_ARRAY_API=1; the estimator computes with "
                             "numpy and torch and does not claim array-API support",
}


@pytest.mark.slow
def test_passes_scikit_learns_estimator_checks():
    results = check_estimator(UnlearningLogisticRegression(), on_fail=None, on_skip=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert failed == []
    assert skipped <= set(KNOWN_SKIPS), skipped - set(KNOWN_SKIPS)
    assert len(results) > 40  # the checks really ran


def _float32(X):
    return np.asarray(X, dtype=np.float32).astype(np.float64)  # the values the estimator trains on


def _breast_cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return _float32(StandardScaler().fit_transform(X)), y


def _three_classes():
    X, y = make_classification(n_samples=600, n_features=8, n_informative=5, n_classes=3, random_state=4)
    return _float32(X), y


def _relative(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _sklearn(C, **kw):
    return LogisticRegression(C=C, solver="newton-cg", tol=1e-12, max_iter=10_000, **kw)


@pytest.mark.parametrize("load", [_breast_cancer, _three_classes], ids=["binary", "three_classes"])
def test_the_default_objective_is_scikit_learns_with_c_equal_to_1_or_2_over_n_alpha(load):
    """Free intercept by default; C = 1/(n alpha) for three or more classes, 2/(n alpha) for two
    (derived in docs/sklearn.md). Checked against scikit-learn's own Newton-CG at tol 1e-12."""
    X, y = load()
    n, alpha = len(y), 1e-3
    ours = UnlearningLogisticRegression(alpha=alpha).fit(X, y)
    C = (2.0 if len(np.unique(y)) == 2 else 1.0) / (n * alpha)
    reference = _sklearn(C).fit(X, y)
    assert _relative(ours.coef_, reference.coef_) <= 1e-6
    assert np.abs(ours.predict_proba(X) - reference.predict_proba(X)).max() <= 1e-7
    # the wrong mapping is measurably different: the test can tell the two apart
    wrong = _sklearn(1.0 / (n * alpha) if len(ours.classes_) == 2 else 2.0 / (n * alpha)).fit(X, y)
    assert _relative(ours.coef_, wrong.coef_) > 1e-3


def test_a_penalised_intercept_is_scikit_learn_on_x_with_a_ones_column():
    X, y = _three_classes()
    n, alpha = len(y), 1e-3
    ours = UnlearningLogisticRegression(alpha=alpha, penalize_intercept=True).fit(X, y)
    reference = _sklearn(1.0 / (n * alpha), fit_intercept=False).fit(np.hstack([X, np.ones((n, 1))]), y)
    assert _relative(np.hstack([ours.coef_, ours.intercept_[:, None]]), reference.coef_) <= 1e-6


def test_forget_is_certified_against_a_scikit_learn_refit_of_the_kept_rows():
    X, y = _breast_cancer()
    n, alpha = len(y), 1e-3
    ours = UnlearningLogisticRegression(alpha=alpha).fit(X, y)
    gone = np.arange(0, n, 10)
    ours.forget(rows=gone)
    kept = np.setdiff1d(np.arange(n), gone)
    refit = _sklearn(2.0 / (len(kept) * alpha)).fit(X[kept], y[kept])
    stats = ours.forget_stats_
    assert stats["n_forget"] == len(gone) and stats["converged"]
    # the certificate bounds the distance over both softmax rows; scikit-learn's binary row is their
    # difference (error at most sqrt(2) times theirs), its intercept too
    ours_row = np.hstack([ours.coef_, ours.intercept_[:, None]])
    theirs = np.hstack([refit.coef_, refit.intercept_[:, None]])
    assert np.linalg.norm(ours_row - theirs) <= np.sqrt(2.0) * stats["certificate"] + 1e-9
    assert stats["certificate"] <= 1e-6 * np.linalg.norm(ours_row)  # and it is small


@pytest.fixture(scope="module")
def customers():
    """A small table with string labels, a user-id column and named features."""
    rng = np.random.default_rng(11)
    n = 400
    frame = pd.DataFrame({"tenure": rng.integers(1, 72, n).astype(float), "spend": rng.normal(60, 20, n),
                          "calls": rng.poisson(2, n).astype(float)})
    score = -0.04 * frame.tenure + 0.03 * (frame.spend - 60) + 0.6 * frame.calls - 0.5 + rng.logistic(size=n)
    labels = np.where(score > 1, "churned", np.where(score > -1, "unsure", "stayed"))
    users = np.array([f"user-{i % 130}" for i in range(n)])
    return frame, labels, users


def _params(model):
    return np.hstack([model.coef_, model.intercept_[:, None]])


def test_string_labels_dataframe_names_and_raw_feature_coefficients(customers):
    frame, labels, users = customers
    model = UnlearningLogisticRegression(alpha=1e-2, standardize=True).fit(frame, labels, keys=users)
    assert list(model.classes_) == ["churned", "stayed", "unsure"]
    assert list(model.feature_names_in_) == ["tenure", "spend", "calls"] and model.n_features_in_ == 3
    scores = frame.to_numpy() @ model.coef_.T + model.intercept_
    assert np.allclose(scores, model.decision_function(frame), rtol=1e-10, atol=1e-10)
    assert np.allclose(model.predict_proba(frame).sum(axis=1), 1.0)


def test_forget_by_key_equals_refitting_without_those_rows_and_is_cumulative(customers):
    frame, labels, users = customers
    model = UnlearningLogisticRegression(alpha=1e-2).fit(frame, labels, keys=users)
    model.forget(keys=["user-3", "user-77"])
    gone = np.isin(users, ["user-3", "user-77"])
    refit = UnlearningLogisticRegression(alpha=1e-2).fit(frame[~gone], labels[~gone])
    stats = model.forget_stats_
    assert stats["n_forget"] == gone.sum() == 7  # user-3: rows 3, 133, 263, 393; user-77: rows 77, 207, 337
    assert np.linalg.norm(_params(model) - _params(refit)) <= stats["certificate"] + 1e-7
    model.forget(keys="user-5")  # a scalar key is a one-element request
    model.forget(rows=[0, 1])
    gone |= np.isin(users, ["user-5"])
    gone[[0, 1]] = True
    refit = UnlearningLogisticRegression(alpha=1e-2).fit(frame[~gone], labels[~gone])
    assert model.forget_stats_["n_forget"] == gone.sum()
    assert np.linalg.norm(_params(model) - _params(refit)) <= model.forget_stats_["certificate"] + 1e-7
    assert list(model.forgotten_keys()) == ["user-3", "user-5", "user-77"]


def test_bad_requests_and_options_are_value_errors(customers):
    frame, labels, users = customers
    with pytest.raises(InvalidParameterError, match="alpha"):
        UnlearningLogisticRegression(alpha=-1).fit(frame, labels)
    with pytest.raises(ValueError, match="alpha"):
        UnlearningLogisticRegression(alpha=0.0).fit(frame, labels)
    with pytest.raises(ValueError, match="compact"):
        UnlearningLogisticRegression(compact="sometimes").fit(frame, labels)
    with pytest.raises(ValueError, match="only one class"):
        UnlearningLogisticRegression().fit(frame, np.full(len(frame), "x"))
    unkeyed = UnlearningLogisticRegression(alpha=1e-2).fit(frame, labels)
    before = unkeyed.coef_.copy()
    with pytest.raises(ValueError, match="fitted without keys"):
        unkeyed.forget(keys=[5])  # never read as the row number 5
    with pytest.raises(ValueError, match="not both or neither"):
        unkeyed.forget()
    with pytest.raises(ValueError, match="tol"):
        unkeyed.forget(rows=[1], tol=2.0)
    with pytest.raises(ValueError, match="max_passes"):
        unkeyed.forget(rows=[1], max_passes=0)
    with pytest.raises(ValueError, match="400 is not a row number"):
        unkeyed.forget(rows=400)
    with pytest.raises(ValueError, match="integers"):
        unkeyed.forget(rows=[1.5])
    assert np.array_equal(unkeyed.coef_, before)  # nothing happened
    unkeyed.forget(rows=7)  # a scalar row number is one row
    with pytest.raises(ValueError, match="already forgotten"):
        unkeyed.forget(rows=[7])
    keyed = UnlearningLogisticRegression(alpha=1e-2).fit(frame, labels, keys=users)
    with pytest.raises(ValueError, match="name no training row: 'nobody'"):
        keyed.forget(keys=["nobody"])


def test_a_tolerance_not_reached_is_a_runtime_error_and_changes_nothing(customers):
    frame, labels, _ = customers
    model = UnlearningLogisticRegression(alpha=1e-2).fit(frame, labels)
    before = model.coef_.copy()
    with pytest.raises(RuntimeError, match="did not reach tol"):
        model.forget(rows=np.arange(0, 400, 3), tol=1e-9, max_passes=1)
    assert np.array_equal(model.coef_, before)
    model.forget(rows=np.arange(0, 400, 3), tol=1e-9)  # the same request with the default budget
    assert model.forget_stats_["n_forget"] == len(range(0, 400, 3))


def test_one_row_forgets_at_the_default_tolerance(customers):
    frame, labels, users = customers
    model = UnlearningLogisticRegression(alpha=1e-2).fit(frame, labels)
    for row in range(0, 40, 4):
        model.forget(rows=[row])  # certified, or at the floor floating point can certify
        assert model.forget_stats_["converged"] or model.forget_stats_["rounding_floor"]


@pytest.mark.parametrize("copier", [lambda m: pickle.loads(pickle.dumps(m)), copy.deepcopy,
                                    "joblib"], ids=["pickle", "deepcopy", "joblib"])
def test_copies_forget_like_the_original(customers, copier, tmp_path):
    frame, labels, users = customers
    model = UnlearningLogisticRegression(alpha=1e-2).fit(frame, labels, keys=users).forget(keys=["user-1"])
    if copier == "joblib":
        joblib.dump(model, tmp_path / "model.joblib")
        copied = joblib.load(tmp_path / "model.joblib")
    else:
        copied = copier(model)
    assert np.array_equal(copied.predict_proba(frame), model.predict_proba(frame))
    copied.forget(keys=["user-2", "user-9"])
    model.forget(keys=["user-2", "user-9"])
    assert copied.forget_stats_["n_forget"] == model.forget_stats_["n_forget"] == 12  # four rows each
    assert np.abs(copied.predict_proba(frame) - model.predict_proba(frame)).max() <= 1e-12


@pytest.mark.slow
def test_cross_validated_estimators_forget():
    """Estimators made in worker processes (n_jobs=2: pickled back) forget, each its own fold's rows."""
    X, y = _three_classes()
    keys = np.arange(len(y)) // 3 + 1000
    result = cross_validate(UnlearningLogisticRegression(alpha=1e-2), X, y, cv=2, n_jobs=2, return_estimator=True,
                            return_indices=True, params={"keys": keys})
    for estimator, rows in zip(result["estimator"], result["indices"]["train"]):
        key = keys[rows][0]
        estimator.forget(keys=key)
        kept = np.setdiff1d(rows, np.flatnonzero(keys == key))
        refit = UnlearningLogisticRegression(alpha=1e-2).fit(X[kept], y[kept])
        assert estimator.forget_stats_["n_forget"] == (keys[rows] == key).sum()
        assert np.linalg.norm(_params(estimator) - _params(refit)) <= estimator.forget_stats_["certificate"] + 1e-7


def test_sparse_input_fits_forgets_and_predicts_like_dense():
    X, y = _three_classes()
    X[np.abs(X) < 0.8] = 0.0
    dense = UnlearningLogisticRegression(alpha=1e-2).fit(X, y).forget(rows=[3, 4])
    sparse = UnlearningLogisticRegression(alpha=1e-2).fit(sp.csr_matrix(X), y).forget(rows=[3, 4])
    assert np.abs(sparse.predict_proba(sp.csr_matrix(X)) - dense.predict_proba(X)).max() <= 1e-12


def test_save_and_load_are_run_directories_the_cli_reads(customers, tmp_path):
    frame, labels, users = customers
    model = UnlearningLogisticRegression(alpha=1e-2).fit(frame, labels, keys=users)
    assert model.run_dir_ is None  # fit and forget write nothing
    model.forget(keys=["user-5"])
    model.save(tmp_path / "saved")
    assert model.run_dir_ == (tmp_path / "saved").resolve() and (tmp_path / "saved" / "run.json").is_file()
    # the forgotten rows were not written: the saved model is the optimum of the kept rows
    kept = users != "user-5"
    refit = UnlearningLogisticRegression(alpha=1e-2).fit(frame[kept], labels[kept])
    assert np.abs(model.predict_proba(frame) - refit.predict_proba(frame)).max() <= 1e-7
    loaded = UnlearningLogisticRegression.load(tmp_path / "saved")
    assert np.array_equal(loaded.predict_proba(frame), model.predict_proba(frame))
    assert loaded.get_params() == model.get_params()
    # requests of a saved estimator go to the directory's ledger, which the CLI reads
    loaded.forget(keys=["user-6"])
    main(["ledger", str(tmp_path / "saved"), "--forgotten-keys", str(tmp_path / "keys.txt")])
    assert (tmp_path / "keys.txt").read_text() == "user-6\n"
    with Ledger.open(open_run(tmp_path / "saved")) as book:
        (request,) = book.requests()
        assert request.requested_by == "keys"
    assert np.array_equal(UnlearningLogisticRegression.load(tmp_path / "saved").coef_, loaded.coef_)
    copied = pickle.loads(pickle.dumps(loaded))  # bound to the same directory
    copied.forget(keys="user-7")
    assert UnlearningLogisticRegression.load(tmp_path / "saved").forget_stats_ is None
    assert np.array_equal(UnlearningLogisticRegression.load(tmp_path / "saved").coef_, copied.coef_)
    with pytest.raises(ValueError, match="not empty"):
        model.save(tmp_path / "saved-again").save(tmp_path / "saved")


def test_a_saved_estimator_without_keys_refuses_keys(customers, tmp_path):
    frame, labels, _ = customers
    model = UnlearningLogisticRegression(alpha=1e-2).fit(frame, labels).save(tmp_path / "plain")
    with pytest.raises(ValueError, match="fitted without keys"):
        model.forget(keys=[12])
    model.forget(rows=[12])
    assert model.forget_stats_["n_forget"] == 1


def test_compaction_in_memory_drops_the_rows_and_is_the_exact_optimum():
    X, y = load_breast_cancer(return_X_y=True)
    keys = np.array([f"u{i // 2}" for i in range(len(y))])
    model = UnlearningLogisticRegression(alpha=1e-2, standardize=False, compact="auto").fit(
        _float32(StandardScaler().fit_transform(X)), y, keys=keys)
    model.forget(keys=[f"u{i}" for i in range(10)])  # 20 of 569 rows: below the threshold
    assert model.forget_stats_["compaction"] is None
    model.forget(keys=[f"u{i}" for i in range(10, 40)])  # 80 rows in all: compacted
    assert model.forget_stats_["compaction"]["generation"] == 1
    assert model._memory.n_rows == len(y) - 80  # the forgotten rows are gone from memory
    kept = ~np.isin(keys, [f"u{i}" for i in range(40)])
    Xs = _float32(StandardScaler().fit_transform(X))
    reference = _sklearn(2.0 / (kept.sum() * 1e-2)).fit(Xs[kept], y[kept])
    assert np.abs(model.predict_proba(Xs) - reference.predict_proba(Xs)).max() <= 1e-7


def test_standardize_recomputes_the_statistics_on_the_kept_rows(customers):
    frame, labels, users = customers
    model = UnlearningLogisticRegression(alpha=1e-2, standardize=True).fit(frame, labels, keys=users)
    model.forget(keys=["user-3", "user-4"])
    kept = ~np.isin(users, ["user-3", "user-4"])
    refit = UnlearningLogisticRegression(alpha=1e-2, standardize=True).fit(frame[kept], labels[kept])
    assert np.abs(model.predict_proba(frame) - refit.predict_proba(frame)).max() <= 1e-7


def test_a_deletion_past_the_dense_route_reports_the_passes_it_made():
    """Forgetting 40 % of the rows goes to the general method (the dense route is for small shares): its passes
    over the kept rows are the ones reported, split by kind as the solver counted them."""
    X, y = make_classification(n_samples=600, n_features=8, n_informative=5, n_classes=3, random_state=7)
    model = UnlearningLogisticRegression(alpha=1e-2).fit(X, y)
    model.forget(rows=np.arange(0, 600, 5).tolist() + np.arange(1, 600, 5).tolist())
    stats = model.forget_stats_
    assert "route" not in stats and stats["converged"]
    assert stats["passes_retained"] >= 1
    assert stats["passes_retained"] == pytest.approx(sum(stats["passes_by_kind"].values()))
