"""The exactness test: does an unlearning method reproduce retraining, bit for bit?

A likelihood-ratio attack (LiRA, Carlini et al., IEEE S&P 2022) run on **fixed rows**: every
shadow model holds the run's own training rows, with a few forgotten rows swapped for unseen
test rows, and is trained deterministically. The only thing that varies between shadows is
therefore which of the swapped rows each one held -- and, after unlearning, the method's own
error. A method that lands exactly where retraining lands gives identical shadows whichever rows
they held: the in and out Gaussians coincide and the attack is blind (AUC 1/2 with a zero-width
interval, by construction). Any deterministic residual, however small, separates them, because
the per-example Gaussians shrink with it: the attack is *scale-free*. A 10,000 times smaller
error scores the same AUC.

So this is a test of exactness, **not a privacy figure**: it cannot tell a harmless 1e-9 residual
from a leaking one. Privacy is measured by the population U-LiRA of
:mod:`miniunlearn.experiments.ulira` (docs/evaluation.md explains both).

Protocol (the exact one)
------------------------
Given a run trained on the n training rows and a forget set U (|U| = r):

1. **Slots.** Draw ``m = min(r, n_test, max_targets)`` forgotten rows ``u_1..u_m`` (the *slots*)
   and ``m`` test rows ``v_1..v_m`` (their *substitutes*); the target examples are the 2m rows
   ``u_1..u_m, v_1..v_m``.
2. **Shadows.** N shadow models (N even) in N/2 complementary pairs: for pair p a random half
   H_p of the slots; shadow 2p holds ``u_j`` in slot j for j in H_p and ``v_j`` otherwise, shadow
   2p+1 the opposite. A shadow's training set is the run's own training set with slot j's row
   replaced by the slot's choice -- the same n rows, the same positions. Each shadow is trained
   with the run's exact configuration and then unlearns the positions of U with the method under
   test and its options.
3. **Gaussians.** phi = log(p_y / (1 - p_y)) of every target in every shadow; per example
   ``N(mu_in, s_in^2)`` and ``N(mu_out, s_out^2)`` (``variance="global"``: pooled variances).
4. **Scores** of a target model f (the real unlearned, retrained and original models): online
   log-likelihood ratio, or offline ``log Phi((phi_x - mu_out) / s_out)``.
5. **Metrics.** Labels: ``u_j`` -> 1, ``v_j`` -> 0. AUC (DeLong interval), TPR at 1 % and 0.1 %
   FPR, a log-log ROC plot.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from miniunlearn.core.errors import InputError
from miniunlearn.core.text import slug
from miniunlearn.evaluation.lira import (
    VARIANCES,
    GaussianFit,
    fit_gaussians,
    lira_scores,
    logit_confidence,
    roc_metrics,
)
from miniunlearn.evaluation.mia import sample_scores
from miniunlearn.experiments.plots import plot_roc
from miniunlearn.experiments.shadows import (
    TRAINED,
    ShadowMethod,
    check_methods,
    run_jobs,
    save_arrays,
    shadow_training_kwargs,
    train_shadow,
    unlearn_and_score,
    worker_dataset,
)

__all__ = ["DEFAULT_EXACTNESS_SHADOWS", "MIN_EXACTNESS_SHADOWS", "FixedRowsPlan", "make_fixed_rows_plan",
           "check_shadow_count", "run_fixed_rows_shadows", "exactness_test"]

DEFAULT_EXACTNESS_SHADOWS = 8
MIN_EXACTNESS_SHADOWS = 4  # two in- and two out-samples per example


# --------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class FixedRowsPlan:
    """Which rows each shadow holds (see the module docstring, steps 1-2)."""

    n_train: int
    forget_ids: np.ndarray    # (r,) sorted training-row ids that every shadow (and the target) forgets
    slots: np.ndarray         # (m,) training-row ids u_j, a subset of forget_ids
    substitutes: np.ndarray   # (m,) test-row ids v_j
    keep: np.ndarray          # (N, m) bool: shadow k holds u_j (True) or v_j (False) in slot j
    seed: int

    @property
    def n_shadows(self) -> int:
        return int(self.keep.shape[0])

    @property
    def n_slots(self) -> int:
        return int(self.keep.shape[1])

    @property
    def member(self) -> np.ndarray:
        """(N, 2m) bool: was target example e (u_1..u_m, v_1..v_m) in shadow k's training set."""
        return np.hstack([self.keep, ~self.keep])

    @property
    def labels(self) -> np.ndarray:
        """(2m,) the real models' truth: 1 for the requested rows u_j, 0 for the unseen v_j."""
        return np.concatenate([np.ones(self.n_slots, dtype=np.int64), np.zeros(self.n_slots, dtype=np.int64)])

    def target_rows(self, dataset) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels of the 2m target examples, u's first."""
        X = np.concatenate([np.asarray(dataset.X_train[self.slots], dtype=np.float64),
                            np.asarray(dataset.X_test[self.substitutes], dtype=np.float64)])
        y = np.concatenate([np.asarray(dataset.y_train[self.slots]), np.asarray(dataset.y_test[self.substitutes])])
        return X, y.astype(np.int64)

    def shadow_training_set(self, dataset, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Shadow k's n training rows: the run's rows with the slots it gives to v_j swapped."""
        X = np.array(dataset.X_train, dtype=np.float64)  # a private copy
        y = np.array(dataset.y_train, dtype=np.int64)
        swap = ~self.keep[k]
        X[self.slots[swap]] = dataset.X_test[self.substitutes[swap]]
        y[self.slots[swap]] = dataset.y_test[self.substitutes[swap]]
        return X, y

    def describe(self) -> dict:
        return {"protocol": "fixed rows (exactness test)", "n_shadows": self.n_shadows, "n_slots": self.n_slots,
                "n_targets": 2 * self.n_slots, "n_forget": int(len(self.forget_ids)), "n_train": self.n_train,
                "forget_ratio": len(self.forget_ids) / self.n_train, "seed": self.seed,
                "in_per_example": self.n_shadows // 2}


def check_shadow_count(n_shadows, minimum: int = 2) -> None:
    """Shadows come in complementary pairs: an even number, at least ``minimum``."""
    if (isinstance(n_shadows, bool) or not isinstance(n_shadows, (int, np.integer)) or n_shadows < minimum
            or n_shadows % 2):
        raise InputError(f"shadow models come in complementary pairs: an even number, at least {minimum} "
                         f"(got {n_shadows})")


def make_fixed_rows_plan(n_train: int, n_test: int, forget_ids: np.ndarray,
                         n_shadows: int = DEFAULT_EXACTNESS_SHADOWS, max_targets: int | None = None,
                         seed: int = 0) -> FixedRowsPlan:
    """Draw the slots, their substitutes and the balanced shadow membership (seeded)."""
    forget_ids = np.unique(np.asarray(forget_ids, dtype=np.int64))
    check_shadow_count(n_shadows)
    if len(forget_ids) == 0:
        raise InputError("the exactness test needs a non-empty forget set")
    if n_test < 1:
        raise InputError("the exactness test needs test rows: they are the never-seen substitutes of the "
                         "forgotten rows")
    if max_targets is not None and int(max_targets) < 1:
        raise InputError(f"max_targets must be at least 1, got {max_targets}")
    m = min(len(forget_ids), int(n_test), int(max_targets) if max_targets is not None else len(forget_ids))
    rng = np.random.default_rng([int(seed), 11])
    slots = np.sort(rng.choice(forget_ids, m, replace=False))
    substitutes = rng.choice(int(n_test), m, replace=False)
    keep = np.zeros((int(n_shadows), m), dtype=bool)
    for pair in range(int(n_shadows) // 2):
        half = rng.permutation(m) < m // 2 + (pair % 2) * (m % 2)  # alternate the odd slot out
        keep[2 * pair], keep[2 * pair + 1] = half, ~half
    return FixedRowsPlan(int(n_train), forget_ids, slots, substitutes, keep, int(seed))


# ----------------------------------------------------------------------------------- shadows
def _fixed_rows_job(job: dict) -> dict:
    """Train shadow ``job["k"]``, unlearn the forget set with every method, return the targets' phi."""
    population = worker_dataset(job["spec"], job["fingerprint"], job.get("run_dir"))
    plan = FixedRowsPlan(job["n_train"], job["forget_ids"], job["slots"], job["substitutes"], job["keep"][None, :], 0)
    X, y = plan.shadow_training_set(population, 0)
    X_t, y_t = plan.target_rows(population)
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="miniunlearn-shadow-", dir=job.get("tmp_dir")) as tmp:
        run = train_shadow(population, X, y, f"shadow{job['k']}", job["train"], Path(tmp) / "run", times)
        phi = {TRAINED: logit_confidence(run.model, run.theta(), X_t, y_t)}
        phi.update(unlearn_and_score(run, job["forget_ids"], job["methods"], X_t, y_t, times))
    return {"k": job["k"], "phi": phi, "times": times}


@dataclass
class ShadowScores:
    """phi of the 2m target examples in every shadow: ``phi[label]`` is (N, 2m)."""

    plan: FixedRowsPlan
    phi: dict[str, np.ndarray]
    times: list[dict]
    wall_s: float


def run_fixed_rows_shadows(run, plan: FixedRowsPlan, methods: list[ShadowMethod], *, workers: int = 1,
                           threads: int | None = None, tmp_dir: str | Path | None = None,
                           progress=None) -> ShadowScores:
    """Train and unlearn the plan's N shadows, ``workers`` at a time (see :func:`~miniunlearn.experiments.shadows.run_jobs`)."""
    check_methods(methods, run)
    base_job = {"spec": run.meta["dataset"]["spec"], "fingerprint": run.fingerprint,
                "run_dir": str(run.path), "n_train": plan.n_train,
                "forget_ids": plan.forget_ids, "slots": plan.slots, "substitutes": plan.substitutes,
                "train": shadow_training_kwargs(run, methods), "tmp_dir": None if tmp_dir is None else str(tmp_dir),
                "methods": [(m.label, m.method, dict(m.options)) for m in methods]}
    jobs = [{**base_job, "k": k, "keep": plan.keep[k]} for k in range(plan.n_shadows)]
    start = time.perf_counter()
    results = run_jobs(_fixed_rows_job, jobs, run.dataset, workers=workers, threads=threads, progress=progress)
    wall = time.perf_counter() - start
    labels = [TRAINED] + [m.label for m in methods if m.method is not None]
    phi = {label: np.stack([r["phi"][label] for r in results]) for label in labels}
    for m in methods:
        if m.method is None:
            phi[m.label] = phi[TRAINED]
    return ShadowScores(plan, phi, [r["times"] for r in results], wall)


# ---------------------------------------------------------------------------------------- the test
def exactness_test(run, forget_ids: np.ndarray, targets: dict[str, torch.Tensor], methods: list[ShadowMethod], *,
                   pairs: dict[str, list[str]] | None = None, n_shadows: int = DEFAULT_EXACTNESS_SHADOWS,
                   max_targets: int | None = None, variance: str = "per_example", workers: int = 1,
                   threads: int | None = None, seed: int = 0, out_dir: str | Path | None = None,
                   tmp_dir: str | Path | None = None, confidence: float = 0.95, save_scores: bool = True,
                   progress=None) -> dict:
    """Run the fixed-rows attack for every shadow method and score the target models side by side.

    ``targets`` maps names to parameter vectors of the run's model (the unlearned, retrained and
    original models); ``pairs[label]`` lists the targets attacked with method ``label``'s shadows
    (default: all). With ``out_dir``, writes ``exactness_<label>.png`` (log-log ROC, online
    variant) and, if ``save_scores``, ``exactness_scores.npz`` (plan, shadow and target phi; plain
    arrays, no pickle). Returns a JSON-ready dict (see docs/evaluation.md).
    """
    if variance not in VARIANCES:
        raise InputError(f"variance must be one of {', '.join(VARIANCES)}, got {variance!r}")
    check_shadow_count(n_shadows, minimum=MIN_EXACTNESS_SHADOWS)
    dataset = run.dataset
    pairs = {m.label: list(targets) for m in methods} if pairs is None else pairs
    for label, names in pairs.items():
        if label not in {m.label for m in methods}:
            raise InputError(f"no shadow method labelled {label!r}")
        missing = [n for n in names if n not in targets]
        if missing:
            raise InputError(f"unknown target model(s) {missing} for {label!r}")
    plan = make_fixed_rows_plan(run.n_train, dataset.n_test, forget_ids, n_shadows, max_targets, seed)
    shadows = run_fixed_rows_shadows(run, plan, methods, workers=workers, threads=threads, tmp_dir=tmp_dir,
                                     progress=progress)
    X_t, y_t = plan.target_rows(dataset)
    target_phi = {name: sample_scores(run.model, theta, X_t, y_t, None, ("phi",))["phi"]
                  for name, theta in targets.items()}
    labels = plan.labels
    member = plan.member
    attacks: dict[str, dict] = {}
    for m in methods:
        fit = fit_gaussians(shadows.phi[m.label], member, variance)
        results: dict[str, dict] = {}
        curves = {}
        for name in pairs.get(m.label, []):
            entry = {}
            for variant, online in (("online", True), ("offline", False)):
                metrics = roc_metrics(labels, lira_scores(target_phi[name], fit, online), confidence=confidence)
                roc = metrics.pop("_roc")
                if online:
                    curves[f"{name} (AUC {metrics['auc']:.3f})"] = roc
                entry[variant] = metrics
            results[name] = entry
        attack = {"method": m.method, "options": dict(m.options), "targets": results,
                  "shadow_separation": _separation(fit)}
        if out_dir is not None and curves:
            png = Path(out_dir) / f"exactness_{slug(m.label)}.png"
            what = "no unlearning" if m.method is None else f"shadows unlearned with {m.method}"
            plot_roc(curves, png, f"exactness test (fixed rows; not a privacy figure), {what}\n"
                                  f"{plan.n_shadows} shadows, {2 * plan.n_slots} targets", plan.n_slots)
            attack["roc_png"] = str(png)
        attacks[m.label] = attack
    if out_dir is not None and save_scores:
        _save_scores(Path(out_dir) / "exactness_scores.npz", plan, shadows, target_phi)
    per_shadow = {key: float(np.mean([t[key] for t in shadows.times])) for key in shadows.times[0]}
    return {"protocol": {**plan.describe(), "variance": variance, "score": "phi = log(p_y / (1 - p_y))",
                         "shadow_training": shadow_training_kwargs(run, methods)},
            "attacks": attacks,
            "time": {"shadows_wall_s": shadows.wall_s, "mean_per_shadow_s": per_shadow,
                     "workers": min(int(workers), plan.n_shadows)}}


def _separation(fit: GaussianFit) -> dict:
    """How far apart the in and out Gaussians are, median over examples: ``|mu_in - mu_out| / s_out``.

    Near 0: the shadows themselves cannot tell in from out, so no target can be attacked.
    """
    gap = np.abs(fit.mu_in - fit.mu_out) / np.sqrt(fit.var_out)
    return {"median_abs_mean_gap_over_sd_out": float(np.median(gap)),
            "median_mu_in_minus_mu_out": float(np.median(fit.mu_in - fit.mu_out))}


def _save_scores(path: Path, plan: FixedRowsPlan, shadows: ShadowScores, target_phi: dict[str, np.ndarray]) -> None:
    arrays = {"keep": plan.keep, "slots": plan.slots, "substitutes": plan.substitutes, "labels": plan.labels,
              "member": plan.member}
    arrays.update({f"shadow_phi__{slug(k)}": v for k, v in shadows.phi.items()})
    arrays.update({f"target_phi__{slug(k)}": v for k, v in target_phi.items()})
    save_arrays(path, arrays)

