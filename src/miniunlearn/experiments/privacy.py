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
cached one by one in the work folder.
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
from miniunlearn.core.storage import atomic_write_bytes, atomic_write_json, load_tensors, read_json, save_tensors
from miniunlearn.core.text import slug
from miniunlearn.evaluation.metrics import accuracy
from miniunlearn.experiments.bench import capped_population_attacks, ensure_run, resolve_dataset
from miniunlearn.experiments.exactness import MIN_EXACTNESS_SHADOWS, check_shadow_count, exactness_test
from miniunlearn.experiments.shadows import ShadowMethod
from miniunlearn.experiments.ulira import MIN_SHADOWS, population_ulira, ratio_key
from miniunlearn.privacy import ReleaseRequest
from miniunlearn.service import forget
from miniunlearn.service.release import publish
from miniunlearn.service.requests import random_forget_ids

__all__ = ["MINI_TOL_OPTIONS", "PrivacyConfig", "QUICK", "FULL", "families", "run_privacy", "write_privacy_report"]

# Mini-Unlearning at the two tolerances of the benchmark: refine until the certificate is at most
# T ||w - w_T||.
MINI_TOL_OPTIONS = {"1e-3": {"tol": 1e-3}, "1e-2": {"tol": 1e-2}}

RESULTS_JSON = "results.json"
REPORT_MD = "report.md"


def _mini_tol(tol: str) -> ShadowMethod:
    return ShadowMethod(f"mini tol {tol}", "mini", dict(MINI_TOL_OPTIONS[tol]))


@dataclass(frozen=True)
class Family:
    """Methods that unlearn one kind of run, with their reference and the model before unlearning."""

    mode: str
    reference: str                   # the label of retraining in this family
    original: str                    # the label of the trained model itself
    models: tuple[ShadowMethod, ...]  # computed on the real forget sets
    ulira: tuple[str, ...]           # labels attacked by the population U-LiRA and the exactness test
    utility: tuple[str, ...] = ()    # labels released at every epsilon


def families() -> dict[str, Family]:
    """The benchmark's methods (rebuilt on each call so that :data:`MINI_TOL_OPTIONS` is read at run time)."""
    converged = (ShadowMethod("retrain", "retrain"), ShadowMethod("mini (refine 0)", "mini", {"refine": 0}),
                 _mini_tol("1e-3"), _mini_tol("1e-2"), ShadowMethod("newton", "newton", {"certify": True}),
                 ShadowMethod("finetune", "finetune"), ShadowMethod("neggrad", "neggrad"))
    return {
        "converged": Family("converged", "retrain", "original", converged,
                            ulira=("retrain", "mini (refine 0)", "mini tol 1e-3", "newton", "finetune", "neggrad"),
                            utility=("mini tol 1e-3", "mini tol 1e-2", "newton")),
        "trajectory": Family("trajectory", "retrain (SGD)", "original (SGD)",
                             (ShadowMethod("retrain (SGD)", "retrain"), ShadowMethod("deltagrad", "deltagrad")),
                             ulira=("retrain (SGD)", "deltagrad")),
    }


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
    base = float((theta_T - theta_R).norm())
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
                         "distance_to_retrain": distance, "relative_residual": distance / base if base else 0.0,
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


# ------------------------------------------------------------------------------------------- report
def _ci(value, ci, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _signed_ci(value, ci) -> str:
    return f"{value:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _stand_in_note() -> str:
    stand_ins = {k: v for k, v in MINI_TOL_OPTIONS.items() if "tol" not in v}
    if not stand_ins:
        return ""
    return ("*Stand-in:* Mini-Unlearning's `--tol` option is not in this code yet; "
            + ", ".join(f"`mini tol {k}` is `mini --refine {v['refine']}`" for k, v in stand_ins.items())
            + " (`MINI_TOL_OPTIONS` in `miniunlearn.experiments.privacy`).")


def _ulira_table(part: dict, family: Family, ratios: list[str]) -> list[str]:
    proto = part["protocol"]
    lines = [f"{proto['n_shadows']} shadows of about {proto['shadow_rows']} rows (population {proto['population']}), "
             f"{proto['n_targets']} targets, each shadow a leave-pair-out target model; "
             f"intervals: {proto['interval']}.", ""]
    head = "| method | " + " | ".join(f"AUC {r} [95% CI] | AUC − retrain {r} | TPR@1% FPR {r} | TPR@0.1% FPR {r}"
                                       for r in ratios) + " |"
    lines += [head, "|---|" + "---|---|---|---|" * len(ratios)]
    for label in [*family.ulira, family.original]:
        cells = []
        for r in ratios:
            a = part["ratios"][r]["attacks"][label]
            difference = _signed_ci(a["auc_minus_reference"], a["auc_minus_reference_ci"]) \
                if "auc_minus_reference" in a else "(reference)"
            cells += [_ci(a["auc"], a["auc_ci"]), difference, _ci(a["tpr_at_fpr"]["0.01"], a["tpr_at_fpr_ci"]["0.01"]),
                      _ci(a["tpr_at_fpr"]["0.001"], a["tpr_at_fpr_ci"]["0.001"], 4)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    for r in ratios:
        before = part["ratios"][r]["attacks"][family.original]
        low, high = before.get("auc_minus_reference_ci", [0.0, 0.0])
        if low <= 0.0 <= high:
            lines.append(f"At {r}: the original model itself is not distinguishable from retraining "
                         f"({before['auc_minus_reference']:+.3f} [{low:+.3f}, {high:+.3f}]): on this data the attack "
                         "cannot detect membership even before unlearning: matching retraining shows little here, and a "
                         "method above retraining leaks through its own changes.")
    lines.append("")
    for r in ratios:
        png = part["ratios"][r].get("roc_png")
        if png:
            lines.append(f"![population U-LiRA, {family.mode}, forget {r}]({png})")
    return lines + [""]


def _models_table(entry: dict, family_name: str, family: Family, ratios: list[str]) -> list[str]:
    head = "| method | " + " | ".join(f"test acc {r} | residual {r} | certificate {r} | exactness AUC {r} | "
                                       f"MIA-efficacy {r} [95% CI]" for r in ratios) + " |"
    lines = [head, "|---|" + "---|---|---|---|---|" * len(ratios)]
    for label in [m.label for m in family.models] + [family.original]:
        cells = []
        for r in ratios:
            models = entry["parts"].get(f"models/{family_name}/{r}", {}).get("models", {})
            exactness = entry["parts"].get(f"exactness/{family_name}/{r}", {}).get("methods", {})
            m = models.get(label)
            if m is None:
                cells += ["–"] * 5
                continue
            e = exactness.get(label)
            cert = m["certificate"]
            cells += [f"{100 * m['test_accuracy']:.2f} %", f"{m['relative_residual']:.1e}",
                      "–" if cert is None else f"{cert:.2e}", "–" if e is None else _ci(e["auc"], e["auc_ci"]),
                      _ci(m["mia_efficacy"], m["mia_efficacy_ci"])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def _utility_table(entry: dict, family: Family, ratios: list[str], epsilons: list[float], delta: float) -> list[str]:
    lines = [f"Test accuracy of certified releases, δ = {delta:g}: mean ± sd over the noise draws (min–max); "
             "beside it retraining released with the same σ.", ""]
    head = "| method | ε | " + " | ".join(f"σ {r} | release test acc {r} | retrain release {r}" for r in ratios) + " |"
    lines += [head, "|---|---|" + "---|---|---|" * len(ratios)]
    for label in family.utility:
        for epsilon in epsilons:
            cells = []
            for r in ratios:
                utility = entry["parts"].get(f"models/converged/{r}", {}).get("utility", {}).get(label)
                row = None if utility is None else utility["by_epsilon"].get(f"{epsilon:g}")
                if row is None:
                    cells += ["–", "no certificate" if utility is not None else "–", "–"]
                    continue
                acc, ref = row["test_accuracy"], row["retrain_test_accuracy"]
                cells += [f"{row['sigma']:.3g}",
                          f"{100 * acc['mean']:.2f} ± {100 * acc['sd']:.2f} ({100 * acc['min']:.2f}–{100 * acc['max']:.2f})",
                          f"{100 * ref['mean']:.2f} ± {100 * ref['sd']:.2f}"]
            lines.append(f"| {label} | {epsilon:g} | " + " | ".join(cells) + " |")
    exact = []
    for label in family.utility:
        for r in ratios:
            utility = entry["parts"].get(f"models/converged/{r}", {}).get("utility", {}).get(label)
            if utility and "certificate" in utility:
                exact.append(f"{label} at {r}: certificate {utility['certificate']:.3e}, exact model "
                             f"{100 * utility['exact_test_accuracy']:.2f} % (retrain "
                             f"{100 * utility['retrain_exact_test_accuracy']:.2f} %)")
            elif utility:
                exact.append(f"{label} at {r}: {utility['note']}")
    return lines + [""] + [f"- {line}" for line in exact] + [""]


def write_privacy_report(results: dict, out: str | Path) -> Path:
    """``out/report.md`` from the results (whatever parts exist so far)."""
    out = Path(out)
    config = results["config"]
    ratios = [ratio_key(r) for r in config["ratios"]]
    lines = ["# Privacy: population U-LiRA, exactness test, MIA-efficacy, certified releases", "",
             "Regenerate with the command under each dataset's heading (`benchmarks/privacy.py`, resumable; "
             "`--fresh` after a change of the methods' code).", "",
             "How to read it (docs/evaluation.md): population U-LiRA is the privacy figure -- each method's AUC "
             "next to retraining's, measured through the same pipeline, and their paired difference; an "
             "interval of the difference that contains 0 means the attack cannot tell the method from "
             "retraining. The exactness test (fixed rows) only says whether a method reproduces retraining "
             "bit for bit; it is not a privacy figure. MIA-efficacy: share of forgotten rows SalUn's SVC "
             "judges unseen (retraining's value is the target).", ""]
    note = _stand_in_note()
    if note:
        lines += [note, ""]
    for label, entry in results["datasets"].items():
        runs = entry.get("runs", {})
        first = next(iter(runs.values()), {})
        tag = " (synthetic)" if first.get("synthetic") else ""
        lines += [f"## {label}{tag}", "", f"`{entry['spec']}`: {first.get('n_train', '?')} training + "
                  f"{first.get('n_test', '?')} test rows, {first.get('n_features', '?')} features, "
                  f"{first.get('n_classes', '?')} classes; λ = {config['l2']:g}. Computed with "
                  f"`{entry.get('command') or results.get('command')}`.", ""]
        for family_name, family in families().items():
            part = entry["parts"].get(f"ulira/{family_name}")
            what = ("converged runs (Newton-CG)" if family.mode == "converged"
                    else "SGD runs (DeltaGrad's setting; reference: the retrained SGD trajectory)")
            lines += [f"### Population U-LiRA, {what}", ""]
            lines += _ulira_table(part, family, ratios) if part else ["(not computed yet)", ""]
        for family_name, family in families().items():
            lines += [f"### Models on the real forget sets, {family_name}: accuracy, residual, certificate, "
                      "exactness test, MIA-efficacy", ""]
            lines += _models_table(entry, family_name, family, ratios)
        conv = families()["converged"]
        lines += ["### Privacy–utility: certified releases", ""]
        lines += _utility_table(entry, conv, ratios, config["epsilons"], config["delta"])
        timing = {k: v.get("wall_s") for k, v in entry["parts"].items()}
        lines += ["Wall time per part (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timing.items() if v), ""]
    path = out / REPORT_MD
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path
