"""``miniunlearn bench``: every dataset x ratio x seed x method, measured side by side with retraining.

For each dataset the benchmark trains (once, cached under ``OUT/runs``) a converged run and, when a
trajectory method such as DeltaGrad is asked for, a trajectory run (seeded SGD, DeltaGrad's
schedule). For each (dataset, ratio, seed) it draws a seeded random forget set, retrains in the same
process with the same threads (the gold standard and the time every speedup divides), runs every
method, and measures each result against that retrained model: relative residual, accuracies,
population membership attacks, and (for the configured ratios) the exactness test of
:mod:`miniunlearn.experiments.exactness` -- whether a method reproduces retraining bit for bit; the
privacy figure, population U-LiRA, is ``benchmarks/privacy.py``'s. A group's rows
are written to ``results.json`` atomically as soon as it is complete, so an interrupted run resumes
where it stopped.

Methods are named ``NAME[:key=value,...]``, e.g. ``mini`` (certified to its default tolerance),
``mini:refine=0`` (the fixed point alone), ``mini:tol=1e-6``, ``finetune:epochs=2``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from miniunlearn.core.errors import InputError
from miniunlearn.core.progress import progress_bar
from miniunlearn.core.storage import atomic_write_json, read_json
from miniunlearn.core.text import parse_spec, slug
from miniunlearn.data import dataset_info, load_dataset
from miniunlearn.evaluation.metrics import accuracy
from miniunlearn.evaluation.mia import loss_attack, sample_scores, shadow_member_ids, svc_mia_efficacy
from miniunlearn.experiments.exactness import MIN_EXACTNESS_SHADOWS, check_shadow_count, exactness_test
from miniunlearn.experiments.shadows import ShadowMethod
from miniunlearn.methods import UnlearnResult, get_method
from miniunlearn.models.rows import retained_ids
from miniunlearn.runs import RUN_JSON, open_run, train
from miniunlearn.service import forget
from miniunlearn.service.requests import random_forget_ids
from miniunlearn.training import SGDSchedule

ROW_KEYS = ("dataset", "dataset_spec", "synthetic", "n_train", "ratio", "seed", "method", "refine", "mode",
            "time_s", "retrain_time_s", "speedup_vs_retrain", "passes_forget", "passes_retained", "history_bytes",
            "peak_rss_bytes", "relative_residual", "l2_to_retrain", "test_acc", "test_acc_retrain", "forget_acc",
            "forget_acc_retrain", "mia_loss_auc", "mia_loss_auc_retrain", "mia_efficacy", "mia_efficacy_retrain",
            "exactness_auc", "exactness_auc_retrain", "exactness_tpr_at_1pct_fpr", "exactness_tpr_at_0_1pct_fpr",
            "load_1min")
TRAJECTORY_METHODS = ("deltagrad",)
RESULTS_JSON = "results.json"
ORIGINAL = "original"  # the pseudo-method "do nothing": the trained model itself


@dataclass
class BenchConfig:
    """What a benchmark runs. ``datasets`` are specs or the aliases of :func:`resolve_dataset`."""

    datasets: list[str]
    ratios: list[float]
    methods: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])
    l2: float = 1e-3
    population_attacks: bool = True
    mia_max_rows: int = 2000
    exactness_shadows: int = 0     # fixed-rows shadow models of the exactness test (0: no test)
    exactness_ratios: list[float] = field(default_factory=list)
    exactness_seeds: list[int] = field(default_factory=lambda: [0])
    exactness_max_targets: int = 500
    exactness_workers: int = 2
    sgd_epochs: int = 20
    include_original: bool = True  # a row for the model before unlearning, under the same attacks

    def validate(self) -> None:
        if not self.datasets or not self.ratios or not self.methods or not self.seeds:
            raise InputError("bench needs at least one dataset, ratio, method and seed")
        for ratio in self.ratios:
            if not 0 < ratio < 1:
                raise InputError(f"ratios are fractions in (0, 1); got {ratio}")
        for spec in self.methods:
            parse_method(spec)
        if self.exactness_shadows:
            check_shadow_count(self.exactness_shadows, minimum=MIN_EXACTNESS_SHADOWS)


PRESETS: dict[str, BenchConfig] = {
    "quick": BenchConfig(
        datasets=["digits", "breast_cancer", "synthetic:n_samples=4000,n_features=20,n_classes=4,seed=0"],
        ratios=[0.01, 0.1, 0.3, 0.5],
        methods=["mini:refine=0", "mini", "retrain", "deltagrad", "newton", "finetune", "neggrad"],
        seeds=[0], exactness_shadows=8, exactness_ratios=[0.1, 0.5], exactness_max_targets=200),
    "paper": BenchConfig(
        datasets=["fashion-mnist", "covtype-shaped", "higgs-shaped"],
        ratios=[0.01, 0.05, 0.1, 0.2, 0.3, 0.5],
        methods=["mini:refine=0", "mini", "retrain", "deltagrad", "newton", "finetune", "neggrad"],
        seeds=[0, 1, 2], exactness_shadows=8, exactness_ratios=[0.1, 0.5], exactness_max_targets=500),
    "mini": BenchConfig(
        datasets=["digits", "breast_cancer", "synthetic-100k", "fashion-mnist"],
        ratios=[0.01, 0.05, 0.1, 0.2, 0.3, 0.5],
        methods=["retrain", "mini:refine=0", "mini", "mini:tol=1e-6"],
        seeds=[0, 1, 2], population_attacks=False),
    "demo": BenchConfig(
        datasets=["demo-set"], ratios=[0.01, 0.1, 0.5], methods=["mini", "retrain"],
        seeds=[0], l2=1e-3, exactness_shadows=0, include_original=False),
}

ALIASES = {
    # big enough that retraining takes seconds, small enough for a two-minute demo
    "demo-set": ("synthetic:n_samples=75000,n_features=40,n_classes=10,seed=0", "synthetic 60k x 40, 10 classes"),
    # a 100k-row, 54-feature, 7-class set: Covtype's shape (the synthetic target set)
    "synthetic-100k": ("synthetic:n_samples=125000,n_features=54,n_classes=7,seed=0", "synthetic 100k x 54, 7 classes"),
}


def resolve_dataset(name: str) -> tuple[str, str]:
    """Map a preset alias to a loadable spec and a label: real files where present, else seeded
    synthetic sets of the same shape (labelled synthetic)."""
    if name in ALIASES:
        return ALIASES[name]
    if name == "covtype-shaped":
        ok, _ = dataset_info("covtype").available()
        if ok:
            return "covtype:download=0", "covtype"
        return ("synthetic:n_samples=125000,n_features=54,n_classes=7,seed=1",
                "covtype-shaped synthetic (100k x 54, 7 classes)")
    if name == "higgs-shaped":
        return "higgs-synthetic:n_rows=1100000,seed=0", "HIGGS-shaped synthetic (1M x 28, binary)"
    return name, name


def parse_method(spec: str) -> tuple[str, dict]:
    name, options = parse_spec(spec, "method")
    get_method(name)
    return name, options


# ----------------------------------------------------------------------------------------- runs
def _trajectory_schedule(n_train: int, epochs: int):
    # DeltaGrad's setting (batch 16384, lr 0.1 then 0.05 from the middle epoch), with batches cut
    # to a quarter of the data on small sets so every epoch has several iterations
    batch = int(min(16384, max(16, math.ceil(n_train / 4))))
    return SGDSchedule(epochs=epochs, batch_size=batch, lr=0.1, lr_steps=((epochs // 2, 0.05),), seed=0)


def ensure_run(out: Path, label: str, spec: str, l2: float, mode: str, epochs: int):
    """Train (once) and open the benchmark's run for a dataset and mode."""
    folder = out / "runs" / (slug(label) + ("" if mode == "converged" else "-trajectory"))
    if (folder / RUN_JSON).is_file():
        run = open_run(folder)
        if run.meta["dataset"]["spec"] == spec and math.isclose(run.l2, l2):
            return run
        raise InputError(f"{folder} holds a run of {run.meta['dataset']['spec']!r} (l2 {run.l2}); "
                         f"this benchmark needs {spec!r} with l2 {l2}: use another --out")
    dataset = load_dataset(spec)
    if mode == "converged":
        return train(dataset, l2, folder)
    return train(dataset, l2, folder, mode="trajectory", deltagrad_history=True,
                 sgd_schedule=_trajectory_schedule(dataset.n_train, epochs))


# ----------------------------------------------------------------------------------------- rows
def _row_key(row: dict) -> tuple:
    return (row["dataset_spec"], round(row["ratio"], 10), row["seed"], row["method"], row["refine"])


def capped_population_attacks(run, thetas: dict, forget_ids: np.ndarray, max_rows: int, seed: int) -> dict:
    """``{name: {"loss_auc", "efficacy", "efficacy_ci"}}``: the loss attack's AUC and SalUn's SVC
    MIA-efficacy per model, on seeded subsamples of at most ``max_rows`` forget / test /
    shadow-member rows (the SVC's cost grows quadratically with its rows)."""
    ds = run.dataset
    rng = np.random.default_rng([seed, 99])

    def cap(ids):
        return np.sort(rng.choice(ids, max_rows, replace=False)) if len(ids) > max_rows else ids

    forget = cap(np.asarray(forget_ids))
    test = cap(np.arange(ds.n_test))
    shadow = cap(shadow_member_ids(retained_ids(ds.n_train, forget_ids), ds.n_test, seed))
    out = {}
    for name, theta in thetas.items():
        f = sample_scores(run.model, theta, ds.X_train, ds.y_train, forget, ("loss", "confidence"))
        t = sample_scores(run.model, theta, ds.X_test, ds.y_test, test, ("loss", "confidence"))
        s = sample_scores(run.model, theta, ds.X_train, ds.y_train, shadow, ("confidence",))
        folds = int(min(5, len(forget), len(test)))
        auc = loss_attack(f["loss"], t["loss"], seed=seed, folds=folds)["auc"] if folds >= 2 else float("nan")
        svc = svc_mia_efficacy(s["confidence"], t["confidence"], f["confidence"])
        out[name] = {"loss_auc": auc, "efficacy": svc["efficacy"], "efficacy_ci": svc["efficacy_ci"]}
    return out


def _exactness(run, forget_ids, thetas: dict, methods: dict, config: BenchConfig, seed: int, out_dir: Path) -> dict:
    """Exactness-test AUC and TPRs per method (fixed-rows shadows unlearned with that method), and the
    retrained model's AUC under the same test (1/2 by construction in converged mode)."""
    shadow_methods = [ShadowMethod(label, name, options) for label, (name, options) in methods.items()]
    pairs = {label: [label, "retrained"] for label in methods}
    report = exactness_test(run, forget_ids, thetas, shadow_methods, pairs=pairs, n_shadows=config.exactness_shadows,
                            max_targets=config.exactness_max_targets, workers=config.exactness_workers, threads=1,
                            seed=seed, out_dir=out_dir, save_scores=False)
    result = {}
    for label in methods:
        targets = report["attacks"][label]["targets"]
        mine, ref = targets[label]["online"], targets["retrained"]["online"]
        result[label] = {"exactness_auc": mine["auc"], "exactness_auc_retrain": ref["auc"],
                         "exactness_tpr_at_1pct_fpr": mine["tpr_at_fpr"]["0.01"],
                         "exactness_tpr_at_0_1pct_fpr": mine["tpr_at_fpr"]["0.001"]}
    return result


def _method_label(name: str, options: dict) -> str:
    extra = {k: v for k, v in options.items() if k != "refine"}
    return name + ("" if not extra else ":" + ",".join(f"{k}={v}" for k, v in sorted(extra.items())))


def run_group(config: BenchConfig, out: Path, label: str, spec: str, ratio: float, seed: int,
              runs: dict, progress=None) -> list[dict]:
    """All methods on one forget set; returns the rows."""
    rows: list[dict] = []
    by_mode: dict[str, dict] = {}
    for mode, run in runs.items():
        ds = run.dataset
        forget_ids = random_forget_ids(ds.n_train, ratio, seed)
        retrained = forget(run, forget_ids, "retrain", ledger=False)
        theta_T = run.theta()
        by_mode[mode] = {"run": run, "ids": forget_ids, "retrained": retrained, "theta_T": theta_T, "thetas": {},
                         "methods": {}}
    for spec_m in config.methods:
        name, options = parse_method(spec_m)
        mode = "trajectory" if name in TRAJECTORY_METHODS else "converged"
        if mode not in by_mode:
            continue
        ctx = by_mode[mode]
        if name == "retrain" and mode == "converged":
            result = ctx["retrained"]
        else:
            result = forget(ctx["run"], ctx["ids"], name, ledger=False, **options)
        key = spec_m
        ctx["thetas"][key] = result.theta
        ctx["methods"][key] = (name, options, result)
        if progress:
            progress(1)
    for mode, ctx in by_mode.items():
        run, ids, retrained = ctx["run"], ctx["ids"], ctx["retrained"]
        ds, model = run.dataset, run.model
        theta_R = retrained.theta
        unlearned = float((ctx["theta_T"] - theta_R).norm())  # ||w_T - w_R||
        test_R = accuracy(model, theta_R, ds.X_test, ds.y_test)
        forget_R = accuracy(model, theta_R, ds.X_train, ds.y_train, ids)
        if config.include_original and ctx["methods"]:
            # doing nothing: what every attack and metric reads on the model before unlearning
            original = UnlearnResult(ctx["theta_T"], "original", {}, {
                "time_s": 0.0, "passes_forget": 0.0, "passes_retained": 0.0, "history_bytes_read": 0,
                "peak_rss_bytes": None})
            key = ORIGINAL if mode == "converged" else f"{ORIGINAL}-sgd"  # the SGD run's own trained model
            ctx["thetas"][key] = ctx["theta_T"]
            ctx["methods"][key] = (ORIGINAL, {}, original)
        mia = {}
        if config.population_attacks and ctx["methods"]:
            mia = capped_population_attacks(run, {**ctx["thetas"], "__retrained__": theta_R}, ids, config.mia_max_rows,
                                            seed)
        exactness = {}
        if (config.exactness_shadows and ratio in config.exactness_ratios and seed in config.exactness_seeds
                and ctx["methods"]):
            # the original model under the same test: shadows trained, not unlearned
            shadow_methods = {key: (None if name == ORIGINAL else name, options)
                              for key, (name, options, _) in ctx["methods"].items()}
            targets = {**ctx["thetas"], "retrained": theta_R}
            exactness = _exactness(run, ids, targets, shadow_methods, config, seed,
                                   out / "exactness" / f"{slug(label)}-{mode}-r{ratio:g}-s{seed}")
        for key, (name, options, result) in ctx["methods"].items():
            s = result.stats
            theta = result.theta
            is_original = name == ORIGINAL
            distance = float((theta - theta_R).norm())
            row = {k: None for k in ROW_KEYS}
            row.update(load_1min=os.getloadavg()[0],  # the machine's load when the row was measured
                       dataset=label, dataset_spec=run.meta["dataset"]["spec"], synthetic=bool(ds.synthetic),
                       n_train=ds.n_train, ratio=ratio, seed=seed,
                       method=key if is_original else _method_label(name, options),
                       refine=options.get("refine") if name == "mini" else None, mode=mode,
                       time_s=s["time_s"], retrain_time_s=retrained.stats["time_s"],
                       speedup_vs_retrain=retrained.stats["time_s"] / s["time_s"] if s["time_s"] > 0 else None,
                       passes_forget=s["passes_forget"], passes_retained=s["passes_retained"],
                       history_bytes=s["history_bytes_read"], peak_rss_bytes=s["peak_rss_bytes"],
                       relative_residual=distance / unlearned if unlearned > 0 else 0.0, l2_to_retrain=distance,
                       test_acc=accuracy(model, theta, ds.X_test, ds.y_test), test_acc_retrain=test_R,
                       forget_acc=accuracy(model, theta, ds.X_train, ds.y_train, ids), forget_acc_retrain=forget_R)
            for extra in ("contraction_estimate", "certificate", "certified_relative", "tol", "iterations",
                          "curvature_profile"):
                if extra in s:
                    row[extra] = s[extra]
            if key in mia:
                row["mia_loss_auc"], row["mia_efficacy"] = mia[key]["loss_auc"], mia[key]["efficacy"]
                reference = mia["__retrained__"]
                row["mia_loss_auc_retrain"], row["mia_efficacy_retrain"] = reference["loss_auc"], reference["efficacy"]
            if key in exactness:
                row.update(exactness[key])
            rows.append(row)
    return rows


def load_rows(out: Path) -> list[dict]:
    path = out / RESULTS_JSON
    if not path.is_file():
        return []
    rows = read_json(path, RESULTS_JSON)
    if not isinstance(rows, list):
        raise InputError(f"{path} is not a benchmark results file (expected a list of rows)")
    return rows


def run_bench(config: BenchConfig, out: str | Path, threads: int | None = None, log=print) -> list[dict]:
    """Run (or resume) the benchmark into ``out``; returns all rows."""
    config.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(int(threads))
    rows = load_rows(out)
    done = {_row_key(r) for r in rows}
    needs_trajectory = any(parse_method(m)[0] in TRAJECTORY_METHODS for m in config.methods)
    needs_converged = any(parse_method(m)[0] not in TRAJECTORY_METHODS for m in config.methods)
    groups = [(d, r, s) for d in config.datasets for r in config.ratios for s in config.seeds]
    atomic_write_json(out / "config.json", dataclasses.asdict(config))
    started = time.perf_counter()
    with progress_bar("bench", len(groups) * len(config.methods)) as advance:
        for name in config.datasets:
            spec, label = resolve_dataset(name)
            runs = {}
            for ratio in config.ratios:
                for seed in config.seeds:
                    keys = {(spec, round(ratio, 10), seed, _method_label(*parse_method(m)),
                             parse_method(m)[1].get("refine") if parse_method(m)[0] == "mini" else None)
                            for m in config.methods}
                    if keys <= done:
                        advance(len(config.methods))
                        continue
                    if not runs:
                        if needs_converged:
                            runs["converged"] = ensure_run(out, label, spec, config.l2, "converged", config.sgd_epochs)
                        if needs_trajectory:
                            runs["trajectory"] = ensure_run(out, label, spec, config.l2, "trajectory",
                                                            config.sgd_epochs)
                    log(f"{label}: ratio {ratio:g}, seed {seed}")
                    new = run_group(config, out, label, spec, ratio, seed, runs, progress=advance)
                    rows = [r for r in rows if _row_key(r) not in {_row_key(n) for n in new}] + new
                    done |= {_row_key(n) for n in new}
                    atomic_write_json(out / RESULTS_JSON, rows)
    log(f"bench finished in {time.perf_counter() - started:.0f} s; {len(rows)} rows in {out / RESULTS_JSON}")
    return rows
