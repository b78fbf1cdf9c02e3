"""Pipelines that forget: every fitted attribute of every step against an independent
``clone(pipe).fit(X_kept, y_kept)``, predict_proba within the classifier's certificate."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.base import BaseEstimator, clone
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
)

from miniunlearn import UnlearningLogisticRegression, UnlearningPipeline, forget_pipeline


@pytest.fixture(scope="module")
def table():
    """Customers with numeric and categorical columns, missing values, and a city only user 150 has."""
    rng = np.random.default_rng(5)
    n = 450
    frame = pd.DataFrame({"age": rng.normal(40, 10, n), "spend": rng.gamma(2.0, 30.0, n),
                          "visits": rng.poisson(3, n).astype(float),
                          "city": rng.choice(["Oslo", "Bergen", "Tromso"], n), "plan": rng.choice(["basic", "pro"], n)})
    users = np.arange(n) // 3 + 100
    frame.loc[users == 150, "city"] = "Smalltown"
    frame.loc[rng.random(n) < 0.05, "spend"] = np.nan
    score = 0.04 * (frame.age - 40) + 0.5 * (frame.city == "Oslo") - 0.3 * (frame.plan == "pro")
    labels = np.where(score + rng.logistic(size=n) > 0.2, "stays", np.where(score > -0.5, "leaves", "unsure"))
    return frame, labels, users


def assert_same_fitted(ours, theirs, path="pipe", tol=0.0, seen=None) -> int:
    """Every public fitted attribute (trailing underscore) equal, recursing into pipelines' steps and
    fitted sub-estimators; returns how many arrays and numbers were compared."""
    seen = [0] if seen is None else seen
    if isinstance(ours, Pipeline):
        assert len(ours.steps) == len(theirs.steps), path
        for (name, a), (_, b) in zip(ours.steps, theirs.steps):
            assert_same_fitted(a, b, f"{path}.{name}", tol, seen)
    if isinstance(ours, BaseEstimator):
        assert type(ours) is type(theirs), path
        names = sorted(k for k in vars(theirs) if k.endswith("_") and not k.startswith("_"))
        assert names == sorted(k for k in vars(ours) if k.endswith("_") and not k.startswith("_")), path
        for name in names:
            if name in ("forget_stats_", "fit_stats_", "n_iter_", "X_fit_", "y_fit_"):
                continue  # solver reports and the raw rows (compared by the caller)
            limit = tol if name in ("coef_", "intercept_") else 0.0
            assert_same_fitted(getattr(ours, name), getattr(theirs, name), f"{path}.{name}", limit, seen)
    elif isinstance(ours, (list, tuple)):
        assert len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same_fitted(a, b, f"{path}[{i}]", tol, seen)
    elif isinstance(ours, dict):
        assert ours.keys() == theirs.keys(), path
        for key in ours:
            assert_same_fitted(ours[key], theirs[key], f"{path}[{key!r}]", tol, seen)
    elif isinstance(ours, np.ndarray) and ours.dtype.kind in "fc":
        seen[0] += 1
        assert ours.shape == theirs.shape, path
        assert np.allclose(ours, theirs, rtol=0, atol=tol, equal_nan=True), (path, np.nanmax(np.abs(ours - theirs)))
    elif isinstance(ours, np.ndarray):
        seen[0] += 1
        assert np.array_equal(ours, theirs), path
    elif isinstance(ours, (float, np.floating)):
        seen[0] += 1
        assert ours == theirs or (np.isnan(ours) and np.isnan(theirs)) or abs(ours - theirs) <= tol, path
    elif callable(ours) or isinstance(ours, slice):
        pass
    else:
        seen[0] += 1
        assert ours == theirs, (path, ours, theirs)
    return seen[0]


def _prep(sparse=False):
    numbers = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    return ColumnTransformer([("num", numbers, ["age", "spend"]), ("visits", MinMaxScaler(), ["visits"]),
                              ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=sparse), ["city", "plan"])],
                             sparse_threshold=1.0 if sparse else 0.0)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_forget_through_a_column_transformer_equals_refitting_on_the_kept_rows(table, sparse):
    frame, labels, users = table
    pipe = UnlearningPipeline([("prep", _prep(sparse)), ("clf", UnlearningLogisticRegression(alpha=1e-2))])
    pipe.fit(frame, labels, keys=users)
    if sparse:
        assert sp.issparse(pipe[:-1].transform(frame))
    assert "cat__city_Smalltown" in pipe[:-1].get_feature_names_out()
    pipe.forget(keys=[150, 151])
    kept = ~np.isin(users, [150, 151])
    reference = clone(pipe).fit(frame[kept], labels[kept], keys=users[kept])
    assert "cat__city_Smalltown" not in pipe[:-1].get_feature_names_out()  # the category left with its column
    stats = pipe[-1].forget_stats_
    assert stats["n_forget"] == 6 and stats["converged"]
    # transformers exactly, classifier within its certificate (+ the reference's own solve, ||grad|| <= 1e-9)
    bound = stats["certificate"] + 1e-7
    assert assert_same_fitted(pipe[:-1], reference[:-1]) >= 20  # means, scales, categories, medians, ...
    assert assert_same_fitted(pipe[-1], reference[-1], tol=bound) >= 4  # coef_, intercept_, classes_, ...
    assert np.abs(pipe.predict_proba(frame) - reference.predict_proba(frame)).max() <= bound
    # and again, cumulative, by row number of the kept rows
    pipe.forget(rows=[0, 1, 2])
    again = np.flatnonzero(kept)[3:]
    reference = clone(pipe).fit(frame.iloc[again], labels[again], keys=users[again])
    assert_same_fitted(pipe[:-1], reference[:-1])
    assert np.abs(pipe.predict_proba(frame) - reference.predict_proba(frame)).max() <= 1e-6


def test_scalers_imputers_and_encoders_in_a_plain_pipeline(table):
    frame, labels, users = table
    numeric = frame[["age", "spend", "visits"]].to_numpy()
    codes = OrdinalEncoder().fit_transform(frame[["city"]])
    X = np.hstack([numeric, codes])
    pipe = Pipeline([("impute", SimpleImputer()), ("robust", RobustScaler()), ("maxabs", MaxAbsScaler()),
                     ("log", FunctionTransformer(np.arcsinh)), ("ordinal", "passthrough"),
                     ("clf", UnlearningLogisticRegression(alpha=1e-2, standardize=True))])
    pipe.fit(X, labels, clf__keys=users)
    forget_pipeline(pipe, keys=np.arange(100, 130), X=X, y=labels)
    kept = ~np.isin(users, np.arange(100, 130))
    reference = clone(pipe).fit(X[kept], labels[kept], clf__keys=users[kept])
    bound = pipe[-1].forget_stats_["certificate"] * 10 + 1e-6  # (standardize: coef_ is on raw features)
    assert assert_same_fitted(pipe[:-1], reference[:-1]) >= 10
    assert np.abs(pipe.predict_proba(X) - reference.predict_proba(X)).max() <= bound


def test_a_step_that_cannot_forget_is_refused_by_name_and_nothing_changes(table):
    frame, labels, users = table
    X = frame[["age", "visits"]].to_numpy()
    pipe = UnlearningPipeline([("scale", StandardScaler()), ("pca", PCA(n_components=2)),
                               ("clf", UnlearningLogisticRegression(alpha=1e-2))]).fit(X, labels, keys=users)
    before = (pipe.named_steps["scale"].mean_.copy(), pipe.predict_proba(X))
    with pytest.raises(ValueError, match="'pca' .PCA."):
        pipe.forget(keys=[150])
    assert np.array_equal(pipe.named_steps["scale"].mean_, before[0])
    assert np.array_equal(pipe.predict_proba(X), before[1])
    with pytest.raises(ValueError, match="plain Pipeline"):
        forget_pipeline(Pipeline(pipe.steps), keys=[150])
    with pytest.raises(ValueError, match="fitted without keys"):
        UnlearningPipeline([("clf", UnlearningLogisticRegression(alpha=1e-2))]).fit(X, labels).forget(keys=[1])
