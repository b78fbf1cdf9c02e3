"""The forget service: validate a deletion request, run a method, measure it, record it, write the files.

``forget(run, ids, method="mini", out=DIR)`` validates the request, runs the method, measures
it and (optionally) writes ``DIR/model.safetensors`` and ``DIR/result.json``, recording the
request in the run's deletion ledger (:mod:`miniunlearn.service.ledger`). A method whose result
is not finite, or that says it did not converge, fails the request: nothing is written and the
ledger marks it failed. With ``release=ReleaseRequest(epsilon, delta)`` the model saved is an
(epsilon, delta)-certified release of the result (:mod:`miniunlearn.service.release`).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

from miniunlearn import distributed
from miniunlearn.core.errors import ConvergenceError, InputError, RunError
from miniunlearn.core.measure import measure
from miniunlearn.core.storage import atomic_copy, atomic_write_json, file_sha256
from miniunlearn.methods import UnlearnContext, UnlearnResult, make_method
from miniunlearn.runs import MODEL_FILE, RESULT_JSON, RUN_JSON, Run, load_model, prepare_output_dir, save_model
from miniunlearn.service import handoff
from miniunlearn.service.compact import check_policy, compaction_due, purge_previous, run_policy
from miniunlearn.service.compact import compact as compact_run
from miniunlearn.service.ledger import FORGETTING_KINDS, Ledger, Plan, canonical_options, ids_sha256, request_lock
from miniunlearn.service.release import check_release, ledger_options, method_options, publish
from miniunlearn.service.requests import Named, request_rows, validate_forget_ids

__all__ = ["forget", "LedgerWarning"]


def forget(run, forget_ids=None, method: str = "mini", out: str | Path | None = None, workers: int = 1,
           overwrite: bool = False, progress=None, already_forgotten: np.ndarray | None = None,
           ledger: bool | str = "auto", keys=None, release=None, compact: str | None = None,
           **options) -> UnlearnResult:
    """Remove the training rows ``forget_ids`` -- or every row whose key is in ``keys`` -- from
    ``run``'s model with ``method``.

    ``run`` is a :class:`~miniunlearn.runs.Run` or a run directory. Bad requests (empty, out of
    range, duplicated, every row, already forgotten, unknown keys) raise
    :class:`~miniunlearn.core.errors.InputError` before anything is computed or written.

    Deletion ledger (:mod:`miniunlearn.service.ledger`): with ``ledger="auto"`` (the default) every
    request that writes a model (``out`` given) is recorded in ``RUN/ledger.sqlite``; rows
    forgotten by earlier requests stay forgotten (the method receives the cumulative set, so the
    result equals forgetting the union at once), an identical repeat returns the recorded model
    byte for byte without recomputing, and a request naming already forgotten rows is refused.
    ``ledger=True`` insists on recording (``out`` required); ``ledger=False`` records nothing --
    for experiments such as benchmarks, which are not deletion requests.

    ``already_forgotten`` (only without the ledger) names rows removed before this request:
    the method then forgets their union with ``forget_ids``.

    ``release`` (a :class:`~miniunlearn.privacy.ReleaseRequest`): publish ``theta + N(0, sigma^2 I)``
    calibrated on the method's certificate (:mod:`miniunlearn.service.release`); the returned and
    saved parameters are the noisy ones and ``stats["release"]`` records epsilon, delta, sigma, the
    certificate and the mechanism. A method without a finite certificate is refused.

    ``compact`` (``"never"``, ``"auto"``, ``"always"``; None: the run's default, see
    :mod:`miniunlearn.service.compact`): after a recorded request, compact the run when the policy
    says so; ``stats["compaction"]`` then holds the compaction's report.

    ``stats`` report ``n_forget`` (every row the model has forgotten since the run's base),
    ``n_forget_request`` (this request's own rows) and ``n_forgotten_before``; with the ledger
    also ``ledger``. A request by key also reports ``keys_without_training_rows``: keys whose rows
    were all held out for testing -- accepted, since the model never trained on them, and
    nothing is unlearned for them. When every key is such a key the request changes no model: it is
    served (and recorded as a deletion of zero rows) with the current model, see :func:`_unchanged`.
    """
    if not isinstance(run, Run):
        run = Run(run)
    if int(workers) < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    named = request_rows(run, forget_ids, keys)
    ids = named.rows if named.unchanged else validate_forget_ids(named.rows, run.n_train)
    algorithm = make_method(method, **options)
    algorithm.check_run(run)
    check_release(method, release)
    recorded = _records_to_ledger(ledger, out, already_forgotten)
    if compact is None:  # the run's default applies to recorded requests only (experiments record none)
        policy = run_policy(run) if recorded else "never"
    else:
        policy = check_policy(compact)
    if policy != "never" and not recorded:
        raise InputError("compaction works on the run's deletion ledger: give an output directory (out=...) "
                         "or compact='never'")
    if distributed.active():  # started by torchrun: rank 0 owns the ledger and the files, the others compute
        if policy != "never" and compact is not None:
            raise InputError(f"compact={compact!r} compacts in one process; under torchrun forget with "
                             "compact='never' and run `miniunlearn compact RUN` without torchrun afterwards")
        if not distributed.is_writer():
            return _follow_writer(run, algorithm, method, workers, progress)
        with handoff.leading():
            result = _forget_here(run, ids, algorithm, method, out, workers, overwrite, progress, already_forgotten,
                                  ledger, release, named)
        if policy != "never":  # the run's default policy: the request stands, the compaction waits
            result.stats["compaction_skipped"] = (f"the run's compaction policy {policy!r} is not applied under "
                                                  f"torchrun; run `miniunlearn compact {run.path}` in one process")
        return result
    result = _forget_here(run, ids, algorithm, method, out, workers, overwrite, progress, already_forgotten, ledger,
                          release, named)
    reason = compaction_due(run, policy) if policy != "never" and not named.unchanged else None
    if reason is not None:
        result.stats["compaction"] = {"reason": reason, **compact_run(run, progress, publish_to=out)}
        result.theta = run.theta()  # the new base's model: the exact optimum on the kept rows
    return result


def _follow_writer(run, algorithm, method: str, workers: int, progress) -> UnlearnResult | None:
    """Ranks > 0 of a torchrun job: compute the request rank 0 hands over, write nothing.

    Returns None when rank 0 served the request without computing (an identical repeat from the ledger).
    """
    _ = run.dataset  # fingerprint-check the data while rank 0 does the same (and plans with the ledger)
    job = handoff.await_work()
    if job is None:
        return None
    ids, cumulative = job
    return _compute(run, algorithm, method, ids, cumulative, workers, progress)


def _forget_here(run, ids, algorithm, method, out, workers, overwrite, progress, already_forgotten,
                 ledger, release, named: Named) -> UnlearnResult:
    """:func:`forget` after validation, in the process that writes (the only one, or rank 0)."""

    if _records_to_ledger(ledger, out, already_forgotten):
        return _forget_recorded(run, ids, algorithm, method, Path(out), workers, overwrite, progress, release,
                                named)

    previous = _previous_rows(already_forgotten, run.n_train)
    if not named.unchanged:
        ids = validate_forget_ids(ids, run.n_train, previous)
    _ = run.dataset  # load and fingerprint-check the data before anything is written or timed
    if out is not None:
        out = _prepare_out(run, out, overwrite)
    if named.unchanged and previous.size == 0:  # nothing forgotten at all: the run's own model
        result = _unchanged_result(run, run.theta(), method, algorithm, previous, named, "the run's base model")
    elif named.unchanged:
        result = _compute(run, algorithm, method, ids, previous, workers, progress)
        result.stats.update(named.stats(), unchanged=_UNCHANGED)
    else:
        result = publish(run, _compute(run, algorithm, method, ids, np.union1d(previous, ids), workers, progress),
                         release)
        result.stats.update(named.stats())
    if out is not None:
        digest = _save_model(run, out, result)
        _write_result_json(run, out, result, ids, np.union1d(previous, ids), digest, None)
    return result


def _records_to_ledger(ledger, out, already_forgotten) -> bool:

    if ledger not in (True, False, "auto"):
        raise InputError(f"ledger must be True, False or 'auto', got {ledger!r}")
    record = out is not None if ledger == "auto" else bool(ledger)
    if record and out is None:
        raise InputError("the deletion ledger records the model file: give an output directory (out=...)")
    if record and already_forgotten is not None:
        raise InputError("already_forgotten comes from the run's deletion ledger when requests are recorded; "
                         "pass it only with ledger=False")
    return record


def _previous_rows(already_forgotten, n_train: int) -> np.ndarray:

    if already_forgotten is None:
        return np.zeros(0, dtype=np.int64)
    previous = np.asarray(already_forgotten)
    if previous.size == 0:
        return np.zeros(0, dtype=np.int64)
    if previous.ndim != 1 or not np.issubdtype(previous.dtype, np.integer):
        raise InputError("already_forgotten must be a flat list of integer row ids")
    if previous.min() < 0 or previous.max() >= n_train:
        raise InputError(f"already_forgotten holds ids outside 0..{n_train - 1}")
    return np.unique(previous.astype(np.int64))


def _prepare_out(run, out, overwrite: bool) -> Path:
    """Create the output directory, refusing the run's own directory (it would replace the original model)."""

    out = Path(out)
    if out.resolve() == Path(run.path).resolve():
        raise InputError(f"--out {out} is the run directory itself; the unlearned model would replace the "
                         "original one. Choose another directory")
    return prepare_output_dir(out, RESULT_JSON, overwrite)


def _compute(run, algorithm, method: str, ids: np.ndarray, cumulative: np.ndarray, workers: int,
             progress) -> UnlearnResult:
    """Run ``algorithm`` on the original run with every row of ``cumulative`` forgotten."""


    handoff.start_work(ids, cumulative)  # rank 0 hands the rows to the other processes (no-op in one)
    ctx = UnlearnContext(run, cumulative, workers=int(workers), progress=progress)
    with measure() as timing:
        produced = algorithm.unlearn(ctx)
    theta, extra = produced if isinstance(produced, tuple) else (produced, {})
    if not torch.isfinite(theta).all():
        raise ConvergenceError(f"method {method!r} produced non-finite parameters; nothing was recorded as a "
                               "deletion. Try other options")
    if extra.get("converged") is False:
        raise ConvergenceError(f"method {method!r} did not converge ({extra.get('failure', 'see its statistics')}); "
                               "nothing was recorded as a deletion")
    stats = {
        "n_train": run.n_train,
        "n_forget": int(len(cumulative)),
        "n_forget_request": int(len(ids)),
        "n_forgotten_before": int(len(cumulative) - len(ids)),
        "ratio": len(cumulative) / run.n_train,
        **timing.as_dict(),
        "passes_forget": ctx.passes_forget,
        "passes_retained": ctx.passes_retained,
        "history_bytes_read": ctx.history_bytes_read,
        "threads": torch.get_num_threads(),
        "workers": int(workers),
        "processes": distributed.world_size(),
        **extra,
    }
    return UnlearnResult(theta, method, algorithm.options(), stats)


def _save_model(run, out: Path, result: UnlearnResult) -> str:
    """Write ``out/model.safetensors`` atomically; return its SHA-256."""

    return file_sha256(save_model(out, run.model, result.theta, {"source": f"forget:{result.method}"},
                                  run.preprocessing))


def _write_result_json(run, out: Path, result: UnlearnResult, ids, cumulative, model_sha256: str,
                       request_id: int | None) -> None:
    """``out/result.json``, written last: it marks the output directory complete."""

    atomic_write_json(Path(out) / RESULT_JSON, {
        "run": str(Path(run.path).resolve()), "ledger_request": request_id,
        "forget_ids_sha256": ids_sha256(ids), "cumulative_ids_sha256": ids_sha256(cumulative),
        "model_file": MODEL_FILE, "model_sha256": model_sha256, **result.summary()})


def _forget_recorded(run, ids, algorithm, method: str, out: Path, workers: int, overwrite: bool,
                     progress, release, named: Named) -> UnlearnResult:
    """:func:`forget` with the deletion ledger (see :mod:`miniunlearn.service.ledger` for the semantics)."""


    options_json = canonical_options(ledger_options(algorithm.options(), release))
    _refuse_run_dir(run, out)
    run.theta()  # the run's model must load: the ledger is bound to it by its hash
    _ = run.dataset  # load and fingerprint-check the data before anything is created or recorded
    with request_lock(run):
        if run.refresh():
            raise RunError(f"run {run.path} was compacted while this request waited for it: its rows are "
                           "numbered anew. Ask again (requests by key need no change)")
        with Ledger.open(run, create=True) as book:
            return _forget_locked(run, book, ids, algorithm, method, out, workers, overwrite, progress, release,
                                  named, options_json)


def _forget_locked(run, book, ids, algorithm, method, out, workers, overwrite, progress, release, named,
                   options_json) -> UnlearnResult:
    """:func:`_forget_recorded` while holding the request lock, with the ledger open."""
    book.abandon_stale()
    book.resolve_compactions()
    purge_previous(run, book)
    if named.unchanged:
        return _unchanged(run, book, algorithm, method, options_json, out, overwrite, named)
    plan = book.plan(ids, method, options_json, named.by)
    if plan.kind == "repeat":
        return _repeat(run, book, plan, method, options_json, out, overwrite, named)
    if plan.cumulative.size >= run.n_train:
        raise InputError(f"forget request: with the {plan.forgotten_before} rows forgotten before, these "
                         f"{ids.size} rows would remove every training row ({run.n_train}); at least one must remain")
    out = _prepare_out(run, out, overwrite or plan.is_same_request_dir(out))
    if plan.note:
        warnings.warn(f"ledger: {plan.note}", LedgerWarning, stacklevel=5)  # caller of forget() -> _forget_here -> _forget_recorded -> here
    request_id = book.begin(plan, method, options_json, out)
    try:
        result = publish(run, _compute(run, algorithm, method, ids, plan.cumulative, workers, progress), release)
        result.stats.update(named.stats())
        result.stats["ledger"] = _ledger_stats(book, request_id, plan)
        digest = _save_model(run, out, result)
        if plan.kind == "recompute":
            result.stats["ledger"]["identical_to_recorded"] = digest == plan.refers_to.model_sha256
        book.finish(request_id, digest, (out / MODEL_FILE).stat().st_size, result.stats)
    except BaseException as exc:
        book.fail(request_id, exc)
        raise
    _write_result_json(run, out, result, ids, plan.cumulative, digest, request_id)
    return result


class LedgerWarning(UserWarning):
    """A deletion request was served differently than asked (e.g. recomputed because a recorded model is gone)."""


def _same_dir(a, b) -> bool:
    return b is not None and Path(a).resolve() == Path(b).resolve()


def _refuse_run_dir(run, out: Path) -> None:
    """Refuse, before the ledger is touched, outputs that would replace a run's files."""

    if _same_dir(out, run.path):
        raise InputError(f"--out {out} is the run directory itself; the unlearned model would replace the "
                         "original one. Choose another directory")
    if (Path(out) / RUN_JSON).exists():
        raise RunError(f"{out} holds a training run ({RUN_JSON}); writing here would replace its files. "
                       "Choose another --out")


def _ledger_stats(book, request_id: int, plan) -> dict:
    forgotten = plan.forgotten_before + (len(plan.ids) if plan.kind == "deletion" else 0)
    return {"file": str(book.path), "request": request_id, "kind": plan.kind,
            "refers_to": None if plan.refers_to is None else plan.refers_to.id,
            "forgotten_rows_total": int(forgotten), **({"note": plan.note} if plan.note else {})}


_WORK_STATS = ("time_s", "cpu_time_s", "peak_rss_bytes", "passes_forget", "passes_retained", "history_bytes_read")


def _repeat(run, book, plan, method: str, options_json: str, out: Path, overwrite: bool,
            named: Named) -> UnlearnResult:
    """Serve an identical repeat from the recorded model: no recomputation, byte-identical file."""


    start, source = time.perf_counter(), plan.refers_to
    same_out = _same_dir(out, source.out_path)
    if not same_out:  # (a directory of an identical earlier request may be refreshed in place)
        out = _prepare_out(run, out, overwrite or plan.is_same_request_dir(out))
        atomic_copy(source.model_path, out / MODEL_FILE, expected_sha256=source.model_sha256)
    _, theta, _ = load_model(out)
    recorded = source.stats
    stats = {**recorded, "original": {k: recorded[k] for k in _WORK_STATS if k in recorded},
             "time_s": time.perf_counter() - start, "cpu_time_s": 0.0, "passes_forget": 0.0,
             "passes_retained": 0.0, "history_bytes_read": 0, **named.stats()}
    stats.pop("ledger", None)
    request_id = book.record_done(plan, method, options_json, out, source.model_sha256, source.model_bytes, stats)
    stats["ledger"] = _ledger_stats(book, request_id, plan)
    result = UnlearnResult(theta, method, method_options(source.options), stats)
    if not same_out or not (out / RESULT_JSON).exists():
        _write_result_json(run, out, result, plan.ids, plan.cumulative, source.model_sha256, request_id)
    return result


# ---------------------------------------------------------------------------------------------- unchanged
_UNCHANGED = ("every key named has only held-out test rows, which the model never trained on: nothing was "
              "unlearned and the model is unchanged")


def _unchanged_result(run, theta, method: str, algorithm, cumulative: np.ndarray, named: Named, source: str,
                      carried: dict | None = None) -> UnlearnResult:
    """The result of a request that changes no model: ``theta`` (the current model, from ``source``)."""
    stats = {"n_train": run.n_train, "n_forget": int(len(cumulative)), "n_forget_request": 0,
             "n_forgotten_before": int(len(cumulative)), "ratio": len(cumulative) / run.n_train,
             "time_s": 0.0, "cpu_time_s": 0.0, "peak_rss_bytes": 0, "passes_forget": 0.0, "passes_retained": 0.0,
             "history_bytes_read": 0, "threads": torch.get_num_threads(), "workers": 1,
             "processes": distributed.world_size(), **(carried or {}), **named.stats(),
             "unchanged": f"{_UNCHANGED} ({source})"}
    return UnlearnResult(theta, method, algorithm.options(), stats)


def _unchanged(run, book, algorithm, method: str, options_json: str, out: Path, overwrite: bool,
               named: Named) -> UnlearnResult:
    """Serve a request whose keys name held-out rows only: nothing to unlearn, the served model stays.

    The output directory gets the current model byte for byte -- the latest deletion's since the base
    (hash-checked), or the base's own model when nothing was forgotten since -- with result.json, and
    the ledger records a deletion of zero rows (its cumulative set: every row forgotten so far) that
    refers to the request whose model it serves. No method runs and no release is made: the model
    and every guarantee recorded for it stay what they were. Should the latest deletion's model be
    missing or damaged, it is computed again from the base with this request's method.
    """
    with measure() as timing:
        done = book.current_requests("done")
        forgotten = book.forgotten_ids_from(done)
        latest = next((r for r in reversed(done) if r.kind in FORGETTING_KINDS), None)
        plan = Plan("deletion", np.zeros(0, dtype=np.int64), forgotten, len(forgotten), latest,
                    note=_UNCHANGED, requested_by=named.by)
        out = _prepare_out(run, out, overwrite)
        if latest is None:
            atomic_copy(run.base.dir / MODEL_FILE, out / MODEL_FILE)
            source, carried = "the run's base model", {}
        elif latest.model_problem() is None:
            atomic_copy(latest.model_path, out / MODEL_FILE, expected_sha256=latest.model_sha256)
            source = f"request #{latest.id}'s model"
            carried = {k: v for k, v in latest.stats.items() if k in _CARRIED}
        else:
            theta = _compute(run, algorithm, method, plan.ids, forgotten, 1, None).theta
            save_model(out, run.model, theta, {"source": f"forget:{method}"}, run.preprocessing)
            source, carried = f"computed again: {latest.model_problem()}", {}
    _, theta, _ = load_model(out)
    result = _unchanged_result(run, theta, method, algorithm, forgotten, named, source, carried)
    result.stats.update(timing.as_dict())
    digest = file_sha256(out / MODEL_FILE)
    request_id = book.record_done(plan, method, options_json, out, digest, (out / MODEL_FILE).stat().st_size,
                                  result.stats)
    result.stats["ledger"] = _ledger_stats(book, request_id, plan)
    _write_result_json(run, out, result, plan.ids, forgotten, digest, request_id)
    return result


# what a model served unchanged keeps of the statistics recorded for it: its guarantees
_CARRIED = ("certificate", "certified_relative", "release")
