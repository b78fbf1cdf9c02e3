"""``evaluate`` and ``audit``: load the models of one forget request and compare them with retraining.

Both take the run, the forget ids, one or more unlearned model directories and the retrained
model directory; the original model is the run's own. Model directories written by
``miniunlearn forget`` carry a ``result.json`` that names the method, its options and a digest of
the forget ids: a directory made for another forget set is refused, and the audit's shadow models
are unlearned with the same method and options.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from miniunlearn.core.errors import InputError, RunError
from miniunlearn.core.storage import read_json
from miniunlearn.evaluation.lira import VARIANCES
from miniunlearn.evaluation.metrics import evaluate_models
from miniunlearn.evaluation.mia import population_attacks
from miniunlearn.experiments.exactness import MIN_EXACTNESS_SHADOWS, check_shadow_count, exactness_test
from miniunlearn.experiments.shadows import ShadowMethod, check_methods
from miniunlearn.experiments.ulira import (
    DEFAULT_RELATIVE_FLOOR,
    DEFAULT_SHADOWS,
    DEFAULT_TARGETS,
    make_population_plan,
    population_ulira,
)
from miniunlearn.runs import RESULT_JSON, Run, load_model, open_run
from miniunlearn.service.ledger import forgotten_so_far, ids_sha256
from miniunlearn.service.requests import read_ids_file, validate_forget_ids

__all__ = ["ModelEntry", "load_model_entry", "load_request", "evaluate", "audit"]

RESERVED = ("retrained", "original")


@dataclass
class ModelEntry:
    """A model to compare: its name in reports, directory, parameters and (if known) how it was made."""

    name: str
    path: Path | None
    theta: torch.Tensor
    method: str | None = None
    options: dict = field(default_factory=dict)


def load_model_entry(path: str | Path, run, forget_ids: np.ndarray, name: str | None = None) -> ModelEntry:
    """Load ``path``'s model, check it fits the run and (via result.json, when present) the forget set."""
    path = Path(path)
    if not path.exists():
        raise RunError(f"model directory not found: {path}")
    model, theta, _ = load_model(path)
    if (model.n_features, model.n_classes) != (run.model.n_features, run.model.n_classes):
        raise RunError(f"model {path} has {model.n_features} features and {model.n_classes} classes, but run "
                       f"{run.path} has {run.model.n_features} and {run.model.n_classes}")
    method, options = None, {}
    result_file = (path if path.is_dir() else path.parent) / RESULT_JSON
    if result_file.is_file():
        result = read_json(result_file, RESULT_JSON)
        # a model made under the deletion ledger has forgotten every earlier request's rows too
        digest = ids_sha256(forget_ids)
        forgotten = result.get("cumulative_ids_sha256") or result.get("forget_ids_sha256")
        if forgotten is not None and forgotten != digest:
            if result.get("forget_ids_sha256") == digest:
                raise InputError(f"model {path} has forgotten {result.get('n_forget', '?')} rows in all, earlier "
                                 "requests included; pass an ids file with every row it has forgotten")
            raise InputError(f"model {path} was unlearned for another forget set than --ids "
                             f"({result.get('n_forget', '?')} rows, ids digest {forgotten[:12]}...); "
                             "compare models made for the same request")
        if "n_train" in result and int(result["n_train"]) != run.n_train:
            raise InputError(f"model {path} comes from a run with {result['n_train']} training rows, not {run.n_train}")
        method, options = result.get("method"), dict(result.get("options") or {})
    label = name or method or path.name
    return ModelEntry(label, path, theta, method, options)


def _unique_names(entries: list[ModelEntry]) -> list[ModelEntry]:
    seen: dict[str, int] = {}
    for entry in entries:
        if entry.name in RESERVED:
            entry.name = f"{entry.name}:{entry.path.name if entry.path else 'model'}"
        seen[entry.name] = seen.get(entry.name, 0) + 1
    counts: dict[str, int] = {}
    for entry in entries:
        if seen[entry.name] > 1:
            counts[entry.name] = counts.get(entry.name, 0) + 1
            suffix = entry.path.name if entry.path else str(counts[entry.name])
            entry.name = f"{entry.name}:{suffix}"
    names = [e.name for e in entries]
    if len(set(names)) != len(names):  # the same directory name twice: number them
        for i, entry in enumerate(entries):
            entry.name = f"{entry.name}#{i + 1}"
    return entries


@dataclass
class Request:
    """Everything both commands need, loaded and checked."""

    run: object
    forget_ids: np.ndarray
    models: list[ModelEntry]
    retrained: ModelEntry
    original: ModelEntry


def load_request(run_dir, ids, model_dirs, retrained_dir) -> Request:
    """Open the run, read and validate the forget ids (a file path or an array; None: every row
    forgotten so far, from the run's deletion ledger), load every model."""
    run = run_dir if isinstance(run_dir, Run) else open_run(run_dir)
    if ids is None:
        raw = forgotten_so_far(run)
    else:
        raw = read_ids_file(ids) if isinstance(ids, (str, Path)) else np.asarray(ids)
    forget_ids = validate_forget_ids(raw, run.n_train)
    models = _unique_names([load_model_entry(d, run, forget_ids) for d in model_dirs])
    retrained = load_model_entry(retrained_dir, run, forget_ids)
    if retrained.method not in (None, "retrain"):
        raise InputError(f"--against {retrained_dir} was made by method {retrained.method!r}, not by retraining; "
                         "the reference must be the retrained model (`miniunlearn retrain`)")
    retrained.name = "retrained"
    original = ModelEntry("original", run.path, run.theta(), None, {})
    return Request(run, forget_ids, models, retrained, original)


def evaluate(request: Request) -> dict:
    """Accuracy gaps, distances, KL and agreement of every model against the retrained one."""
    run = request.run
    start = time.perf_counter()
    report = evaluate_models(run.model, {m.name: m.theta for m in request.models}, request.retrained.theta,
                             request.original.theta, run.dataset, request.forget_ids,
                             chunk_rows=int(run.config.get("chunk_rows", 8192)))
    return {"run": str(run.path), "n_train": run.n_train, "n_forget": int(len(request.forget_ids)),
            "ratio": len(request.forget_ids) / run.n_train,
            "model_dirs": {m.name: str(m.path) for m in request.models} | {"retrained": str(request.retrained.path)},
            "methods": {m.name: m.method for m in request.models},
            **report, "time_s": time.perf_counter() - start}


def audit(request: Request, *, shadows: int = DEFAULT_SHADOWS, targets: int = DEFAULT_TARGETS,
          shadow_method: str | None = None, shadow_options: dict | None = None, variance: str = "per_example",
          relative_floor: float = DEFAULT_RELATIVE_FLOOR, exactness_shadows: int = 0, max_targets: int | None = None,
          workers: int = 1, threads: int | None = None, seed: int = 0, svc_features=("confidence",),
          out_dir: str | Path | None = None, tmp_dir: str | Path | None = None, save_scores: bool = True,
          progress=None) -> dict:
    """The attacks of docs/evaluation.md on every unlearned model, the retrained and the original model.

    1. population loss attack and 2. SVC MIA-efficacy (:mod:`miniunlearn.evaluation.mia`) on the
    models themselves;
    3. population U-LiRA (``shadows > 0``, :mod:`miniunlearn.experiments.ulira`): ``shadows``
       shadow models on random halves of the population, unlearned at this request's forget ratio
       by each model's method (``shadow_method`` overrides), by retraining and not at all
       (original); it measures the *method* on this data and configuration;
    4. the exactness test (``exactness_shadows > 0``, :mod:`miniunlearn.experiments.exactness`):
       fixed-rows shadows, scoring the models themselves -- whether a method reproduces
       retraining bit for bit, not a privacy figure.
    """
    run = request.run
    models = {m.name: m.theta for m in request.models}
    models["retrained"] = request.retrained.theta
    models["original"] = request.original.theta
    ratio = len(request.forget_ids) / run.n_train
    if shadows or exactness_shadows:  # settle the shadow settings before any work
        if variance not in VARIANCES:
            raise InputError(f"variance must be one of {', '.join(VARIANCES)}, got {variance!r}")
        if not 0 <= relative_floor <= 1:
            raise InputError(f"the relative variance floor must lie in [0, 1], got {relative_floor}")
        groups = _method_groups(request, shadow_method, shadow_options)
        check_methods([ShadowMethod(label, method, options) for label, (method, options, _) in groups.items()], run)
    if shadows:
        population_methods = _population_methods(groups)
        make_population_plan(run.dataset.n_train, run.dataset.n_test, [ratio], shadows, targets, seed)
    if exactness_shadows:
        check_shadow_count(exactness_shadows, minimum=MIN_EXACTNESS_SHADOWS)
    start = time.perf_counter()
    population = population_attacks(run.model, models, run.dataset, request.forget_ids, seed=seed,
                                    svc_features=svc_features, chunk_rows=int(run.config.get("chunk_rows", 8192)))
    population_s = time.perf_counter() - start
    report = {"run": str(run.path), "n_train": run.n_train, "n_forget": int(len(request.forget_ids)),
              "ratio": ratio,
              "models": {m.name: {"dir": str(m.path), "method": m.method, "options": m.options}
                         for m in request.models},
              "retrained_dir": str(request.retrained.path), "seed": seed,
              "loss_attack": population["loss_attack"], "svc_mia": population["svc_mia"],
              "rows": population["rows"], "time": {"population_attacks_s": population_s}}
    if out_dir is not None and (shadows or exactness_shadows):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    if shadows:
        ulira = population_ulira(run, [ratio], population_methods, n_shadows=shadows, n_targets=targets,
                                 variance=variance, relative_floor=relative_floor, seed=seed, workers=workers,
                                 threads=threads, tmp_dir=tmp_dir, out_dir=out_dir, progress=progress)
        ulira["models"] = {label: names for label, (_, _, names) in groups.items()}
        report["ulira"] = ulira
    if exactness_shadows:
        methods = [ShadowMethod(label, method, options) for label, (method, options, _) in groups.items()]
        methods.append(ShadowMethod(NO_UNLEARNING, None))
        pairs = {label: names + ["retrained", "original"] for label, (_, _, names) in groups.items()}
        pairs[NO_UNLEARNING] = ["original", "retrained"]
        report["exactness_test"] = exactness_test(run, request.forget_ids, models, methods, pairs=pairs,
                                                  n_shadows=exactness_shadows, max_targets=max_targets,
                                                  variance=variance, workers=workers, threads=threads, seed=seed,
                                                  out_dir=out_dir, tmp_dir=tmp_dir, save_scores=save_scores,
                                                  progress=progress)
    report["time"]["total_s"] = time.perf_counter() - start
    return report


NO_UNLEARNING = "original"  # the label of the shadows that are not unlearned (classic LiRA)
REFERENCE = "retrain"


def _method_groups(request: Request, shadow_method: str | None, shadow_options: dict | None) -> dict:
    """``{label: (method, options, [model names])}``: one per distinct (method, options) among the models."""
    groups: dict[tuple, list[ModelEntry]] = {}
    for m in request.models:
        method = shadow_method or m.method
        if method is None:
            raise InputError(f"model {m.path} has no {RESULT_JSON} naming its method; pass --shadow-method "
                             "to say which method the shadow models should unlearn with")
        options = dict(shadow_options or {}) if shadow_method else dict(m.options)
        key = (method, json.dumps(options, sort_keys=True, default=str))
        groups.setdefault(key, []).append(m)
    labelled: dict[str, tuple] = {}
    for (method, options_json), members in groups.items():
        options = json.loads(options_json)
        label = method
        if label in labelled or label == NO_UNLEARNING or (label == REFERENCE and options):
            label = f"{method}:{members[0].name}"
        labelled[label] = (method, options, [m.name for m in members])
    return labelled


def _population_methods(groups: dict) -> list[ShadowMethod]:
    """The models' methods, retraining (the reference; once) and no unlearning (the original)."""
    methods = [ShadowMethod(label, method, options) for label, (method, options, _) in groups.items()]
    if REFERENCE not in groups:
        methods.append(ShadowMethod(REFERENCE, REFERENCE))
    return methods + [ShadowMethod(NO_UNLEARNING, None)]
