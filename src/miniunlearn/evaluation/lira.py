"""LiRA statistics: per-example Gaussians of shadow-model scores, likelihood-ratio scores, ROC metrics.

The likelihood-ratio attack of Carlini et al. ("Membership Inference Attacks From First
Principles", IEEE S&P 2022), as Hayes et al. (2024) use it for unlearning: for every target
example, fit one Gaussian to its logit-scaled confidence in shadow models that held it ("in") and
one to shadow models that did not ("out"), then score a target model by the log-likelihood ratio.
Pure statistics on arrays of scores: the shadow models themselves are trained in
:mod:`miniunlearn.experiments`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from miniunlearn.core.errors import InputError
from miniunlearn.evaluation.mia import auc_confidence_interval, proportion_confidence_interval, sample_scores

__all__ = ["FPR_LEVELS", "MIN_VARIANCE", "VARIANCES", "GaussianFit", "fit_gaussians", "lira_scores", "roc_metrics",
           "logit_confidence"]

FPR_LEVELS = (0.01, 0.001)
MIN_VARIANCE = 1e-30
VARIANCES = ("per_example", "global")


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
                  min_variance: float = MIN_VARIANCE) -> GaussianFit:
    """Maximum-likelihood Gaussians per example (column) from shadow samples ``phi`` (N, E).

    ``member[k, e]`` says whether example e was in shadow k. ``mu = mean``, ``var = mean of squared
    deviations`` (ddof 0) over the in- (resp. out-) shadows; ``variance="global"`` replaces every
    example's variance by the mean variance over examples. Variances are floored at ``min_variance``.
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
    return GaussianFit(mu_in, np.maximum(var_in, min_variance), mu_out, np.maximum(var_out, min_variance))


def lira_scores(phi_target: np.ndarray, fit: GaussianFit, online: bool = True) -> np.ndarray:
    """Membership scores of a target model's phi (E,): online log-likelihood ratio, or offline
    ``log Phi((phi - mu_out) / s_out)``. Larger means "was in"."""
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

    TPR at level a is the largest TPR among the ROC points with FPR <= a (``sklearn.metrics.roc_curve``);
    ``fpr_resolution = 1 / n_negatives`` is the smallest non-zero FPR the data can show.
    """
    from sklearn.metrics import roc_curve

    labels = np.asarray(labels).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    auc = auc_confidence_interval(labels, scores, confidence)
    fpr, tpr, _ = roc_curve(labels, scores)
    n_pos = auc["n_positive"]
    out = {"auc": auc["auc"], "auc_ci": auc["ci"], "tpr_at_fpr": {}, "tpr_at_fpr_ci": {},
           "fpr_resolution": 1.0 / auc["n_negative"], "n_positive": n_pos, "n_negative": auc["n_negative"]}
    for level in fpr_levels:
        value = float(tpr[fpr <= level].max()) if (fpr <= level).any() else 0.0
        key = f"{level:g}"
        out["tpr_at_fpr"][key] = value
        out["tpr_at_fpr_ci"][key] = proportion_confidence_interval(int(round(value * n_pos)), n_pos, confidence)
    out["_roc"] = (fpr, tpr)
    return out
