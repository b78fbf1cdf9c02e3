"""U-LiRA: the statistics by hand, the shadow plan, and the attack end to end on an overfit model."""

import math
from numbers import Real

import numpy as np
import pytest

from miniunlearn.core.errors import InputError
from miniunlearn.core.params import Interval, Param
from miniunlearn.evaluation.lira import GaussianFit, fit_gaussians, lira_scores, roc_metrics
from miniunlearn.experiments.shadows import ShadowMethod, make_plan, run_shadows, ulira_audit
from miniunlearn.methods import UnlearningMethod, register, unregister
from miniunlearn.service import forget
from miniunlearn.training import TrainConfig, fit


# ------------------------------------------------------------------------------------ by hand
def _log_normal_pdf(x, mu, var):
    return -0.5 * math.log(2 * math.pi * var) - (x - mu) ** 2 / (2 * var)


def _log_normal_cdf(z):
    return math.log(0.5 * (1 + math.erf(z / math.sqrt(2))))


PHI = np.array([[2.0, -1.0],
                [4.0, 0.0],
                [1.0, 1.0],
                [3.0, 3.0]])
MEMBER = np.array([[True, False],
                   [True, True],
                   [False, False],
                   [False, True]])


def test_gaussian_fits_and_likelihood_ratio_match_a_hand_computation():
    # example 0: in {2, 4} -> mu 3, var 1; out {1, 3} -> mu 2, var 1
    # example 1: in {0, 3} -> mu 1.5, var 2.25; out {-1, 1} -> mu 0, var 1
    fit = fit_gaussians(PHI, MEMBER)
    assert np.allclose(fit.mu_in, [3.0, 1.5]) and np.allclose(fit.var_in, [1.0, 2.25])
    assert np.allclose(fit.mu_out, [2.0, 0.0]) and np.allclose(fit.var_out, [1.0, 1.0])
    target = np.array([3.5, 0.5])
    online = lira_scores(target, fit, online=True)
    by_hand = [_log_normal_pdf(3.5, 3.0, 1.0) - _log_normal_pdf(3.5, 2.0, 1.0),      # = 1.0
               _log_normal_pdf(0.5, 1.5, 2.25) - _log_normal_pdf(0.5, 0.0, 1.0)]     # = -0.5027
    assert online == pytest.approx(by_hand, rel=1e-12)
    assert online[0] == pytest.approx(1.0)
    assert online[1] == pytest.approx(-0.5 * math.log(2.25) - 1 / 4.5 + 0.125)
    offline = lira_scores(target, fit, online=False)
    assert offline == pytest.approx([_log_normal_cdf(1.5), _log_normal_cdf(0.5)], rel=1e-12)


def test_global_variance_pools_the_per_example_variances():
    fit = fit_gaussians(PHI, MEMBER, variance="global")
    assert np.allclose(fit.var_in, 1.625) and np.allclose(fit.var_out, 1.0)
    assert np.allclose(fit.mu_in, [3.0, 1.5])


def test_identical_in_and_out_shadows_give_a_blind_attack():
    """What an exact method gives in converged mode: every shadow is the same model."""
    phi = np.full((4, 3), 0.7)
    member = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 1, 1]], dtype=bool)
    fit = fit_gaussians(phi, member)
    assert np.all(lira_scores(np.array([0.7, 5.0, -3.0]), fit) == 0.0)


def test_fit_refuses_bad_input():
    with pytest.raises(InputError, match="two shadows with it and two without"):
        fit_gaussians(PHI, np.ones_like(MEMBER))
    with pytest.raises(InputError, match="two shadows with it and two without"):
        fit_gaussians(PHI[:2], np.array([[True, False], [False, True]]))
    with pytest.raises(InputError, match="must be equal"):
        fit_gaussians(PHI, MEMBER[:, :1])
    with pytest.raises(InputError, match="variance must be"):
        fit_gaussians(PHI, MEMBER, variance="pooled")
    with pytest.raises(InputError, match="do not match"):
        lira_scores(np.zeros(3), GaussianFit(*[np.ones(2)] * 4))


def test_tpr_at_low_fpr_matches_a_threshold_scan(rng):
    pos, neg = rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.0, 400)
    labels, scores = np.r_[np.ones(300), np.zeros(400)], np.r_[pos, neg]
    got = roc_metrics(labels, scores, fpr_levels=(0.01, 0.1))
    for level in (0.01, 0.1):
        best = max((np.mean(pos >= t) for t in np.sort(scores) if np.mean(neg >= t) <= level), default=0.0)
        assert got["tpr_at_fpr"][f"{level:g}"] == pytest.approx(best)
        lo, hi = got["tpr_at_fpr_ci"][f"{level:g}"]
        assert lo <= best <= hi
    assert got["fpr_resolution"] == pytest.approx(1 / 400)


# -------------------------------------------------------------------------------------- the plan
def test_plan_balances_membership_and_keeps_the_forget_ratio():
    forget_ids = np.arange(3, 50, 2)  # 24 rows
    plan = make_plan(60, 15, forget_ids, n_shadows=6, seed=4)
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
        make_plan(**args)


# ------------------------------------------------------------------------------------ end to end
@pytest.fixture
def halfway_method():
    """A deliberately bad unlearning method (test only): w_T + 1/2 (w_R - w_T), half the deletion left."""
    @register
    class Halfway(UnlearningMethod):
        name = "test-halfway"
        summary = "test only"
        parameters = {"alpha": Param(0.5, Interval(Real, 0, 1))}

        def unlearn(self, ctx):
            theta_R, _, _ = fit(ctx.model, ctx.retained_rows, TrainConfig.from_dict(ctx.run.config))
            theta_T = ctx.original_theta()
            return theta_T + self.alpha * (theta_R - theta_T)

    yield "test-halfway"
    unregister("test-halfway")


def _contains_half(ci):
    return ci[0] <= 0.5 <= ci[1]


def test_ulira_sees_training_and_half_unlearning_but_not_retraining(overfit, halfway_method, tmp_path):
    run, ids = overfit["run"], overfit["ids"]
    halfway = forget(run, ids, method=halfway_method).theta
    targets = {"halfway": halfway, "retrained": overfit["theta_R"], "original": overfit["theta_T"]}
    methods = [ShadowMethod("halfway", halfway_method), ShadowMethod("lira", None)]
    pairs = {"halfway": ["halfway", "retrained", "original"], "lira": ["original", "retrained"]}
    report = ulira_audit(run, ids, targets, methods, pairs=pairs, n_shadows=8, workers=1, seed=1, out_dir=tmp_path)
    assert report["protocol"]["n_targets"] == 2 * len(ids) and report["protocol"]["n_shadows"] == 8
    lira = report["attacks"]["lira"]["targets"]
    half = report["attacks"]["halfway"]["targets"]
    # classic LiRA: the trained-on rows of the original model are found far better than chance ...
    assert lira["original"]["online"]["auc_ci"][0] > 0.7
    # ... the retrained model's are not (95 % DeLong interval contains 1/2)
    assert _contains_half(lira["retrained"]["online"]["auc_ci"]) and _contains_half(lira["retrained"]["offline"]["auc_ci"])
    # U-LiRA with the method's own shadows exposes half-done unlearning, and not retraining
    assert half["halfway"]["online"]["auc_ci"][0] > 0.6
    assert _contains_half(half["retrained"]["online"]["auc_ci"])
    for label in ("halfway", "lira"):
        png = tmp_path / f"ulira_{label}.png"
        assert report["attacks"][label]["roc_png"] == str(png)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(tmp_path / "ulira_scores.npz", allow_pickle=False) as npz:
        assert npz["shadow_phi__halfway"].shape == (8, 2 * len(ids))
        assert np.array_equal(npz["labels"], np.r_[np.ones(len(ids)), np.zeros(len(ids))])


def test_spawned_shadow_workers_give_the_in_process_result(overfit):
    run, ids = overfit["run"], overfit["ids"]
    plan = make_plan(run.n_train, overfit["dataset"].n_test, ids, n_shadows=2, max_targets=20, seed=2)
    methods = [ShadowMethod("retrain", "retrain")]
    ticks = []
    here = run_shadows(run, plan, methods, workers=1, threads=1)
    spawned = run_shadows(run, plan, methods, workers=2, threads=1, progress=lambda n=1, **_: ticks.append(n))
    assert sum(ticks) == 2
    for label in ("trained", "retrain"):
        assert spawned.phi[label].shape == (2, 40)
        assert np.allclose(spawned.phi[label], here.phi[label], rtol=1e-12, atol=1e-12)
    # the two shadows differ (different rows in the slots) before unlearning, not after exact retraining
    assert not np.allclose(here.phi["trained"][0], here.phi["trained"][1])
    assert np.allclose(here.phi["retrain"][0], here.phi["retrain"][1], atol=1e-6)


def test_unknown_method_or_option_fails_before_any_training(overfit):
    run, ids = overfit["run"], overfit["ids"]
    plan = make_plan(run.n_train, overfit["dataset"].n_test, ids, n_shadows=2)
    with pytest.raises(InputError, match="unknown unlearning method"):
        run_shadows(run, plan, [ShadowMethod("x", "no-such-method")])
    with pytest.raises(InputError, match="has no option"):
        run_shadows(run, plan, [ShadowMethod("r", "retrain", {"nope": 1})])
    with pytest.raises(InputError, match="unique"):
        run_shadows(run, plan, [ShadowMethod("r", "retrain"), ShadowMethod("r", None)])
