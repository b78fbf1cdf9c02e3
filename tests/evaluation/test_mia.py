"""Population attacks: the statistics against brute force, and the attacks on an overfit model."""

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from miniunlearn.core.errors import InputError
from miniunlearn.evaluation.mia import (
    auc_confidence_interval,
    loss_attack,
    population_attacks,
    sample_scores,
    shadow_member_ids,
    svc_mia_efficacy,
)
from miniunlearn.models import LogisticRegression


def test_delong_interval_matches_the_pairwise_definition(rng):
    pos = np.round(rng.normal(0.4, 1, size=37), 1)  # rounding makes ties
    neg = np.round(rng.normal(0.0, 1, size=53), 1)
    labels = np.r_[np.ones(37), np.zeros(53)]
    got = auc_confidence_interval(labels, np.r_[pos, neg], confidence=0.9)
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    se = np.sqrt(v10.var(ddof=1) / 37 + v01.var(ddof=1) / 53)
    assert got["auc"] == pytest.approx(psi.mean()) == pytest.approx(roc_auc_score(labels, np.r_[pos, neg]))
    assert got["se"] == pytest.approx(se)
    z = norm.ppf(0.95)
    assert got["ci"] == pytest.approx([psi.mean() - z * se, psi.mean() + z * se])


def _reference_scores(theta: np.ndarray, X: np.ndarray, y: np.ndarray, C: int) -> dict:
    """The textbook formulas, evaluated with 60 significant digits (mpmath), one row at a time."""
    import mpmath

    mpmath.mp.dps = 60
    W = theta.reshape(C, -1)
    Z = X @ W[:, :-1].T + W[:, -1]
    out = {k: [] for k in ("loss", "confidence", "entropy", "m_entropy", "phi")}
    for z, label in zip(Z, y):
        e = [mpmath.exp(mpmath.mpf(float(v))) for v in z]
        total = mpmath.fsum(e)
        p = [v / total for v in e]
        py = p[label]
        rest = [mpmath.fsum(p[k] for k in range(C) if k != c) for c in range(C)]  # 1 - p_c, no rounding to 0
        out["loss"].append(-mpmath.log(py))
        out["confidence"].append(py)
        out["entropy"].append(-mpmath.fsum(q * mpmath.log(q) for q in p))
        out["m_entropy"].append(-rest[label] * mpmath.log(py)
                                - mpmath.fsum(p[c] * mpmath.log(rest[c]) for c in range(C) if c != label))
        out["phi"].append(mpmath.log(py) - mpmath.log(rest[label]))
    return {k: np.array([float(v) for v in values]) for k, values in out.items()}


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_sample_scores_match_high_precision_formulas_and_stay_finite(rng, scale):
    """Scale 30 gives logits so large that p_y rounds to 0 or 1 in float64: still finite and accurate."""
    model = LogisticRegression(5, 4)
    X = rng.normal(size=(40, 5)) * scale
    y = rng.integers(0, 4, size=40)
    theta = torch.from_numpy(rng.normal(size=model.n_params))
    got = sample_scores(model, theta, X, y, kinds=("loss", "confidence", "entropy", "m_entropy", "phi"), chunk_rows=9)
    want = _reference_scores(theta.numpy(), X, y, 4)
    for kind, values in got.items():
        assert np.isfinite(values).all(), kind
        assert np.allclose(values, want[kind], rtol=1e-9, atol=1e-12), kind


def test_loss_attack_sees_members_of_the_original_model_but_not_of_the_retrained_one(overfit):
    run, ds, ids = overfit["run"], overfit["dataset"], overfit["ids"]
    results = {}
    for name in ("theta_T", "theta_R"):
        on_forget = sample_scores(run.model, overfit[name], ds.X_train, ds.y_train, ids)["loss"]
        on_test = sample_scores(run.model, overfit[name], ds.X_test, ds.y_test)["loss"]
        results[name] = loss_attack(on_forget, on_test, seed=0)
    original, retrained = results["theta_T"], results["theta_R"]
    assert original["n_members"] == original["n_nonmembers"] == len(ids)
    # clearly better than chance: the whole 95 % interval lies above 0.6
    assert original["auc_ci"][0] > 0.6 and original["balanced_accuracy_ci"][0] > 0.55
    # no better than chance: the 95 % intervals contain 1/2
    assert retrained["auc_ci"][0] <= 0.5 <= retrained["auc_ci"][1]
    assert retrained["balanced_accuracy_ci"][0] <= 0.5 <= retrained["balanced_accuracy_ci"][1]


def test_svc_efficacy_on_the_retrained_model_is_that_of_unseen_rows(overfit):
    """SalUn's SVC, fit on retained vs half of the test rows, judged on the forget set and on the other
    (fresh) half of the test rows: for the retrained model both are unseen, so the two rates agree
    (two-proportion 95 % interval of the difference contains 0); for the original they do not."""
    run, ds, ids = overfit["run"], overfit["dataset"], overfit["ids"]
    from miniunlearn.models.rows import retained_ids

    half = ds.n_test // 2
    differences = {}
    for name in ("theta_T", "theta_R"):
        conf = lambda X, y, i=None: sample_scores(run.model, overfit[name], X, y, i, ("confidence",))["confidence"]
        shadow_in = conf(ds.X_train, ds.y_train, retained_ids(ds.n_train, ids))
        test = conf(ds.X_test, ds.y_test)
        forgotten = svc_mia_efficacy(shadow_in, test[:half], conf(ds.X_train, ds.y_train, ids))
        fresh = svc_mia_efficacy(shadow_in, test[:half], test[half:])
        p1, n1, p2, n2 = forgotten["efficacy"], forgotten["n_target"], fresh["efficacy"], fresh["n_target"]
        se = np.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
        differences[name] = (p2 - p1 - 1.96 * se, p2 - p1 + 1.96 * se)
        assert forgotten["efficacy_ci"][0] <= p1 <= forgotten["efficacy_ci"][1]
    assert differences["theta_R"][0] <= 0 <= differences["theta_R"][1]
    assert differences["theta_T"][0] > 0.2  # the original's forgotten rows look seen


def test_population_attacks_use_the_same_rows_for_every_model(overfit):
    """The SVC efficacy of each model equals SalUn's recipe recomputed by hand (numpy confidences,
    the same seeded shadow rows, a fresh scikit-learn SVC): so every model sees the same rows."""
    from sklearn.svm import SVC

    run, ds, ids = overfit["run"], overfit["dataset"], overfit["ids"]
    thetas = {"retrained": overfit["theta_R"], "original": overfit["theta_T"]}
    out = population_attacks(run.model, thetas, ds, ids, svc_features=("confidence", "entropy"), seed=4)
    shadow = shadow_member_ids(np.setdiff1d(np.arange(ds.n_train), ids), ds.n_test, seed=4)
    assert out["rows"]["shadow_members"] == len(shadow) == min(ds.n_test, ds.n_train - len(ids))
    for name, theta in thetas.items():
        W = theta.numpy().reshape(ds.n_classes, -1)

        def confidence(X, y):
            Z = X @ W[:, :-1].T + W[:, -1]
            P = np.exp(Z - Z.max(axis=1, keepdims=True))
            return (P / P.sum(axis=1, keepdims=True))[np.arange(len(y)), y][:, None]

        members, nonmembers = confidence(ds.X_train[shadow], ds.y_train[shadow]), confidence(ds.X_test, ds.y_test)
        svc = SVC(C=3, gamma="auto").fit(np.vstack([members, nonmembers]),
                                         np.r_[np.ones(len(members)), np.zeros(len(nonmembers))])
        expected = np.mean(svc.predict(confidence(ds.X_train[ids], ds.y_train[ids])) == 0)
        assert out["svc_mia"]["confidence"][name]["efficacy"] == pytest.approx(expected)
    assert out["svc_mia"]["confidence"]["original"]["efficacy"] < out["svc_mia"]["confidence"]["retrained"]["efficacy"]


def test_bad_attack_inputs_are_refused():
    with pytest.raises(InputError, match="at least 5 members"):
        loss_attack(np.ones(3), np.ones(10))
    with pytest.raises(InputError, match="non-negative"):
        loss_attack(-np.ones(10), np.ones(10))
    with pytest.raises(InputError, match="finite"):
        loss_attack(np.full(10, np.nan), np.ones(10))
    with pytest.raises(InputError, match="needs shadow members"):
        svc_mia_efficacy(np.ones(3), np.zeros(0), np.ones(3))
    with pytest.raises(InputError, match="positives and negatives"):
        auc_confidence_interval(np.ones(4), np.arange(4.0))
    with pytest.raises(InputError, match="unknown score kind"):
        sample_scores(LogisticRegression(2, 2), torch.zeros(6), np.zeros((1, 2)), np.zeros(1, int), kinds=("nope",))
