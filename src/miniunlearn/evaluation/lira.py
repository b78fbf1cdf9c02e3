"""LiRA statistics: per-example Gaussians of shadow-model scores, likelihood-ratio scores, ROC metrics.

The likelihood-ratio attack of Carlini et al. ("Membership Inference Attacks From First
Principles", IEEE S&P 2022), as Hayes et al. (2024) use it for unlearning: for every target
example, fit one Gaussian to its logit-scaled confidence in shadow models that held it ("in") and
one to shadow models that did not ("out"), then score a target model by the log-likelihood ratio.
Pure statistics on arrays of scores: the shadow models themselves are trained in
:mod:`miniunlearn.experiments`.

Two ways of scoring (docs/evaluation.md):

* **one target model** (:func:`fit_gaussians`, :func:`lira_scores`, :func:`roc_metrics`): the
  Gaussians come from all shadows, the scores from one separate model; DeLong interval.
* **leave-one-out over the shadows** (:func:`leave_one_out_scores`, :func:`bootstrap_roc_metrics`),
  as Hayes et al. (2024) evaluate U-LiRA: every shadow is also a target model, scored with
  Gaussians fitted on the *other* shadows; the scores of all target models are pooled into one
  ROC, and its uncertainty comes from a bootstrap over the target models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from miniunlearn.core.errors import InputError
from miniunlearn.evaluation.mia import auc_confidence_interval, proportion_confidence_interval, sample_scores

__all__ = ["FPR_LEVELS", "MIN_VARIANCE", "VARIANCES", "GaussianFit", "fit_gaussians", "lira_scores", "roc_metrics",
           "logit_confidence", "leave_one_out_scores", "bootstrap_roc_metrics", "roc_points", "tpr_at_fpr"]

FPR_LEVELS = (0.01, 0.001)
MIN_VARIANCE = 1e-30
VARIANCES = ("per_example", "global")
BOOTSTRAP_REPLICATES = 1000


def logit_confidence(model, theta: torch.Tensor, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``phi = log(p_y / (1 - p_y))`` per row, computed from the logits without cancellation."""
    return sample_scores(model, theta, X, y, None, ("phi",))["phi"]


@dataclass
class GaussianFit:
    """Per-example Gaussians of phi: (E,) means and variances of the in- and out-samples."""

    mu_in: np.ndarray
    var_in: np.ndarray
    mu_out: np.ndarray
    var_out: np.ndarray


def fit_gaussians(phi: np.ndarray, member: np.ndarray, variance: str = "per_example",
                  min_variance: float = MIN_VARIANCE, relative_floor: float = 0.0) -> GaussianFit:
    """Maximum-likelihood Gaussians per example (column) from shadow samples ``phi`` (N, E).

    ``member[k, e]`` says whether example e was in shadow k. ``mu = mean``, ``var = mean of squared
    deviations`` (ddof 0) over the in- (resp. out-) shadows; ``variance="global"`` replaces every
    example's variance by the mean variance over examples. Variances are floored at
    ``max(min_variance, relative_floor * mean variance over examples)`` (in and out separately):
    with a handful of shadows some examples get a tiny variance by chance, and a likelihood ratio
    over a near-zero variance ranks that example far above every other.
    """
    phi = np.asarray(phi, dtype=np.float64)
    member = np.asarray(member, dtype=bool)
    if phi.ndim != 2 or phi.shape != member.shape:
        raise InputError(f"phi {phi.shape} and membership {member.shape} must be equal (shadows x examples) arrays")
    if variance not in VARIANCES:
        raise InputError(f"variance must be one of {', '.join(VARIANCES)}, got {variance!r}")
    if not np.isfinite(phi).all():
        raise InputError("shadow scores contain NaN or infinite values")
    n_in, n_out = member.sum(axis=0), (~member).sum(axis=0)
    if (n_in < 2).any() or (n_out < 2).any():
        raise InputError("every example needs at least two shadows with it and two without it "
                         "(a variance needs two samples)")
    mu_in = (phi * member).sum(axis=0) / n_in
    mu_out = (phi * ~member).sum(axis=0) / n_out
    var_in = (((phi - mu_in) ** 2) * member).sum(axis=0) / n_in
    var_out = (((phi - mu_out) ** 2) * ~member).sum(axis=0) / n_out
    if variance == "global":
        var_in = np.full_like(var_in, var_in.mean())
        var_out = np.full_like(var_out, var_out.mean())
    if not 0 <= relative_floor <= 1:
        raise InputError(f"the relative variance floor must lie in [0, 1], got {relative_floor}")
    floor_in = max(min_variance, relative_floor * float(var_in.mean()))
    floor_out = max(min_variance, relative_floor * float(var_out.mean()))
    return GaussianFit(mu_in, np.maximum(var_in, floor_in), mu_out, np.maximum(var_out, floor_out))


def lira_scores(phi_target: np.ndarray, fit: GaussianFit, online: bool = True) -> np.ndarray:
    """Membership scores of a target model's phi (E,): online log-likelihood ratio, or offline
    ``log Phi((phi - mu_out) / s_out)``. Larger means "was in"."""
    # imported here: scipy.stats takes ~1 s to load and only the attack statistics need it
    from scipy.stats import norm

    phi_target = np.asarray(phi_target, dtype=np.float64)
    if phi_target.shape != fit.mu_in.shape:
        raise InputError(f"target scores {phi_target.shape} do not match the {fit.mu_in.shape[0]} fitted examples")
    sd_out = np.sqrt(fit.var_out)
    if online:
        return norm.logpdf(phi_target, fit.mu_in, np.sqrt(fit.var_in)) - norm.logpdf(phi_target, fit.mu_out, sd_out)
    return norm.logcdf((phi_target - fit.mu_out) / sd_out)


def roc_metrics(labels: np.ndarray, scores: np.ndarray, fpr_levels=FPR_LEVELS, confidence: float = 0.95) -> dict:
    """AUC (with DeLong interval) and TPR at each FPR level (exact binomial interval over the positives).

    TPR at level a is the largest TPR among the ROC points with FPR <= a (:func:`roc_points`);
    ``fpr_resolution = 1 / n_negatives`` is the smallest non-zero FPR the data can show.
    """
    labels = np.asarray(labels).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    auc = auc_confidence_interval(labels, scores, confidence)
    fpr, tpr = roc_points(labels, scores)
    n_pos = auc["n_positive"]
    out = {"auc": auc["auc"], "auc_ci": auc["ci"], "tpr_at_fpr": {}, "tpr_at_fpr_ci": {},
           "fpr_resolution": 1.0 / auc["n_negative"], "n_positive": n_pos, "n_negative": auc["n_negative"]}
    for level in fpr_levels:
        value = tpr_at_fpr(fpr, tpr, level)
        key = f"{level:g}"
        out["tpr_at_fpr"][key] = value
        out["tpr_at_fpr_ci"][key] = proportion_confidence_interval(int(round(value * n_pos)), n_pos, confidence)
    out["_roc"] = (fpr, tpr)
    return out


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct threshold, from (0, 0) to (1, 1): "member" when score >= threshold.

    The points of ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``, without its input
    checks -- the bootstrap draws this thousands of times. Tied scores form one point, so the
    trapezoidal area is the Mann-Whitney AUC with ties counted 1/2.
    """
    labels = np.asarray(labels, dtype=bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], labels[order]
    ends = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # last row of each group of equal scores
    true_positives = np.cumsum(hits)[ends]
    false_positives = ends + 1 - true_positives
    n_pos, n_neg = int(hits.sum()), len(hits) - int(hits.sum())
    return np.r_[0.0, false_positives / n_neg], np.r_[0.0, true_positives / n_pos]


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, level: float) -> float:
    """The largest TPR among the ROC points with FPR <= ``level`` (0 when there is none)."""
    within = fpr <= level
    return float(tpr[within].max()) if within.any() else 0.0


# ------------------------------------------------------------------------- leave-one-out over shadows
def leave_one_out_scores(phi: np.ndarray, member: np.ndarray, variance: str = "per_example",
                         relative_floor: float = 0.0, online: bool = True, groups: np.ndarray | None = None) -> np.ndarray:
    """(N, E) membership scores: row k scores shadow k's phi with Gaussians fitted on the other shadows.

    ``groups`` (N,) leaves a whole group out: row k is scored with the shadows whose group differs
    from k's. With complementary pairs (``groups = arange(N) // 2``) every example then has exactly
    as many in- as out-samples in every fit; leaving out shadow k alone gives an example one sample
    fewer on k's own side, and a Gaussian fitted on fewer samples fits a fresh point worse, which
    biases the pooled AUC *below* 1/2 when nothing can be told apart (0.487 instead of 0.499 over 40
    repetitions with 16 shadows, docs/evaluation.md). Every fit needs two in- and two out-samples
    per example.
    """
    phi = np.asarray(phi, dtype=np.float64)
    member = np.asarray(member, dtype=bool)
    if phi.ndim != 2 or phi.shape != member.shape:
        raise InputError(f"phi {phi.shape} and membership {member.shape} must be equal (shadows x examples) arrays")
    groups = np.arange(phi.shape[0]) if groups is None else np.asarray(groups)
    if groups.shape != (phi.shape[0],):
        raise InputError(f"groups must name one group per shadow ({phi.shape[0]}), got shape {groups.shape}")
    scores = np.empty_like(phi)
    for k in range(phi.shape[0]):
        others = groups != groups[k]
        fit = fit_gaussians(phi[others], member[others], variance, relative_floor=relative_floor)
        scores[k] = lira_scores(phi[k], fit, online)
    return scores


def bootstrap_roc_metrics(scores: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None,
                          fpr_levels=FPR_LEVELS, confidence: float = 0.95, replicates: int = BOOTSTRAP_REPLICATES,
                          seed: int = 0) -> dict:
    """ROC of the pooled scores of N target models on E targets (``scores`` and truth ``labels``
    both (N, E)), with percentile bootstrap intervals over the **targets**.

    AUC is the area under the pooled ROC (= the Mann-Whitney statistic, ties counted 1/2); TPR at
    a level is the largest TPR whose FPR does not exceed it. A replicate draws E targets with
    replacement, each with its scores in all N target models, and recomputes both; the interval
    is the ``(1 -/+ confidence) / 2`` quantiles of the replicates. Resampling targets keeps
    together what is correlated -- a target's scores in every target model come from Gaussians
    fitted on nearly the same shadows. (At the null, 40 repetitions of the whole protocol: this
    interval covered 1/2 in 95 % of them; a bootstrap over target models in 85 %, DeLong on the
    pooled scores in 82 %; docs/evaluation.md.)

    ``reference`` (N, E): another method's scores on the same targets and models (retraining):
    adds ``auc_minus_reference`` with a *paired* interval (the same targets in every replicate).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise InputError(f"scores {scores.shape} and labels {labels.shape} must be equal (models x targets) arrays")
    if reference is not None:
        reference = np.asarray(reference, dtype=np.float64)
        if reference.shape != scores.shape:
            raise InputError(f"reference scores {reference.shape} do not match {scores.shape}")
    for array in (scores, reference):
        if array is not None and not np.isfinite(array).all():
            raise InputError("membership scores contain NaN or infinite values")
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise InputError(f"an ROC needs positives and negatives (got {n_pos} and {n_neg})")
    if not 0 < confidence < 1:
        raise InputError(f"confidence level must lie in (0, 1), got {confidence}")

    def roc(values: np.ndarray, columns) -> tuple[float, list[float], tuple]:
        fpr, tpr = roc_points(labels[:, columns], values[:, columns])
        return float(np.trapezoid(tpr, fpr)), [tpr_at_fpr(fpr, tpr, level) for level in fpr_levels], (fpr, tpr)

    n_targets = scores.shape[1]
    everything = np.arange(n_targets)
    auc, tprs, curve = roc(scores, everything)
    reference_auc = None if reference is None else roc(reference, everything)[0]
    rng = np.random.default_rng([int(seed), 31])
    draws = []
    for _ in range(int(replicates)):
        columns = rng.integers(0, n_targets, n_targets)
        truth = labels[:, columns]
        if truth.all() or not truth.any():
            continue  # a replicate without positives or negatives has no ROC
        value, levels, _ = roc(scores, columns)
        difference = [] if reference is None else [value - roc(reference, columns)[0]]
        draws.append([value, *levels, *difference])
    draws = np.asarray(draws).reshape(-1, 1 + len(fpr_levels) + (reference is not None))
    tail = (1 - confidence) / 2

    def interval(column: int) -> list[float]:
        if not len(draws):
            return [float("nan"), float("nan")]
        return [float(np.quantile(draws[:, column], tail)), float(np.quantile(draws[:, column], 1 - tail))]

    out = {"auc": auc, "auc_ci": interval(0),
           "tpr_at_fpr": {f"{level:g}": value for level, value in zip(fpr_levels, tprs)},
           "tpr_at_fpr_ci": {f"{level:g}": interval(1 + i) for i, level in enumerate(fpr_levels)},
           "fpr_resolution": 1.0 / n_neg, "n_positive": n_pos, "n_negative": n_neg,
           "n_target_models": int(scores.shape[0]), "n_targets": int(n_targets),
           "interval": f"{confidence:.0%} percentile bootstrap over the {n_targets} targets, {len(draws)} replicates"}
    if reference is not None:
        out["auc_minus_reference"] = auc - reference_auc
        out["auc_minus_reference_ci"] = interval(len(draws[0]) - 1 if len(draws) else 0)
    out["_roc"] = curve
    return out
