"""Population membership-inference attacks on the forget set, and their confidence intervals.

Two attacks that use one attacker for every example ("population U-MIAs" in the words of Hayes et
al. 2024). Both ask whether the forgotten rows U still look like training members of a model;
the answer only means something next to the same attack's answer on the retrained model, for
which U are genuine non-members (docs/evaluation.md). :mod:`miniunlearn.evaluation.lira` holds the
stronger per-example attack.

1. **Loss attack** (:func:`loss_attack`): members = forgotten rows, non-members = held-out test
   rows (the larger group subsampled to the size of the smaller, so chance is exactly 1/2). The
   one feature is the per-sample loss ``l_i = -log p_{y_i}(x_i)``, used as ``log(l_i + 1e-12)``
   (a monotone transform: the same ranking, a better-placed threshold for a linear classifier).
   A standardised scikit-learn ``LogisticRegression`` is cross-validated (stratified k-fold,
   ``cross_val_predict``); the out-of-fold member probabilities give the ROC AUC and, thresholded
   at 1/2, the balanced accuracy.

2. **Confidence-SVC "MIA-efficacy"** (:func:`svc_mia_efficacy`), the convention of SalUn (Fan et
   al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both Image
   Classification and Generation", ICLR 2024; their ``evaluation/SVC_MIA.py``): an SVC
   (``C=3, gamma="auto"``, RBF kernel) is fit on *shadow* data -- retained rows as members (SalUn
   takes as many as there are test rows) and the test rows as non-members -- using the model's
   confidence ``p_y(x)`` as the feature, then applied to the forget set. **MIA-efficacy** is the
   share of forgotten rows the SVC predicts to be *non-members*: high = the forget set looks
   unseen. SalUn reports the confidence feature; the entropy ``-sum_c p_c log p_c`` and the
   modified entropy of Song & Mittal (USENIX Security 2021)
   ``-(1 - p_y) log p_y - sum_{c != y} p_c log(1 - p_c)`` are available too.

Uncertainty: ROC AUCs get DeLong's variance (DeLong, DeLong & Clarke-Pearson 1988, the fast
mid-rank form of Sun & Xu 2014), proportions an exact Clopper-Pearson interval, balanced
accuracies a normal approximation. They quantify sampling noise of the rows, not of training.
"""

from __future__ import annotations

import numpy as np
import torch

from miniunlearn.core.errors import InputError
from miniunlearn.models.rows import DEFAULT_CHUNK_ROWS, Rows, retained_ids

__all__ = ["SCORE_KINDS", "sample_scores", "auc_confidence_interval", "proportion_confidence_interval",
           "loss_attack", "svc_mia_efficacy", "population_attacks", "shadow_member_ids"]

SCORE_KINDS = ("loss", "confidence", "entropy", "m_entropy", "phi")
SVC_FEATURES = ("confidence", "entropy", "m_entropy")
LOSS_EPS = 1e-12


# ------------------------------------------------------------------------------------------ scores
def _log_one_minus_p(logits: torch.Tensor) -> torch.Tensor:
    """``log(1 - p_c) = logsumexp_{c' != c} z_c' - logsumexp z`` for every class, exact even where
    ``p_c`` rounds to 1 (O(C^2) per row)."""
    C = logits.shape[1]
    eye = torch.eye(C, dtype=torch.bool)
    others = logits[:, None, :].expand(-1, C, -1).masked_fill(eye[None], float("-inf"))
    return torch.logsumexp(others, dim=2) - torch.logsumexp(logits, dim=1, keepdim=True)


def _one_minus_p_y(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``1 - p_y`` without cancellation: ``sum_{c != y} p_c``."""
    p = torch.softmax(logits, dim=1)
    return p.scatter(1, y[:, None], 0.0).sum(dim=1)


def _chunk_scores(model, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor, kinds) -> torch.Tensor:
    logits = model.logits(theta, X)
    log_p = torch.log_softmax(logits, dim=1)
    log_py = log_p.gather(1, y[:, None])[:, 0]
    out = []
    for kind in kinds:
        if kind == "loss":
            out.append(-log_py)
        elif kind == "confidence":
            out.append(log_py.exp())
        elif kind == "entropy":
            p = log_p.exp()
            out.append(-(torch.where(p > 0, p * log_p, torch.zeros_like(p))).sum(dim=1))
        elif kind == "m_entropy":
            p = log_p.exp()
            log_1mp = _log_one_minus_p(logits)
            others = torch.where(p > 0, p * log_1mp, torch.zeros_like(p)).scatter(1, y[:, None], 0.0).sum(dim=1)
            out.append(-_one_minus_p_y(logits, y) * log_py - others)
        elif kind == "phi":
            # logit-scaled confidence log(p_y / (1 - p_y)) = z_y - logsumexp_{c != y} z_c (stable)
            masked = logits.scatter(1, y[:, None], float("-inf"))
            out.append(logits.gather(1, y[:, None])[:, 0] - torch.logsumexp(masked, dim=1))
        else:  # pragma: no cover - validated by sample_scores
            raise AssertionError(kind)
    return torch.stack(out, dim=1)


def sample_scores(model, theta: torch.Tensor, X: np.ndarray, y: np.ndarray, ids: np.ndarray | None = None,
                  kinds=("loss",), chunk_rows: int = DEFAULT_CHUNK_ROWS) -> dict[str, np.ndarray]:
    """Per-row scores of rows ``ids`` of ``(X, y)`` in one chunked pass; ``{kind: (n,) float64 array}``.

    Kinds: ``loss`` ``-log p_y``; ``confidence`` ``p_y``; ``entropy`` ``-sum_c p_c log p_c``;
    ``m_entropy`` (Song & Mittal) ``-(1-p_y) log p_y - sum_{c!=y} p_c log(1-p_c)``; ``phi`` the
    logit-scaled confidence ``log(p_y / (1 - p_y)) = z_y - log sum_{c!=y} exp z_c`` of LiRA.
    """
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in SCORE_KINDS]
    if unknown or not kinds:
        raise InputError(f"unknown score kind(s) {unknown or kinds}; choose from {', '.join(SCORE_KINDS)}")
    rows = Rows(X, y, ids, chunk_rows=chunk_rows)
    if len(rows) == 0:
        return {k: np.zeros(0) for k in kinds}
    table = rows.map_reduce(lambda Xc, yc: _chunk_scores(model, theta, Xc, yc, kinds),
                            reduce=lambda parts: torch.cat(parts))
    table = table.numpy()
    return {k: np.ascontiguousarray(table[:, i]) for i, k in enumerate(kinds)}


# ------------------------------------------------------------------------------ confidence intervals
def _z(confidence: float) -> float:
    # imported here: scipy.stats takes ~1 s to load and only the attack statistics need it
    from scipy.stats import norm

    if not 0 < confidence < 1:
        raise InputError(f"confidence level must lie in (0, 1), got {confidence}")
    return float(norm.ppf(0.5 + confidence / 2))


def auc_confidence_interval(labels: np.ndarray, scores: np.ndarray, confidence: float = 0.95) -> dict:
    """ROC AUC with DeLong's standard error and a normal ``confidence`` interval (clipped to [0, 1]).

    With m positives X and n negatives Y, ``AUC = (1/mn) sum_ij psi(X_i, Y_j)``, psi = 1 for
    ``X > Y``, 1/2 for ties. DeLong's structural components ``V10_i = (1/n) sum_j psi(X_i, Y_j)``
    and ``V01_j = (1/m) sum_i psi(X_i, Y_j)`` give ``Var(AUC) = s10/m + s01/n`` (sample variances).
    Computed with mid-ranks in O((m+n) log(m+n)).
    """
    # imported here: scipy.stats takes ~1 s to load and only the attack statistics need it
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    m, n = int(labels.sum()), int((~labels).sum())
    if m == 0 or n == 0:
        raise InputError(f"an AUC needs positives and negatives (got {m} and {n})")
    pos, neg = scores[labels], scores[~labels]
    combined = rankdata(np.concatenate([pos, neg]))
    rank_pos, rank_neg = combined[:m], combined[m:]
    v10 = (rank_pos - rankdata(pos)) / n            # share of negatives below each positive (ties 1/2)
    v01 = 1.0 - (rank_neg - rankdata(neg)) / m      # share of positives above each negative
    auc = float(v10.mean())
    var = (v10.var(ddof=1) / m if m > 1 else 0.0) + (v01.var(ddof=1) / n if n > 1 else 0.0)
    se = float(np.sqrt(max(var, 0.0)))
    z = _z(confidence)
    return {"auc": auc, "se": se, "ci": [max(0.0, auc - z * se), min(1.0, auc + z * se)],
            "n_positive": m, "n_negative": n}


def proportion_confidence_interval(successes: int, trials: int, confidence: float = 0.95) -> list[float]:
    """Exact (Clopper-Pearson) ``confidence`` interval of a binomial proportion."""
    # imported here: scipy.stats takes ~1 s to load and only the attack statistics need it
    from scipy.stats import binomtest

    if trials <= 0:
        return [float("nan"), float("nan")]
    ci = binomtest(int(successes), int(trials)).proportion_ci(confidence_level=confidence, method="exact")
    return [float(ci.low), float(ci.high)]


# ------------------------------------------------------------------------------------------ attacks
def _balanced_subsample(n_members: int, n_nonmembers: int, rng: np.random.Generator):
    k = min(n_members, n_nonmembers)
    take_m = np.sort(rng.choice(n_members, k, replace=False)) if n_members > k else np.arange(n_members)
    take_n = np.sort(rng.choice(n_nonmembers, k, replace=False)) if n_nonmembers > k else np.arange(n_nonmembers)
    return take_m, take_n


def loss_attack(member_losses: np.ndarray, nonmember_losses: np.ndarray, *, folds: int = 5, seed: int = 0,
                confidence: float = 0.95) -> dict:
    """Population loss attack: cross-validated logistic regression on ``log(loss + 1e-12)``.

    The larger group is subsampled (seeded) to the size of the smaller one, so a blind attacker
    scores AUC 1/2 and balanced accuracy 1/2. Returns ``auc`` (of the out-of-fold member
    probabilities) with its DeLong ``auc_ci``, ``balanced_accuracy`` (threshold 1/2) with a normal
    ``balanced_accuracy_ci``, the group sizes used and ``folds``.
    """
    # imported here: scikit-learn takes ~2 s to load and only this attack needs it
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    member_losses = np.asarray(member_losses, dtype=np.float64).ravel()
    nonmember_losses = np.asarray(nonmember_losses, dtype=np.float64).ravel()
    if not (np.isfinite(member_losses).all() and np.isfinite(nonmember_losses).all()):
        raise InputError("per-sample losses must be finite")
    if (member_losses < 0).any() or (nonmember_losses < 0).any():
        raise InputError("per-sample losses must be non-negative")
    if int(folds) < 2:
        raise InputError(f"the loss attack needs at least 2 cross-validation folds, got {folds}")
    rng = np.random.default_rng([int(seed), 1])
    take_m, take_n = _balanced_subsample(len(member_losses), len(nonmember_losses), rng)
    k = len(take_m)
    if k < folds:
        raise InputError(f"the loss attack needs at least {folds} members and {folds} non-members "
                         f"(one per fold); got {len(member_losses)} and {len(nonmember_losses)}")
    losses = np.concatenate([member_losses[take_m], nonmember_losses[take_n]])
    labels = np.concatenate([np.ones(k, dtype=np.int64), np.zeros(k, dtype=np.int64)])
    features = np.log(losses + LOSS_EPS)[:, None]
    cv = StratifiedKFold(n_splits=int(folds), shuffle=True, random_state=int(seed))
    clf = make_pipeline(StandardScaler(), LogisticRegression())
    proba = cross_val_predict(clf, features, labels, cv=cv, method="predict_proba")[:, 1]
    auc = auc_confidence_interval(labels, proba, confidence)
    predicted = (proba >= 0.5).astype(np.int64)
    tpr = float((predicted[labels == 1] == 1).mean())
    tnr = float((predicted[labels == 0] == 0).mean())
    ba = float(balanced_accuracy_score(labels, predicted))
    se = 0.5 * np.sqrt(tpr * (1 - tpr) / k + tnr * (1 - tnr) / k)
    z = _z(confidence)
    return {"auc": auc["auc"], "auc_ci": auc["ci"], "auc_se": auc["se"], "balanced_accuracy": ba,
            "balanced_accuracy_ci": [max(0.0, ba - z * se), min(1.0, ba + z * se)],
            "n_members": k, "n_nonmembers": k, "folds": int(folds)}


def _as_features(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[:, None] if values.ndim == 1 else values


def svc_mia_efficacy(shadow_members: np.ndarray, shadow_nonmembers: np.ndarray, target: np.ndarray, *,
                     C: float = 3.0, gamma="auto", kernel: str = "rbf", confidence: float = 0.95) -> dict:
    """SalUn's MIA-efficacy: fit ``SVC(C, gamma, kernel)`` on shadow members (label 1) vs shadow
    non-members (label 0), predict the ``target`` rows; efficacy = share predicted non-member.

    Arrays are features per row, shape (n,) or (n, k). Returns ``efficacy`` with its exact
    binomial ``efficacy_ci``, ``n_target``, and ``shadow_nonmember_rate``: the share of shadow
    non-members the fitted SVC calls non-member (in-sample; what efficacy looks like for rows that
    are surely unseen).
    """
    from sklearn.svm import SVC  # imported here: scikit-learn takes ~2 s to load and only this attack needs it

    members, nonmembers, target = _as_features(shadow_members), _as_features(shadow_nonmembers), _as_features(target)
    if len(members) == 0 or len(nonmembers) == 0 or len(target) == 0:
        raise InputError(f"MIA-efficacy needs shadow members, shadow non-members and target rows "
                         f"(got {len(members)}, {len(nonmembers)}, {len(target)})")
    if not (members.shape[1] == nonmembers.shape[1] == target.shape[1]):
        raise InputError("shadow and target features must have the same number of columns")
    for name, array in (("shadow members", members), ("shadow non-members", nonmembers), ("target", target)):
        if not np.isfinite(array).all():
            raise InputError(f"{name}: features must be finite")
    X = np.concatenate([members, nonmembers])
    labels = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    clf = SVC(C=C, gamma=gamma, kernel=kernel)
    clf.fit(X, labels)
    nonmember_target = int((clf.predict(target) == 0).sum())
    return {
        "efficacy": nonmember_target / len(target),
        "efficacy_ci": proportion_confidence_interval(nonmember_target, len(target), confidence),
        "n_target": int(len(target)),
        "shadow_nonmember_rate": float((clf.predict(nonmembers) == 0).mean()),
        "n_shadow_members": int(len(members)),
        "n_shadow_nonmembers": int(len(nonmembers)),
    }


# ------------------------------------------------------------------------------------ on a dataset
def shadow_member_ids(retained_ids: np.ndarray, n_test: int, seed: int = 0) -> np.ndarray:
    """SalUn's shadow members: as many retained rows as there are test rows (all when fewer),
    here a seeded random sample rather than SalUn's first rows (our row order may be sorted)."""
    retained_ids = np.asarray(retained_ids, dtype=np.int64)
    if len(retained_ids) <= n_test:
        return retained_ids
    rng = np.random.default_rng([int(seed), 2])
    return np.sort(rng.choice(retained_ids, n_test, replace=False))


def population_attacks(model, thetas: dict[str, torch.Tensor], dataset, forget_ids: np.ndarray, *,
                       seed: int = 0, folds: int = 5, svc_features=("confidence",), confidence: float = 0.95,
                       chunk_rows: int = DEFAULT_CHUNK_ROWS) -> dict:
    """Run the loss attack and the SVC MIA-efficacy on every model in ``thetas``.

    The same rows (forget set, test set, seeded shadow-member sample of the retained rows) and the
    same seeds are used for every model, so differences between models are differences of the
    models. Returns ``{"loss_attack": {name: ...}, "svc_mia": {feature: {name: ...}}, "rows": ...}``.
    """
    features = tuple(svc_features)
    bad = [f for f in features if f not in SVC_FEATURES]
    if bad:
        raise InputError(f"unknown SVC feature(s) {', '.join(bad)}; choose from {', '.join(SVC_FEATURES)}")
    forget_ids = np.asarray(forget_ids, dtype=np.int64)
    shadow_ids = shadow_member_ids(retained_ids(dataset.n_train, forget_ids), dataset.n_test, seed)
    kinds = ("loss",) + features
    loss_results: dict[str, dict] = {}
    svc_results: dict[str, dict] = {f: {} for f in features}
    for name, theta in thetas.items():
        on_forget = sample_scores(model, theta, dataset.X_train, dataset.y_train, forget_ids, kinds, chunk_rows)
        on_test = sample_scores(model, theta, dataset.X_test, dataset.y_test, None, kinds, chunk_rows)
        on_shadow = sample_scores(model, theta, dataset.X_train, dataset.y_train, shadow_ids, features,
                                  chunk_rows) if features else {}
        loss_results[name] = loss_attack(on_forget["loss"], on_test["loss"], folds=folds, seed=seed,
                                         confidence=confidence)
        for feature in features:
            svc_results[feature][name] = svc_mia_efficacy(on_shadow[feature], on_test[feature], on_forget[feature],
                                                          confidence=confidence)
    return {"loss_attack": loss_results, "svc_mia": svc_results,
            "rows": {"forget": int(len(forget_ids)), "test": int(dataset.n_test),
                     "shadow_members": int(len(shadow_ids))}}
