"""The privacy benchmark: is unlearning as private as retraining, and what does a guarantee cost?

``benchmarks/privacy.py`` runs it; docs/evaluation.md says how to read it. For every dataset:

1. **models** (per family and forget ratio): a converged run (Newton-CG) and a trajectory run (SGD
   with DeltaGrad's history) are trained once; a seeded random forget set is unlearned by every
   method and by retraining. Measured: test accuracy, distance to retraining, the method's
   certificate, SalUn's MIA-efficacy and the loss attack on the forgotten rows.
2. **privacy-utility** (converged family): every certified method's model is released at each
   epsilon by the forget service's Gaussian mechanism (:func:`miniunlearn.service.release.publish`),
   ``draws`` independent noise draws each; beside it the retrained model released with the same
   sigma -- the other side of the guarantee.
3. **population U-LiRA** (:mod:`miniunlearn.experiments.ulira`, per family): shadows on random
   halves of the population, unlearned by every method at every ratio; DeltaGrad's shadows are
   SGD-trained and its reference is the retrained SGD trajectory.
4. **exactness test** (:mod:`miniunlearn.experiments.exactness`, per family and ratio): fixed-rows
   shadows scoring the real models -- does a method reproduce retraining bit for bit.

Every finished part is written into ``results.json`` at once, with the settings it was computed
with, so a rerun skips it (and recomputes it when the settings changed); population shadows are
cached one by one in the work folder. The methods compared are in
:mod:`~miniunlearn.experiments.privacy_methods`, the Markdown report in
:mod:`~miniunlearn.experiments.privacy_report`.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from miniunlearn.core.errors import InputError
from miniunlearn.core.storage import atomic_write_json, load_tensors, read_json, save_tensors
from miniunlearn.core.text import slug
from miniunlearn.evaluation.metrics import accuracy
from miniunlearn.experiments.bench import capped_population_attacks, ensure_run, resolve_dataset
from miniunlearn.experiments.exactness import MIN_EXACTNESS_SHADOWS, check_shadow_count, exactness_test
from miniunlearn.experiments.privacy_methods import MINI_TOL_OPTIONS, Family, families
from miniunlearn.experiments.privacy_report import write_privacy_report
from miniunlearn.experiments.shadows import ShadowMethod
from miniunlearn.experiments.ulira import MIN_SHADOWS, population_ulira, ratio_key
from miniunlearn.privacy import ReleaseRequest
from miniunlearn.service import forget
from miniunlearn.service.release import publish
from miniunlearn.service.requests import random_forget_ids

__all__ = ["MINI_TOL_OPTIONS", "PrivacyConfig", "QUICK", "FULL", "families", "run_privacy", "write_privacy_report"]

RESULTS_JSON = "results.json"


@dataclass
class PrivacyConfig:
    """What the privacy benchmark runs (datasets are specs or :func:`~miniunlearn.experiments.bench.resolve_dataset` aliases)."""

    datasets: list[str]
    ratios: list[float] = field(default_factory=lambda: [0.1, 0.5])
    l2: float = 1e-3
    sgd_epochs: int = 20
    shadows: int = 16
    targets: int = 500
    exactness_shadows: int = 4
    exactness_targets: int = 500
    epsilons: list[float] = field(default_factory=lambda: [0.1, 0.5, 1.0, 5.0])
    delta: float = 1e-5
    draws: int = 20
    replicates: int = 1000
    mia_max_rows: int = 2000
    workers: int = 2
    seed: int = 0

    def validate(self) -> None:
        if not self.datasets or not self.ratios:
            raise InputError("the privacy benchmark needs at least one dataset and one ratio")
        if any(not 0 < r < 1 for r in self.ratios):
            raise InputError(f"ratios are fractions in (0, 1); got {self.ratios}")
        if self.shadows:
            check_shadow_count(self.shadows, minimum=MIN_SHADOWS)
        if self.exactness_shadows:
            check_shadow_count(self.exactness_shadows, minimum=MIN_EXACTNESS_SHADOWS)
        for epsilon in self.epsilons:
            ReleaseRequest(epsilon, self.delta)
        if self.draws < 1 or self.workers < 1:
            raise InputError("draws and workers must be at least 1")


FULL = PrivacyConfig(datasets=["fashion-mnist", "covtype-shaped"])
QUICK = PrivacyConfig(datasets=["synthetic:n_samples=3000,n_features=20,n_classes=4,seed=0"], shadows=8, targets=200,
                      exactness_shadows=4, exactness_targets=200, draws=5, replicates=200, mia_max_rows=500)


# ------------------------------------------------------------------------------------------- parts
def _accuracy(run, theta) -> float:
    ds = run.dataset
    return accuracy(run.model, theta, ds.X_test, ds.y_test)


def _spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "draws": len(values)}


def _models_part(run, family: Family, ids: np.ndarray, config: PrivacyConfig, store: Path) -> dict:
    """Part 1 (and 2 for a family with certified methods) on one real forget set."""
    results = {m.label: forget(run, ids, m.method, ledger=False, **m.options) for m in family.models}
    theta_T, theta_R = run.theta(), results[family.reference].theta
    thetas = {**{label: r.theta for label, r in results.items()}, family.original: theta_T}
    unlearned = float((theta_T - theta_R).norm())  # ||w_T - w_R||: the distance unlearning covers
    attacks = capped_population_attacks(run, thetas, ids, config.mia_max_rows, config.seed)
    ds = run.dataset
    models = {}
    for label, theta in thetas.items():
        made = results.get(label)
        stats = made.stats if made else {}
        distance = float((theta - theta_R).norm())
        models[label] = {"method": made.method if made else None, "options": made.options if made else {},
                         "test_accuracy": _accuracy(run, theta),
                         "forget_accuracy": accuracy(run.model, theta, ds.X_train, ds.y_train, ids),
                         "distance_to_retrain": distance, "relative_residual": distance / unlearned if unlearned else 0.0,
                         "certificate": stats.get("certificate"), "time_s": stats.get("time_s"),
                         "mia_efficacy": attacks[label]["efficacy"], "mia_efficacy_ci": attacks[label]["efficacy_ci"],
                         "loss_attack_auc": attacks[label]["loss_auc"]}
        save_tensors(store / f"{slug(label)}.safetensors", {"theta": theta})
    part = {"n_forget": int(len(ids)), "models": models}
    if family.utility:
        part["utility"] = {label: _utility(run, results[label], results[family.reference], config)
                           for label in family.utility}
    return part


def _utility(run, result, retrained, config: PrivacyConfig) -> dict:
    """Part 2 for one method: test accuracy of its certified releases, and of retraining's with the same sigma."""
    certificate = result.stats.get("certificate")
    if not isinstance(certificate, (int, float)) or not math.isfinite(certificate):
        return {"note": f"{result.method} reports no certificate yet, so it cannot be released", "by_epsilon": {}}
    by_epsilon = {}
    for epsilon in config.epsilons:
        request = ReleaseRequest(epsilon, config.delta)
        releases = [publish(run, result, request) for _ in range(config.draws)]
        record = releases[0].stats["release"]
        same_sigma = ReleaseRequest(epsilon, config.delta, sensitivity=record["sensitivity"])
        references = [publish(run, retrained, same_sigma) for _ in range(config.draws)]
        by_epsilon[f"{epsilon:g}"] = {
            "sigma": record["sigma"], "sensitivity": record["sensitivity"], "mechanism": record["mechanism"],
            "test_accuracy": _spread([_accuracy(run, r.theta) for r in releases]),
            "retrain_test_accuracy": _spread([_accuracy(run, r.theta) for r in references])}
    return {"certificate": float(certificate), "exact_test_accuracy": _accuracy(run, result.theta),
            "retrain_exact_test_accuracy": _accuracy(run, retrained.theta), "delta": config.delta,
            "by_epsilon": by_epsilon}


def _exactness_part(run, family: Family, ids: np.ndarray, config: PrivacyConfig, store: Path, tmp: Path,
                    progress) -> dict:
    """Part 4: the fixed-rows test of every method of the family, scoring the real models."""
    labels = [*family.ulira, family.original]
    thetas = {label: load_tensors(store / f"{slug(label)}.safetensors", "stored model")[0]["theta"]
              for label in labels}
    by_label = {m.label: m for m in family.models}
    methods = [by_label[label] for label in family.ulira] + [ShadowMethod(family.original, None)]
    pairs = {m.label: [m.label] + ([family.reference] if m.label != family.reference else []) for m in methods}
    report = exactness_test(run, ids, thetas, methods, pairs=pairs, n_shadows=config.exactness_shadows,
                            max_targets=config.exactness_targets, workers=config.workers, threads=1, seed=config.seed,
                            tmp_dir=tmp, save_scores=False, progress=progress)
    out = {}
    for m in methods:
        targets = report["attacks"][m.label]["targets"]
        mine = targets[m.label]["online"]
        out[m.label] = {"auc": mine["auc"], "auc_ci": mine["auc_ci"], "tpr_at_fpr": mine["tpr_at_fpr"],
                        "reference_auc": targets.get(family.reference, targets[m.label])["online"]["auc"]}
    return {"protocol": report["protocol"], "methods": out, "time": report["time"]}


def _ulira_part(run, family: Family, config: PrivacyConfig, cache: Path, tmp: Path, plots: Path, title: str,
                progress) -> dict:
    """Part 3: population U-LiRA of every method of the family at every ratio."""
    by_label = {m.label: m for m in family.models}
    methods = [by_label[label] for label in family.ulira] + [ShadowMethod(family.original, None)]
    return population_ulira(run, config.ratios, methods, n_shadows=config.shadows, n_targets=config.targets,
                            replicates=config.replicates, seed=config.seed, workers=config.workers, threads=1,
                            tmp_dir=tmp, cache_dir=cache, out_dir=plots, reference=family.reference, title=title,
                            progress=progress)


# ------------------------------------------------------------------------------------------- driver
def _settings(config: PrivacyConfig, kind: str, family: Family) -> dict:
    """What a part's numbers depend on: a part computed with other settings is recomputed."""
    common = {"l2": config.l2, "sgd_epochs": config.sgd_epochs, "seed": config.seed,
              "methods": [[m.label, m.method, m.options] for m in family.models]}
    if kind == "models":
        return {**common, "mia_max_rows": config.mia_max_rows, "epsilons": config.epsilons, "delta": config.delta,
                "draws": config.draws}
    if kind == "exactness":
        return {**common, "shadows": config.exactness_shadows, "targets": config.exactness_targets}
    return {**common, "shadows": config.shadows, "targets": config.targets, "replicates": config.replicates,
            "ratios": config.ratios}


def _shadow_progress(log, what: str, total: int):
    start, done = time.perf_counter(), [0]

    def advance(amount=1, **_):
        done[0] += amount
        elapsed = time.perf_counter() - start
        left = elapsed / done[0] * (total - done[0])
        log(f"{what}: shadow {done[0]}/{total} done ({elapsed:.0f} s; about {left:.0f} s left)")

    return advance


def run_privacy(config: PrivacyConfig, out: str | Path, work: str | Path, log=print, command: str = "",
                fresh: bool = False, provenance: dict | None = None) -> dict:
    """Run (or resume) the benchmark: results into ``out/results.json`` and ``out/report.md``, runs
    and caches into ``work``. Returns the results.

    Finished parts and cached shadows are reused when their settings match; they do not know the
    code that made them, so after a change of a method pass ``fresh=True``: every part of the
    configured datasets is recomputed and their shadow caches are emptied (trained runs are kept).
    """
    config.validate()
    out, work = Path(out), Path(work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS_JSON
    results = read_json(path, RESULTS_JSON) if path.is_file() else {"datasets": {}}
    if provenance:
        results["provenance"] = provenance
    results["config"] = dataclasses.asdict(config)
    results["mini_tol_options"] = MINI_TOL_OPTIONS
    results["command"] = command

    def save():
        atomic_write_json(path, results)
        write_privacy_report(results, out)

    for name in config.datasets:
        spec, label = resolve_dataset(name)
        entry = results["datasets"].setdefault(label, {"spec": spec, "parts": {}})
        entry["spec"] = spec
        entry["command"] = command
        tag = slug(label)
        if fresh:
            entry["parts"] = {}
            for cache in (work / tag).glob("*/population-shadows"):
                for stale in cache.glob("shadow_*"):
                    stale.unlink()
        for family_name, family in families().items():
            run = None
            parts = [("models", r) for r in config.ratios] + [("ulira", None)] * bool(config.shadows) + \
                    [("exactness", r) for r in config.ratios] * bool(config.exactness_shadows)
            for kind, ratio in parts:
                key = f"{kind}/{family_name}" + ("" if ratio is None else f"/{ratio_key(ratio)}")
                settings = _settings(config, kind, family)
                done = entry["parts"].get(key)
                if done is not None and done.get("settings") == settings:
                    continue
                if run is None:
                    run = ensure_run(work, label, spec, config.l2, family.mode, config.sgd_epochs)
                    entry.setdefault("runs", {})[family_name] = {
                        "n_train": run.n_train, "n_test": run.dataset.n_test, "n_features": run.model.n_features,
                        "n_classes": run.model.n_classes, "synthetic": bool(run.dataset.synthetic),
                        "config": run.config, "test_accuracy": run.meta["metrics"]["test_accuracy"],
                        "train_time_s": run.meta["training"].get("time_s")}
                log(f"{label}: {key} ...")
                start = time.perf_counter()
                store = work / tag / family_name / f"models-r{ratio_key(ratio)}" if ratio is not None else None
                tmp = work / "tmp"
                tmp.mkdir(parents=True, exist_ok=True)
                if kind == "models":
                    ids = random_forget_ids(run.n_train, ratio, config.seed)
                    store.mkdir(parents=True, exist_ok=True)
                    value = _models_part(run, family, ids, config, store)
                elif kind == "exactness":
                    ids = random_forget_ids(run.n_train, ratio, config.seed)
                    progress = _shadow_progress(log, f"{label} {key}", config.exactness_shadows)
                    value = _exactness_part(run, family, ids, config, store, tmp, progress)
                else:
                    progress = _shadow_progress(log, f"{label} {key}", config.shadows)
                    value = _ulira_part(run, family, config, work / tag / family_name / "population-shadows", tmp,
                                        out / tag / family_name, f"{label}, {family_name}", progress)
                    for by_ratio in value["ratios"].values():  # plots linked relative to the report
                        by_ratio["roc_png"] = Path(by_ratio["roc_png"]).relative_to(out).as_posix()
                entry["parts"][key] = {"settings": settings, "wall_s": time.perf_counter() - start, **value}
                log(f"{label}: {key} done in {time.perf_counter() - start:.0f} s")
                save()
    save()
    return results
