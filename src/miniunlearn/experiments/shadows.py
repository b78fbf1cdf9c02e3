"""Shadow models: copies of a run's training configuration on other rows, trained in worker processes.

Both membership protocols of docs/evaluation.md train many *shadow* models with a run's exact
training configuration (mode, lambda, solver and tolerance or SGD schedule, history profile) and
unlearn them with the methods under test:

* the **population U-LiRA** (:mod:`miniunlearn.experiments.ulira`): shadows on random halves of
  the population -- the privacy figure;
* the **exactness test** (:mod:`miniunlearn.experiments.exactness`): shadows on the run's own
  rows with a few swapped -- does a method reproduce retraining bit for bit.

This module holds what they share: the methods applied to shadows, the training keyword
arguments, training one shadow, unlearning it and scoring targets, and the worker pool. Shadow
trainings run in separate processes (``spawn``) that receive the dataset spec, its fingerprint and
index arrays -- never pickled files -- and reload the data themselves.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from miniunlearn.core.errors import DataError, InputError
from miniunlearn.core.progress import disabled as progress_disabled
from miniunlearn.core.storage import atomic_write
from miniunlearn.data import load_dataset
from miniunlearn.evaluation.lira import logit_confidence
from miniunlearn.methods import make_method
from miniunlearn.runs import open_run, train
from miniunlearn.service import forget
from miniunlearn.training import SGDSchedule

__all__ = ["TRAINED", "HISTORY_READERS", "ShadowMethod", "check_methods", "shadow_training_kwargs", "worker_dataset",
           "train_shadow", "unlearn_and_score", "run_jobs", "save_arrays"]

TRAINED = "trained"  # the label of the shadows' scores before unlearning (classic LiRA)
# which history each method reads: a shadow records a history only when some method needs it
HISTORY_READERS = {"mini": "mini", "deltagrad": "deltagrad", "linear-replay": "deltagrad"}


@dataclass(frozen=True)
class ShadowMethod:
    """An unlearning method applied to the shadows: ``label`` names it in reports, ``method`` is a
    registry name (``None``: no unlearning, i.e. classic LiRA on the trained shadows)."""

    label: str
    method: str | None
    options: dict = field(default_factory=dict)


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


def shadow_training_kwargs(run, methods: list[ShadowMethod]) -> dict:
    """Keyword arguments of :func:`miniunlearn.runs.train` that reproduce ``run``'s configuration,
    with a history only where one of ``methods`` reads it."""
    config, history = run.config, run.meta.get("history", {})
    needs = {HISTORY_READERS.get(m.method) for m in methods}
    kwargs = {"l2": run.l2, "mode": config["mode"], "chunk_rows": int(config.get("chunk_rows", 8192))}
    if config["mode"] == "converged":
        kwargs.update(tol=float(config["tol"]), max_iter=int(config["max_iter"]), mini_history="mini" in needs)
        mini = history.get("mini")
        if mini:
            if "profile_spec" in mini:
                kwargs.update(profile=mini["profile_spec"])
            else:  # runs written before profiles had options
                kwargs.update(profile=mini["profile"], curvature_dtype=mini.get("curvature_dtype", "float64"))
    else:
        kwargs.update(sgd=dict(config["sgd"]), deltagrad_history="deltagrad" in history and "deltagrad" in needs)
    return kwargs


# ----------------------------------------------------------------------------------- worker side
_DATASETS: dict[tuple[str, str], object] = {}


def worker_dataset(spec: str, fingerprint: str, run_dir: str | None = None):
    """The dataset of ``spec``, loaded once per process and checked against the run's fingerprint.

    With ``run_dir`` the run supplies it -- data stored in the run (a dataset built from arrays
    has no loadable spec) or reloaded from its recorded spec."""
    key = (spec, fingerprint)
    if key not in _DATASETS:
        dataset = open_run(run_dir).dataset if run_dir is not None else load_dataset(spec)
        if dataset.fingerprint() != fingerprint:
            raise DataError(f"the data for {spec!r} no longer matches the run (fingerprint mismatch); "
                            "shadow models would train on other data")
        _DATASETS.clear()  # one dataset per worker process at a time
        _DATASETS[key] = dataset
    return _DATASETS[key]


def _init_worker(threads: int) -> None:
    os.environ["MINIUNLEARN_NO_PROGRESS"] = "1"
    torch.set_num_threads(max(1, int(threads)))


def train_shadow(source, X: np.ndarray, y: np.ndarray, name: str, kwargs: dict, directory: Path, times: dict):
    """Train a shadow on rows (X, y) of the dataset ``source`` with ``kwargs`` (:func:`shadow_training_kwargs`) into ``directory``;
    returns the opened run, bound to the in-memory shadow data. Adds ``train_s``/``train_cpu_s`` to ``times``."""
    shadow = dataclasses.replace(source, X_train=X, y_train=y, spec=f"{source.spec}#{name}", _fingerprint=[])
    kwargs = dict(kwargs)
    sgd = kwargs.pop("sgd", None)
    if sgd is not None:
        kwargs["sgd_schedule"] = SGDSchedule.from_dict(sgd)
    l2 = kwargs.pop("l2")
    start, cpu = time.perf_counter(), time.process_time()
    with progress_disabled():
        run = train(shadow, l2, directory, **kwargs)
    times["train_s"], times["train_cpu_s"] = time.perf_counter() - start, time.process_time() - cpu
    run.use_dataset(shadow)  # shadow data has no loadable spec
    return run


def unlearn_and_score(run, forget_positions: np.ndarray, methods, X_t: np.ndarray, y_t: np.ndarray,
                      times: dict, suffix: str = "") -> dict[str, np.ndarray]:
    """Unlearn ``forget_positions`` of the shadow ``run`` with every ``(label, method, options)``
    (``method`` None is skipped) and return each result's phi on the targets ``(X_t, y_t)``."""
    phi = {}
    with progress_disabled():
        for label, method, options in methods:
            if method is None:
                continue
            start, cpu = time.perf_counter(), time.process_time()
            result = forget(run, forget_positions, method=method, ledger=False, **options)
            times[f"{label}{suffix}_s"] = time.perf_counter() - start
            times[f"{label}{suffix}_cpu_s"] = time.process_time() - cpu
            phi[label] = logit_confidence(run.model, result.theta, X_t, y_t)
    return phi


# ----------------------------------------------------------------------------------- the pool
def run_jobs(job: Callable[[dict], dict], jobs: list[dict], dataset, *, workers: int = 1, threads: int | None = None,
             progress=None, on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Run ``job`` (a module-level function) on every job dict, ``workers`` at a time in spawned processes.

    ``workers=1`` runs them in this process (no start-up cost; methods registered at run time are
    visible) with ``dataset`` already loaded. Each worker uses ``threads`` torch threads (default:
    this process's setting for ``workers=1``, else the CPUs divided among the workers).
    ``on_result(result)`` and ``progress(1)`` are called as each job finishes. Every job dict
    carries ``spec`` and ``fingerprint``; results are returned in the order of ``jobs``.
    """
    workers = int(workers)
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    workers = max(1, min(workers, len(jobs)))
    if threads is None:
        threads = (torch.get_num_threads() if workers == 1 else
                   max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
                       // workers))
    advance = progress or (lambda amount=1, **_: None)
    done = on_result or (lambda result: None)
    results: dict[int, dict] = {}
    if workers == 1:
        for job_dict in jobs:
            _DATASETS[(job_dict["spec"], job_dict["fingerprint"])] = dataset
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for index, job_dict in enumerate(jobs):
                results[index] = job(job_dict)
                done(results[index])
                advance(1)
        finally:
            torch.set_num_threads(previous_threads)
            _DATASETS.clear()
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            futures = {pool.submit(job, job_dict): index for index, job_dict in enumerate(jobs)}
            try:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    done(results[futures[future]])
                    advance(1)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return [results[i] for i in range(len(jobs))]


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write plain arrays (no object arrays, so reading needs no pickle) as ``.npz``, atomically."""

    def write(tmp):
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    atomic_write(path, write)
