"""Per-example U-LiRA: a likelihood-ratio membership attack tailored to every forgotten example.

After Hayes, Shumailov, Triantafillou, Khalifa & Papernot, "Inexact Unlearning Needs More Careful
Evaluations to Avoid a False Sense of Privacy" (2024), which adapts LiRA (Carlini, Chien, Nasr,
Song, Terzis & Tramer, "Membership Inference Attacks From First Principles", IEEE S&P 2022) to
unlearning. The question it asks of an unlearned model: for an example x, does the model look
like one that was *trained on x and then unlearned it* with the method under test, or like one
that *never saw x*? Perfect unlearning makes the two indistinguishable (AUC 1/2, TPR = FPR).

Protocol (the exact one; docs/evaluation.md explains it with an example)
-----------------------------------------------------------------------
Given a run trained on the n training rows and a forget set U (|U| = r):

1. **Slots.** Draw ``m = min(r, n_test, max_targets)`` forgotten rows ``u_1..u_m`` (the *slots*)
   and ``m`` test rows ``v_1..v_m`` (their *substitutes*); the target examples are the 2m rows
   ``u_1..u_m, v_1..v_m``. Each pair (u_j, v_j) is two independent draws from the same
   distribution, so which of them the real model saw is, to an attacker, a fair coin.
2. **Shadows.** N shadow models (N even, default 16) in N/2 complementary pairs: for pair p a
   random half H_p of the slots; shadow 2p holds ``u_j`` in slot j for j in H_p and ``v_j``
   otherwise, shadow 2p+1 the opposite. So every target example is in exactly N/2 shadows and
   every shadow holds about m/2 of the u's. A shadow's training set is the run's own training set
   with slot j's row replaced by the slot's choice -- the same n rows, the same row positions
   (so trajectory/SGD runs replay the same batch structure), everything else identical. Each
   shadow is trained with the run's exact configuration (mode, lambda, solver, tolerance or SGD
   schedule, history profile) and then **unlearns the positions of U** -- every forgotten row
   including its m slots, so the shadow forgets r of n rows, the very ratio of the real request
   -- with the method under test and its options. For target x, the shadows that held x give
   "in-then-unlearned" samples, the others "never-in" samples. The attacker thus knows all the
   other training data: the strongest, per-example attacker; real attackers are weaker.
3. **Gaussians.** For every target x and shadow k, the logit-scaled confidence
   ``phi = log(p_y / (1 - p_y))`` (stable: ``z_y - logsumexp_{c != y} z_c``). Fit
   ``N(mu_in, s_in^2)`` to the in-samples and ``N(mu_out, s_out^2)`` to the out-samples of x
   (maximum likelihood: mean and ``ddof=0`` variance; ``variance="global"`` replaces each
   variance by its mean over examples, Carlini et al.'s advice for few shadows; variances are
   floored at ``min_variance``).
4. **Scores.** For a target model f: ``phi_x = phi(f; x)`` and
   online:  ``Lambda(x) = log N(phi_x; mu_in, s_in^2) - log N(phi_x; mu_out, s_out^2)``;
   offline: ``Lambda(x) = log Phi((phi_x - mu_out) / s_out)`` (one-sided, only never-in shadows;
   Carlini et al.'s offline test). Larger = "was in".
5. **Metrics.** The target models' labels: ``u_j`` -> 1 (requested for deletion), ``v_j`` -> 0.
   ROC over the 2m scores: AUC (DeLong interval), TPR at 1 % and 0.1 % FPR (the largest TPR whose
   FPR does not exceed the level; resolution 1/m), and a log-log ROC plot.

Read the numbers side by side: the **retrained** model (u's genuinely never seen: AUC ~ 1/2 up to
the printed interval), the **original** model (u's trained on: the attack's power), and the
**unlearned** model (ideally the retrained value). An AUC clearly *below* 1/2 is signal too: the
forgotten rows look *less* familiar than never-seen ones (over-unlearning, e.g. gradient ascent).
In converged mode an exact method makes every unlearned shadow the same model, so the in and out
Gaussians coincide and the attack is blind by construction, as it should be.

Shadow trainings run in separate processes (``spawn``) that receive the dataset spec, its
fingerprint and index arrays -- never pickled files -- and reload the data themselves.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from miniunlearn.core.errors import DataError, InputError
from miniunlearn.core.progress import disabled as progress_disabled
from miniunlearn.core.storage import atomic_write
from miniunlearn.core.text import slug
from miniunlearn.data import load_dataset
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
from miniunlearn.methods import make_method
from miniunlearn.runs import train
from miniunlearn.service import forget
from miniunlearn.training import SGDSchedule

__all__ = ["DEFAULT_SHADOWS", "ShadowPlan", "ShadowMethod", "make_plan", "run_shadows", "check_shadow_count",
           "check_methods", "ulira_audit", "TRAINED"]

DEFAULT_SHADOWS = 16
TRAINED = "trained"          # the label of the shadows' scores before unlearning (classic LiRA)
MIN_SHADOWS = 4              # two in- and two out-samples per example


# --------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class ShadowPlan:
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
        return {"n_shadows": self.n_shadows, "n_slots": self.n_slots, "n_targets": 2 * self.n_slots,
                "n_forget": int(len(self.forget_ids)), "n_train": self.n_train,
                "forget_ratio": len(self.forget_ids) / self.n_train, "seed": self.seed,
                "in_per_example": self.n_shadows // 2}


def check_shadow_count(n_shadows, minimum: int = 2) -> None:
    """Shadows come in complementary pairs: an even number, at least ``minimum`` (the attack itself
    needs 4: two in- and two out-samples per example to estimate a variance)."""
    if (isinstance(n_shadows, bool) or not isinstance(n_shadows, (int, np.integer)) or n_shadows < minimum
            or n_shadows % 2):
        raise InputError(f"U-LiRA needs an even number of shadow models, at least {minimum} (got {n_shadows})")


def make_plan(n_train: int, n_test: int, forget_ids: np.ndarray, n_shadows: int = DEFAULT_SHADOWS,
              max_targets: int | None = None, seed: int = 0) -> ShadowPlan:
    """Draw the slots, their substitutes and the balanced shadow membership (seeded)."""
    forget_ids = np.unique(np.asarray(forget_ids, dtype=np.int64))
    check_shadow_count(n_shadows)
    if len(forget_ids) == 0:
        raise InputError("U-LiRA needs a non-empty forget set")
    if n_test < 1:
        raise InputError("U-LiRA needs test rows: they are the never-seen substitutes of the forgotten rows")
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
    return ShadowPlan(int(n_train), forget_ids, slots, substitutes, keep, int(seed))


@dataclass(frozen=True)
class ShadowMethod:
    """An unlearning method applied to the shadows: ``label`` names the attack, ``method`` is a
    registry name (``None``: no unlearning, i.e. classic LiRA on the trained shadows)."""

    label: str
    method: str | None
    options: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------- shadow workers
_DATASETS: dict[tuple[str, str], object] = {}


def _dataset(spec: str, fingerprint: str):
    key = (spec, fingerprint)
    if key not in _DATASETS:
        dataset = load_dataset(spec)
        if dataset.fingerprint() != fingerprint:
            raise DataError(f"the data for {spec!r} no longer matches the run (fingerprint mismatch); "
                            "shadow models would train on other data")
        _DATASETS.clear()  # one dataset per worker process at a time
        _DATASETS[key] = dataset
    return _DATASETS[key]


def _init_worker(threads: int) -> None:
    os.environ["MINIUNLEARN_NO_PROGRESS"] = "1"
    torch.set_num_threads(max(1, int(threads)))


def _training_kwargs(run) -> dict:
    """The keyword arguments of :func:`miniunlearn.training.train` that reproduce ``run``'s configuration."""
    config, history = run.config, run.meta.get("history", {})
    kwargs = {"l2": run.l2, "mode": config["mode"], "chunk_rows": int(config.get("chunk_rows", 8192))}
    if config["mode"] == "converged":
        kwargs.update(tol=float(config["tol"]), max_iter=int(config["max_iter"]))
        mini = history.get("mini")
        if mini:
            kwargs.update(profile=mini["profile"], curvature_dtype=mini.get("curvature_dtype", "float64"))
    else:
        kwargs.update(sgd=dict(config["sgd"]), deltagrad_history="deltagrad" in history)
    return kwargs


def _shadow_job(job: dict) -> dict:
    """Train shadow ``job["k"]``, unlearn the forget set with every method, return the targets' phi."""
    import tempfile


    base = _dataset(job["spec"], job["fingerprint"])
    plan: ShadowPlan = ShadowPlan(job["n_train"], job["forget_ids"], job["slots"], job["substitutes"],
                                  job["keep"][None, :], 0)
    X, y = plan.shadow_training_set(base, 0)
    shadow = dataclasses.replace(base, X_train=X, y_train=y, spec=f"{base.spec}#shadow{job['k']}", _fingerprint=[])
    X_t, y_t = plan.target_rows(base)
    kwargs = dict(job["train"])
    sgd = kwargs.pop("sgd", None)
    if sgd is not None:
        kwargs["sgd_schedule"] = SGDSchedule.from_dict(sgd)
    l2 = kwargs.pop("l2")
    phi: dict[str, np.ndarray] = {}
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="miniunlearn-shadow-", dir=job.get("tmp_dir")) as tmp, progress_disabled():
        start, cpu = time.perf_counter(), time.process_time()
        run = train(shadow, l2, Path(tmp) / "run", **kwargs)
        times["train_s"], times["train_cpu_s"] = time.perf_counter() - start, time.process_time() - cpu
        run.use_dataset(shadow)  # shadow data has no loadable spec
        phi[TRAINED] = logit_confidence(run.model, run.theta(), X_t, y_t)
        for label, method, options in job["methods"]:
            if method is None:
                continue
            start, cpu = time.perf_counter(), time.process_time()
            result = forget(run, job["forget_ids"], method=method, **options)
            times[f"{label}_s"], times[f"{label}_cpu_s"] = time.perf_counter() - start, time.process_time() - cpu
            phi[label] = logit_confidence(run.model, result.theta, X_t, y_t)
    return {"k": job["k"], "phi": phi, "times": times}


@dataclass
class ShadowScores:
    """phi of the 2m target examples in every shadow: ``phi[label]`` is (N, 2m)."""

    plan: ShadowPlan
    phi: dict[str, np.ndarray]
    times: list[dict]
    wall_s: float


def run_shadows(run, plan: ShadowPlan, methods: list[ShadowMethod], *, workers: int = 1,
                threads: int | None = None, tmp_dir: str | Path | None = None, progress=None) -> ShadowScores:
    """Train and unlearn the plan's N shadows, ``workers`` at a time in spawned processes.

    ``workers=1`` runs them in this process (no start-up cost; methods registered at run time
    are visible). Each worker uses ``threads`` torch threads (default: this process's setting for
    ``workers=1``, else the CPUs divided among the workers). ``progress(amount)`` is called once
    per finished shadow.
    """
    check_methods(methods, run)
    workers = int(workers)
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    workers = min(workers, plan.n_shadows)
    if threads is None:
        threads = (torch.get_num_threads() if workers == 1 else
                   max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
                       // workers))
    dataset = run.dataset
    base_job = {"spec": run.meta["dataset"]["spec"], "fingerprint": run.fingerprint, "n_train": plan.n_train,
                "forget_ids": plan.forget_ids, "slots": plan.slots, "substitutes": plan.substitutes,
                "train": _training_kwargs(run), "tmp_dir": None if tmp_dir is None else str(tmp_dir),
                "methods": [(m.label, m.method, dict(m.options)) for m in methods]}
    jobs = [{**base_job, "k": k, "keep": plan.keep[k]} for k in range(plan.n_shadows)]
    advance = progress or (lambda amount=1, **_: None)
    results: list[dict] = []
    start = time.perf_counter()
    if workers == 1:
        _DATASETS[(base_job["spec"], base_job["fingerprint"])] = dataset
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for job in jobs:
                results.append(_shadow_job(job))
                advance(1)
        finally:
            torch.set_num_threads(previous_threads)
            _DATASETS.clear()
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            futures = [pool.submit(_shadow_job, job) for job in jobs]
            try:
                for future in as_completed(futures):
                    results.append(future.result())
                    advance(1)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    wall = time.perf_counter() - start
    results.sort(key=lambda r: r["k"])
    labels = [TRAINED] + [m.label for m in methods if m.method is not None]
    phi = {label: np.stack([r["phi"][label] for r in results]) for label in labels}
    for m in methods:
        if m.method is None:
            phi[m.label] = phi[TRAINED]
    return ShadowScores(plan, phi, [r["times"] for r in results], wall)


def check_methods(methods: list[ShadowMethod], run=None) -> None:
    """Fail before any training on duplicate labels, unknown methods or options, or a method that
    cannot unlearn runs of this training mode."""

    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise InputError(f"shadow method labels must be unique, got {labels}")
    for m in methods:
        if not m.label or (m.label == TRAINED and m.method is not None):
            raise InputError(f"invalid shadow method label {m.label!r}")
        if m.method is not None:
            algorithm = make_method(m.method, **m.options)
            if run is not None:
                algorithm.check_run(run)


# ---------------------------------------------------------------------------------------- the audit
def ulira_audit(run, forget_ids: np.ndarray, targets: dict[str, torch.Tensor], methods: list[ShadowMethod], *,
                pairs: dict[str, list[str]] | None = None, n_shadows: int = DEFAULT_SHADOWS,
                max_targets: int | None = None, variance: str = "per_example", workers: int = 1,
                threads: int | None = None, seed: int = 0, out_dir: str | Path | None = None,
                tmp_dir: str | Path | None = None, confidence: float = 0.95, save_scores: bool = True,
                progress=None) -> dict:
    """Run U-LiRA for every shadow method and score the target models side by side.

    ``targets`` maps names to parameter vectors of the run's model (the unlearned, retrained and
    original models); ``pairs[label]`` lists the targets attacked with method ``label``'s shadows
    (default: all). With ``out_dir``, writes ``ulira_<label>.png`` (log-log ROC, online variant)
    and, if ``save_scores``, ``ulira_scores.npz`` (plan, shadow and target phi; plain arrays, no pickle).
    Returns a JSON-ready dict (see docs/evaluation.md).
    """
    if variance not in VARIANCES:
        raise InputError(f"variance must be one of {', '.join(VARIANCES)}, got {variance!r}")
    check_shadow_count(n_shadows, minimum=MIN_SHADOWS)
    dataset = run.dataset
    pairs = {m.label: list(targets) for m in methods} if pairs is None else pairs
    for label, names in pairs.items():
        if label not in {m.label for m in methods}:
            raise InputError(f"no shadow method labelled {label!r}")
        missing = [n for n in names if n not in targets]
        if missing:
            raise InputError(f"unknown target model(s) {missing} for {label!r}")
    plan = make_plan(run.n_train, dataset.n_test, forget_ids, n_shadows, max_targets, seed)
    shadows = run_shadows(run, plan, methods, workers=workers, threads=threads, tmp_dir=tmp_dir, progress=progress)
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
            png = Path(out_dir) / f"ulira_{slug(m.label)}.png"
            what = "no unlearning (LiRA)" if m.method is None else f"shadows unlearned with {m.method}"
            plot_roc(curves, png, f"U-LiRA online, {what}\n{plan.n_shadows} shadows, {2 * plan.n_slots} targets",
                     plan.n_slots)
            attack["roc_png"] = str(png)
        attacks[m.label] = attack
    if out_dir is not None and save_scores:
        _save_scores(Path(out_dir) / "ulira_scores.npz", plan, shadows, target_phi)
    per_shadow = {key: float(np.mean([t[key] for t in shadows.times])) for key in shadows.times[0]}
    return {"protocol": {**plan.describe(), "variance": variance, "score": "phi = log(p_y / (1 - p_y))",
                         "shadow_training": _training_kwargs(run)},
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


def _save_scores(path: Path, plan: ShadowPlan, shadows: ShadowScores, target_phi: dict[str, np.ndarray]) -> None:
    arrays = {"keep": plan.keep, "slots": plan.slots, "substitutes": plan.substitutes, "labels": plan.labels,
              "member": plan.member}
    arrays.update({f"shadow_phi__{slug(k)}": v for k, v in shadows.phi.items()})
    arrays.update({f"target_phi__{slug(k)}": v for k, v in target_phi.items()})

    def write(tmp):
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    atomic_write(path, write)
