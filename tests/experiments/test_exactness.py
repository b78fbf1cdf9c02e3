"""The exactness test (fixed-rows LiRA): the plan, and the test end to end on an overfit model."""

import numpy as np
import pytest

from miniunlearn.core.errors import InputError
from miniunlearn.experiments.exactness import exactness_test, make_fixed_rows_plan, run_fixed_rows_shadows
from miniunlearn.experiments.shadows import ShadowMethod
from miniunlearn.service import forget


# -------------------------------------------------------------------------------------- the plan
def test_plan_balances_membership_and_keeps_the_forget_ratio():
    forget_ids = np.arange(3, 50, 2)  # 24 rows
    plan = make_fixed_rows_plan(60, 15, forget_ids, n_shadows=6, seed=4)
    assert plan.n_slots == 15 and plan.n_shadows == 6
    assert set(plan.slots) <= set(forget_ids) and len(set(plan.slots)) == 15
    assert len(set(plan.substitutes)) == 15 and plan.substitutes.max() < 15
    member = plan.member
    assert (member.sum(axis=0) == 3).all()                      # every target in exactly N/2 shadows
    assert (np.abs(plan.keep.sum(axis=1) - 7.5) <= 0.5).all()    # every shadow holds about half the u's
    assert list(plan.labels) == [1] * 15 + [0] * 15

    class Data:
        X_train, y_train = np.arange(60.0)[:, None], np.arange(60) % 3
        X_test, y_test = -np.arange(1.0, 16.0)[:, None], np.arange(15) % 3

    X, y = plan.shadow_training_set(Data, 2)
    assert X.shape == (60, 1)  # same n rows, same positions: the shadow forgets r of n, like the run
    swapped = plan.slots[~plan.keep[2]]
    untouched = np.setdiff1d(np.arange(60), swapped)
    assert np.array_equal(X[untouched, 0], Data.X_train[untouched, 0])
    assert np.array_equal(X[swapped, 0], Data.X_test[plan.substitutes[~plan.keep[2]], 0])
    X_t, y_t = plan.target_rows(Data)
    assert np.array_equal(X_t[:15, 0], plan.slots) and np.array_equal(y_t[15:], Data.y_test[plan.substitutes])


@pytest.mark.parametrize("kwargs, message", [
    ({"n_shadows": 3}, "even number"), ({"n_shadows": 0}, "even number"), ({"n_test": 0}, "needs test rows"),
    ({"forget_ids": []}, "non-empty"), ({"max_targets": 0}, "max_targets"),
])
def test_plan_refuses_bad_settings(kwargs, message):
    args = {"n_train": 20, "n_test": 5, "forget_ids": [1, 2, 3], "n_shadows": 4, **kwargs}
    with pytest.raises(InputError, match=message):
        make_fixed_rows_plan(**args)


# ------------------------------------------------------------------------------------ end to end
def _contains_half(ci):
    return ci[0] <= 0.5 <= ci[1]


def test_exactness_test_sees_training_and_half_unlearning_but_not_retraining(overfit, partial_method, tmp_path):
    run, ids = overfit["run"], overfit["ids"]
    halfway = forget(run, ids, method=partial_method, alpha=0.5).theta
    targets = {"halfway": halfway, "retrained": overfit["theta_R"], "original": overfit["theta_T"]}
    methods = [ShadowMethod("halfway", partial_method, {"alpha": 0.5}), ShadowMethod("lira", None)]
    pairs = {"halfway": ["halfway", "retrained", "original"], "lira": ["original", "retrained"]}
    report = exactness_test(run, ids, targets, methods, pairs=pairs, n_shadows=8, workers=1, seed=1, out_dir=tmp_path)
    assert report["protocol"]["n_targets"] == 2 * len(ids) and report["protocol"]["n_shadows"] == 8
    lira = report["attacks"]["lira"]["targets"]
    half = report["attacks"]["halfway"]["targets"]
    # classic LiRA: the trained-on rows of the original model are found far better than chance ...
    assert lira["original"]["online"]["auc_ci"][0] > 0.7
    # ... the retrained model's are not (95 % DeLong interval contains 1/2)
    assert _contains_half(lira["retrained"]["online"]["auc_ci"]) and _contains_half(lira["retrained"]["offline"]["auc_ci"])
    # the method's own fixed-rows shadows expose half-done unlearning, and not retraining
    assert half["halfway"]["online"]["auc_ci"][0] > 0.6
    assert _contains_half(half["retrained"]["online"]["auc_ci"])
    for label in ("halfway", "lira"):
        png = tmp_path / f"exactness_{label}.png"
        assert report["attacks"][label]["roc_png"] == str(png)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(tmp_path / "exactness_scores.npz", allow_pickle=False) as npz:
        assert npz["shadow_phi__halfway"].shape == (8, 2 * len(ids))
        assert np.array_equal(npz["labels"], np.r_[np.ones(len(ids)), np.zeros(len(ids))])


def test_exact_retraining_makes_every_fixed_rows_shadow_the_same_model(overfit):
    run, ids = overfit["run"], overfit["ids"]
    plan = make_fixed_rows_plan(run.n_train, overfit["dataset"].n_test, ids, n_shadows=2, max_targets=20, seed=2)
    shadows = run_fixed_rows_shadows(run, plan, [ShadowMethod("retrain", "retrain")], workers=1, threads=1)
    assert shadows.phi["retrain"].shape == (2, 40)
    # the two shadows differ (different rows in the slots) before unlearning, not after exact retraining:
    # the test is blind to an exact method by construction
    assert not np.allclose(shadows.phi["trained"][0], shadows.phi["trained"][1])
    assert np.allclose(shadows.phi["retrain"][0], shadows.phi["retrain"][1], atol=1e-6)


def test_unknown_method_fails_before_any_training(overfit):
    run, ids = overfit["run"], overfit["ids"]
    plan = make_fixed_rows_plan(run.n_train, overfit["dataset"].n_test, ids, n_shadows=2)
    with pytest.raises(InputError, match="unknown unlearning method"):
        run_fixed_rows_shadows(run, plan, [ShadowMethod("x", "no-such-method")])
