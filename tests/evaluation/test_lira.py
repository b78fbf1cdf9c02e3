"""LiRA statistics by hand: per-example Gaussians, likelihood ratios, ROC metrics, leave-one-out
scores over shadows and their bootstrap intervals."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from miniunlearn.core.errors import InputError
from miniunlearn.evaluation.lira import (
    GaussianFit,
    bootstrap_roc_metrics,
    fit_gaussians,
    leave_one_out_scores,
    lira_scores,
    roc_metrics,
    roc_points,
)
from miniunlearn.evaluation.mia import auc_confidence_interval


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


def test_relative_floor_lifts_tiny_variances_to_a_share_of_their_mean():
    phi = np.array([[0.0, 5.0], [2.0, 5.1], [1.0, 3.0], [3.0, 3.0]])
    member = np.array([[True, True], [True, True], [False, False], [False, False]])
    # in: variances 1.0 and 0.0025 (mean 0.50125); out: 1.0 and 0.0 (mean 0.5)
    fit = fit_gaussians(phi, member, relative_floor=0.1)
    assert fit.var_in == pytest.approx([1.0, 0.050125]) and fit.var_out == pytest.approx([1.0, 0.05])
    assert fit_gaussians(phi, member).var_out[1] == 1e-30  # without a floor: the absolute minimum only
    with pytest.raises(InputError, match="relative variance floor"):
        fit_gaussians(phi, member, relative_floor=2.0)


def _by_hand_score(x, ins, outs):
    """Online LiRA score of x with Gaussians of the samples (mean, ddof-0 variance), from the formula."""
    def log_pdf(value, samples):
        mu, var = np.mean(samples), np.var(samples)
        return -0.5 * math.log(2 * math.pi * var) - (value - mu) ** 2 / (2 * var)
    return log_pdf(x, ins) - log_pdf(x, outs)


def test_leave_one_out_scores_fit_on_the_other_groups_only(rng):
    phi = rng.normal(size=(8, 3))
    member = np.zeros((8, 3), dtype=bool)
    member[0::2] = rng.random((4, 3)) < 0.5
    member[1::2] = ~member[0::2]          # complementary pairs (0, 1), (2, 3), ...
    pairs = np.arange(8) // 2
    scores = leave_one_out_scores(phi, member, groups=pairs)
    for k in (0, 5):
        others = pairs != pairs[k]
        for e in range(3):
            ins, outs = phi[others & member[:, e], e], phi[others & ~member[:, e], e]
            assert len(ins) == len(outs) == 3    # leaving the pair out keeps every fit balanced
            assert scores[k, e] == pytest.approx(_by_hand_score(phi[k, e], ins, outs), rel=1e-12)
    alone = leave_one_out_scores(phi, member)  # default: leave shadow k alone out
    others = np.arange(8) != 2
    ins, outs = phi[others & member[:, 1], 1], phi[others & ~member[:, 1], 1]
    assert alone[2, 1] == pytest.approx(_by_hand_score(phi[2, 1], ins, outs), rel=1e-12)
    with pytest.raises(InputError, match="one group per shadow"):
        leave_one_out_scores(phi, member, groups=np.arange(3))


def test_bootstrap_roc_pools_the_target_models(rng):
    labels = rng.random((6, 300)) < 0.5
    scores = rng.normal(size=(6, 300)) + 0.8 * labels
    got = bootstrap_roc_metrics(scores, labels, replicates=200, seed=3)
    assert got["auc"] == pytest.approx(roc_auc_score(labels.ravel(), scores.ravel()), rel=1e-12)
    assert got["auc_ci"][0] < got["auc"] < got["auc_ci"][1]
    pos, neg = scores[labels], scores[~labels]
    best = max(np.mean(pos >= t) for t in np.sort(scores.ravel()) if np.mean(neg >= t) <= 0.01)
    assert got["tpr_at_fpr"]["0.01"] == pytest.approx(best)
    assert (got["n_positive"], got["n_negative"], got["n_targets"]) == (labels.sum(), (~labels).sum(), 300)


def test_bootstrap_interval_of_independent_scores_matches_delong(rng):
    """With every score independent the target bootstrap estimates the same sampling error as DeLong."""
    labels = rng.random((4, 1500)) < 0.5
    scores = rng.normal(size=labels.shape) + 0.5 * labels
    got = bootstrap_roc_metrics(scores, labels, replicates=400, seed=1)
    delong = auc_confidence_interval(labels.ravel(), scores.ravel())
    width, delong_width = got["auc_ci"][1] - got["auc_ci"][0], delong["ci"][1] - delong["ci"][0]
    assert 0.8 < width / delong_width < 1.25


def test_paired_difference_to_a_reference():
    labels = np.tile([True, False], (4, 50))
    ranks = np.arange(400, dtype=float).reshape(4, 100)
    same = bootstrap_roc_metrics(ranks, labels, reference=ranks.copy(), replicates=100)
    assert same["auc_minus_reference"] == 0.0 and same["auc_minus_reference_ci"] == [0.0, 0.0]
    perfect = np.where(labels, 1.0, 0.0) + 1e-3 * ranks
    better = bootstrap_roc_metrics(perfect, labels, reference=ranks, replicates=100)
    assert better["auc"] == pytest.approx(1.0) and better["auc_ci"] == pytest.approx([1.0, 1.0])
    assert better["auc_minus_reference"] == pytest.approx(1.0 - roc_auc_score(labels.ravel(), ranks.ravel()))
    with pytest.raises(InputError, match="positives and negatives"):
        bootstrap_roc_metrics(ranks, np.ones_like(labels))
    with pytest.raises(InputError, match="do not match"):
        bootstrap_roc_metrics(ranks, labels, reference=ranks[:2])


def test_roc_points_are_sklearns_curve(rng):
    from sklearn.metrics import roc_curve

    labels = rng.random(500) < 0.3
    scores = np.round(rng.normal(size=500) + labels, 1)  # many ties
    fpr, tpr = roc_points(labels, scores)
    expected_fpr, expected_tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    assert np.allclose(fpr, expected_fpr, atol=1e-15) and np.allclose(tpr, expected_tpr, atol=1e-15)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(labels, scores), rel=1e-12)
