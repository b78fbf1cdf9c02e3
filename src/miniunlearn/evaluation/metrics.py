"""Model-quality and fidelity metrics, computed in bounded-memory chunks.

Every metric here compares a model ``w`` (usually an unlearned one) with the retrained model
``w_R`` -- the gold standard: the run's own configuration trained on the retained rows -- on the same rows:

* accuracy on the test rows, the retained rows R and the forgotten rows U, and the *gap*
  ``acc(w) - acc(w_R)`` on each (0 is what exact unlearning gives);
* the parameter distance ``||w - w_R||_2`` and the *relative residual*
  ``||w - w_R|| / ||w_T - w_R||`` with ``w_T`` the original model (0 = exact, 1 = nothing removed);
* the mean Kullback-Leibler divergence of the model's predictive distribution from the retrained
  one, ``mean_i KL(p_R(x_i) || p_w(x_i)) = mean_i sum_c p_R,c (log p_R,c - log p_w,c)``
  (in nats), and the *prediction agreement* ``mean_i [argmax p_w(x_i) = argmax p_R(x_i)]``,
  on the test rows and on the forgotten rows.

Rows are streamed through :class:`~miniunlearn.models.rows.Rows` (``chunk_rows`` at a time), so
memory stays bounded by a chunk's logits whatever the size of the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from miniunlearn.models.rows import DEFAULT_CHUNK_ROWS, Rows, retained_ids

__all__ = ["accuracy", "parameter_distance", "relative_residual", "compare_on_rows", "RowComparison",
           "evaluate_models"]


def accuracy(model, theta: torch.Tensor, X: np.ndarray, y: np.ndarray, ids: np.ndarray | None = None) -> float:
    """Share of rows (``ids`` of X, or all) whose arg-max prediction equals the label."""
    rows = Rows(X, y, ids)
    if len(rows) == 0:
        return float("nan")
    correct = rows.map_reduce(lambda Xc, yc: (model.predict(theta, Xc) == yc).sum())
    return float(correct) / len(rows)


def parameter_distance(theta: torch.Tensor, theta_ref: torch.Tensor) -> float:
    """``||theta - theta_ref||_2`` over all parameters (weights and biases)."""
    _check_same_shape(theta, theta_ref)
    return float(torch.linalg.vector_norm(theta.to(torch.float64) - theta_ref.to(torch.float64)))


def relative_residual(theta: torch.Tensor, theta_retrained: torch.Tensor, theta_original: torch.Tensor) -> float:
    """``||w - w_R|| / ||w_T - w_R||``: the share of the deletion's effect still left in ``w``.

    0 means ``w`` is the retrained model, 1 that ``w`` is as far from it as the original model.
    ``nan`` when ``w_T == w_R`` (the deletion changed nothing, so no share is defined).
    """
    denominator = parameter_distance(theta_original, theta_retrained)
    if denominator == 0.0:
        return float("nan")
    return parameter_distance(theta, theta_retrained) / denominator


@dataclass
class RowComparison:
    """Per-model sums over one set of rows; read the means through the properties."""

    n_rows: int
    correct: dict[str, int]
    kl_sum: dict[str, float]
    agree: dict[str, int]

    def accuracy(self, name: str) -> float:
        return self.correct[name] / self.n_rows if self.n_rows else float("nan")

    def mean_kl(self, name: str) -> float:
        return self.kl_sum[name] / self.n_rows if self.n_rows else float("nan")

    def agreement(self, name: str) -> float:
        return self.agree[name] / self.n_rows if self.n_rows else float("nan")


def compare_on_rows(model, thetas: dict[str, torch.Tensor], reference: str, X: np.ndarray, y: np.ndarray,
                    ids: np.ndarray | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> RowComparison:
    """One chunked pass over rows ``ids`` of ``(X, y)`` for every model in ``thetas``.

    For each model ``w`` it sums the correct predictions, ``KL(p_ref || p_w)`` and the agreement
    of arg-max predictions with the model named ``reference`` (which must be in ``thetas``).
    The reference's own KL is 0 and its agreement 1 by construction.
    """
    if reference not in thetas:
        raise ValueError(f"reference model {reference!r} is not among {sorted(thetas)}")
    rows = Rows(X, y, ids, chunk_rows=chunk_rows)
    names = list(thetas)
    if len(rows) == 0:
        zeros = {name: 0 for name in names}
        return RowComparison(0, dict(zeros), {name: 0.0 for name in names}, dict(zeros))

    def chunk_sums(Xc, yc):
        log_p = {name: torch.log_softmax(model.logits(theta, Xc), dim=1) for name, theta in thetas.items()}
        ref_log_p = log_p[reference]
        ref_pred = ref_log_p.argmax(dim=1)
        ref_p = ref_log_p.exp()
        out = []
        for name in names:
            pred = log_p[name].argmax(dim=1)
            # KL(p_R || p_w) = sum_c p_R,c (log p_R,c - log p_w,c); terms with p_R,c = 0 contribute 0
            kl = torch.where(ref_p > 0, ref_p * (ref_log_p - log_p[name]), torch.zeros_like(ref_p)).sum()
            out.append(torch.stack([(pred == yc).sum().to(torch.float64), kl.to(torch.float64),
                                    (pred == ref_pred).sum().to(torch.float64)]))
        return torch.stack(out)

    sums = rows.map_reduce(chunk_sums)
    correct = {name: int(round(float(sums[i, 0]))) for i, name in enumerate(names)}
    kl_sum = {name: max(0.0, float(sums[i, 1])) for i, name in enumerate(names)}  # KL >= 0; clip rounding
    agree = {name: int(round(float(sums[i, 2]))) for i, name in enumerate(names)}
    kl_sum[reference] = 0.0
    return RowComparison(len(rows), correct, kl_sum, agree)


def evaluate_models(model, thetas: dict[str, torch.Tensor], theta_retrained: torch.Tensor,
                    theta_original: torch.Tensor | None, dataset, forget_ids: np.ndarray,
                    chunk_rows: int = DEFAULT_CHUNK_ROWS) -> dict:
    """The fidelity report (docs/evaluation.md) for every model in ``thetas`` against the retrained model.

    Returns ``{"models": {name: metrics}, "retrained": metrics, "original": metrics | None,
    "rows": {...}}`` where each ``metrics`` dict holds ``test_accuracy``, ``retained_accuracy``,
    ``forget_accuracy``, their ``*_gap`` (model minus retrained), ``distance_to_retrained``
    (``||w - w_R||``), ``relative_residual``, ``kl_test`` / ``kl_forget`` (mean KL(p_R || p_w), nats)
    and ``agreement_test`` / ``agreement_forget``. The retrained model's own entry is the
    reference (gaps 0, distance 0, KL 0, agreement 1); the original model's entry shows what
    doing nothing would score.
    """
    reserved = {"retrained", "original"} & set(thetas)
    if reserved:
        raise ValueError(f"model name(s) {sorted(reserved)} are reserved for the reference models")
    forget_ids = np.asarray(forget_ids, dtype=np.int64)
    all_thetas = dict(thetas)
    all_thetas["retrained"] = theta_retrained
    if theta_original is not None:
        all_thetas["original"] = theta_original
    for name, theta in all_thetas.items():
        if theta.numel() != model.n_params:
            raise ValueError(f"model {name!r} has {theta.numel()} parameters, the run's model {model.n_params}")
    keep = retained_ids(dataset.n_train, forget_ids)
    on_test = compare_on_rows(model, all_thetas, "retrained", dataset.X_test, dataset.y_test, None, chunk_rows)
    on_forget = compare_on_rows(model, all_thetas, "retrained", dataset.X_train, dataset.y_train, forget_ids,
                                chunk_rows)
    on_retained = compare_on_rows(model, all_thetas, "retrained", dataset.X_train, dataset.y_train, keep,
                                  chunk_rows)

    def metrics(name: str) -> dict:
        out = {
            "test_accuracy": on_test.accuracy(name),
            "retained_accuracy": on_retained.accuracy(name),
            "forget_accuracy": on_forget.accuracy(name),
        }
        for key in ("test", "retained", "forget"):
            out[f"{key}_accuracy_gap"] = out[f"{key}_accuracy"] - {"test": on_test, "retained": on_retained,
                                                                   "forget": on_forget}[key].accuracy("retrained")
        out["distance_to_retrained"] = parameter_distance(all_thetas[name], theta_retrained)
        out["relative_residual"] = (relative_residual(all_thetas[name], theta_retrained, theta_original)
                                    if theta_original is not None else float("nan"))
        out["kl_test"] = on_test.mean_kl(name)
        out["kl_forget"] = on_forget.mean_kl(name)
        out["agreement_test"] = on_test.agreement(name)
        out["agreement_forget"] = on_forget.agreement(name)
        return out

    report = {
        "models": {name: metrics(name) for name in thetas},
        "retrained": metrics("retrained"),
        "original": metrics("original") if theta_original is not None else None,
        "rows": {"test": on_test.n_rows, "retained": on_retained.n_rows, "forget": on_forget.n_rows},
        "original_to_retrained_distance": (parameter_distance(theta_original, theta_retrained)
                                           if theta_original is not None else float("nan")),
    }
    return report


def _check_same_shape(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"parameter vectors differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
