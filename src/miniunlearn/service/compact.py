"""Compaction: make the optimum on the rows kept so far the run's new base, and purge the rest.

Every deletion request computes from the run's *base* -- its model w_T, Mini-Unlearning's history
(G_D(w_T), the curvature) and its rows -- with every row forgotten since that base. Those are
functions of the forgotten rows, so a run that only ever answers requests keeps them forever.
``compact(run)`` ends that:

1. from the latest unlearned model (a certified near-optimum of F_R), Newton-CG solves F_R
   exactly, to the run's training tolerance, on the kept rows R;
2. the history is rebuilt from R at that optimum, exactly as training records it;
3. model, history, R's keys (and, for data stored in the run, R's rows) become base generation
   g+1 (:mod:`miniunlearn.runs.bases`): built under a temporary name, renamed into place, and
   made current by rewriting run.json atomically -- a kill leaves the old base or the new one;
4. the previous base's files and every recorded model computed from it are removed, and the
   ledger records the compaction (ids, keys and hashes only) with the list of removed files.

Standardised features whose statistics were fitted on the training rows are refitted on R, so
nothing in the new base -- model, preprocessing, history, fingerprint -- depends on a dropped
row: the base equals ``train`` on R's raw rows. Fixed scalings (e.g. pixels / 255) stay.

After a compaction row ids are those of the new base (0..|R|-1, in the old order); keys do not
change, and the data source may drop the forgotten rows (:func:`miniunlearn.runs.bases.select_base_rows`).

Policy (:func:`compaction_due`): ``forget(..., compact="auto")`` compacts after a request when the
rows forgotten since the base reach ``AUTO_SHARE`` of the base's rows, or when the latest model's
certified distance to retraining exceeds ``AUTO_CERTIFIED_RELATIVE`` times the distance it moved
from the base (a request served with a small ``refine`` budget). A run's default is set with
:func:`set_policy` (``miniunlearn compact RUN --policy auto``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from miniunlearn.core.errors import ConvergenceError, InputError
from miniunlearn.core.measure import measure
from miniunlearn.core.progress import progress_bar
from miniunlearn.core.storage import (
    atomic_copy,
    atomic_write_json,
    file_sha256,
    read_json,
    remove_durably,
    remove_tree_durably,
)
from miniunlearn.data.dataset import restandardized
from miniunlearn.data.preprocessing import STANDARDIZE, Preprocessing, RunningMoments
from miniunlearn.evaluation.metrics import accuracy
from miniunlearn.history import resolve_profile
from miniunlearn.models import Objective, Rows
from miniunlearn.models.penalty import Penalty
from miniunlearn.models.rows import retained_ids
from miniunlearn.runs import (
    DROPPED_KEYS_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    RESULT_JSON,
    RUN_JSON,
    Run,
    load_model,
    save_model,
    update_run_meta,
)
from miniunlearn.runs.bases import (
    BASE_FORMAT,
    base_pointer,
    select_base_rows,
    stale_paths,
    write_base_folder,
)
from miniunlearn.runs.stored import store_data, store_keys
from miniunlearn.runs.train import record_mini_history
from miniunlearn.service.ledger import Ledger, encode_keys, ids_sha256, keys_sha256, request_lock
from miniunlearn.solvers.newton import newton_cg

__all__ = ["compact", "compaction_due", "set_policy", "run_policy", "POLICIES", "AUTO_SHARE",
           "AUTO_CERTIFIED_RELATIVE"]

POLICIES = ("never", "auto", "always")
AUTO_SHARE = 0.10               # compact once 10 % of the base's rows are forgotten since it was made
AUTO_CERTIFIED_RELATIVE = 1e-2  # ... or the latest model's certificate exceeds 1 % of ||w - w_base||
POLICY_KEY = "compaction_policy"


# ---------------------------------------------------------------------------------------------- policy
def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise InputError(f"compaction policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    return policy


def run_policy(run) -> str:
    """The run's default compaction policy (``never`` unless set with :func:`set_policy`)."""
    value = (run.meta.get(POLICY_KEY) or {}).get("policy", "never") if isinstance(run.meta.get(POLICY_KEY), dict) \
        else "never"
    return check_policy(value)


def set_policy(run, policy: str) -> None:
    """Record ``policy`` as the run's default for forget requests (run.json, atomically)."""
    run = run if isinstance(run, Run) else Run(run)
    update_run_meta(run.path, **{POLICY_KEY: {"policy": check_policy(policy), "share": AUTO_SHARE,
                                              "certified_relative": AUTO_CERTIFIED_RELATIVE}})
    run.refresh()


def compaction_due(run, policy: str) -> str | None:
    """Why ``policy`` asks for a compaction now (None: it does not)."""
    check_policy(policy)
    if policy == "never" or run.mode != "converged" or not Ledger.exists(run):
        return None
    with Ledger.open(run) as book:
        forgotten = book.forgotten_ids()
        latest = [r for r in book.current_requests("done") if r.kind == "deletion"]
    if forgotten.size == 0:
        return None
    share = forgotten.size / run.n_train
    if policy == "always":
        return "policy always"
    if share >= AUTO_SHARE:
        return f"{share:.1%} of the base's rows forgotten since it was made (threshold {AUTO_SHARE:.0%})"
    relative = latest[-1].stats.get("certified_relative") if latest else None
    if relative is not None and relative > AUTO_CERTIFIED_RELATIVE:
        return (f"the latest model's certificate is {relative:.2g} x ||w - w_base|| "
                f"(threshold {AUTO_CERTIFIED_RELATIVE:g})")
    return None


# ---------------------------------------------------------------------------------------------- compact
def compact(run, progress=None, publish_to: str | Path | None = None) -> dict:
    """Make the exact optimum on the run's kept rows its new base; returns a report (see the module docstring).

    Raises :class:`InputError` when nothing was forgotten since the last base or the run is not a
    converged one, :class:`ConvergenceError` when Newton-CG does not reach the training tolerance
    (nothing changes then).

    ``publish_to`` (the output directory of the request that triggered the compaction): its
    model, computed from the previous base, is replaced by the new base's model, with a
    ``result.json`` saying so -- until the next compaction removes it in turn.
    """
    run = run if isinstance(run, Run) else Run(run)
    if run.mode != "converged":
        raise InputError(f"run {run.path} was trained in {run.mode} mode; only converged runs can be compacted "
                         "(their base is an optimum)")
    if not Ledger.exists(run):
        raise InputError(f"no row of run {run.path} has been forgotten yet (it has no deletion ledger); "
                         "nothing to compact")
    with request_lock(run):
        run.refresh()
        with Ledger.open(run, create=True) as book:
            book.abandon_stale()
            book.resolve_compactions()
            leftovers = purge_previous(run, book)
            return _compact_locked(run, book, leftovers, progress, publish_to)


def _compact_locked(run: Run, book: Ledger, leftovers: list[str], progress, publish_to) -> dict:
    forgotten = book.forgotten_ids()
    if forgotten.size == 0:
        raise InputError(f"no row of run {run.path} was forgotten since its last compaction; nothing to compact")
    with measure() as total:
        dataset = run.dataset  # the current base's rows, fingerprint-checked
        keep = retained_ids(run.n_train, forgotten)
        keys = run.keys()
        new_keys = keys[keep]
        before = run.dropped_keys()
        dropped_now = keys[forgotten]
        new_dropped = dropped_now if before is None else np.concatenate([before, dropped_now])
        old_pre = run.preprocessing
        new_pre = _refit_statistics(old_pre, dataset.X_train, keep)
        rows_ds = _base_rows(run, dataset, keep, new_pre, new_keys, new_dropped)
        fingerprint = rows_ds.fingerprint()

        theta0, warm = _warm_start(run, book, forgotten, old_pre, new_pre)
        config = run.config
        model = run.model
        penalty = _penalty(run)
        objective = Objective(model, Rows(rows_ds.X_train, rows_ds.y_train,
                                          chunk_rows=int(config.get("chunk_rows", 8192))), penalty)
        tol = float(config.get("tol", 1e-9))
        with progress_bar(f"compact: solve F_R ({len(keep)} rows)", None) as advance, measure() as solve_timing:
            start_grad = float(objective.value_grad(theta0)[1].norm())
            theta, info = newton_cg(objective, theta0, tol, int(config.get("max_iter", 100)), progress=advance)
            theta = penalty.project(theta)
        if not info.converged:
            raise ConvergenceError(f"compaction: Newton-CG stopped at ||grad F_R|| = {info.grad_norm:.3e} > tol "
                                   f"{tol:g} after {info.iterations} iterations; the run keeps its base")
        solve = {**info.as_dict(), "start_grad_norm": start_grad, "warm_start": warm, **solve_timing.as_dict()}

        history = history_meta = None
        recorded = run.base.mini_history_record
        if recorded is not None:
            # the same profile and options as the base's (runs from before profiles had options: by name and dtype)
            spec = recorded.get("profile_spec") or _legacy_spec(recorded)
            profile = resolve_profile(spec, model)
            history, history_meta = record_mini_history(objective, theta, profile, fingerprint,
                                                        recorded.get("history_budget"))
        generation = run.generation + 1

        def write(folder: Path) -> dict:
            described = {"n_train": int(len(keep)), "fingerprint": fingerprint, "n_test": int(rows_ds.n_test),
                         "spec": run.spec}
            if history is not None:
                history_meta["bytes"] = history.save(folder / HISTORY_FILE)
            save_model(folder, model, theta, {"source": "compact", "generation": str(generation)}, new_pre)
            described["keys"] = store_keys(folder, new_keys)
            described["dropped_keys"] = store_keys(folder, np.asarray(new_dropped), DROPPED_KEYS_FILE)
            if run.base.stored is not None:
                described["stored"] = store_data(folder, rows_ds)
            files = {p.relative_to(folder).as_posix(): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
            return {"format": BASE_FORMAT, "generation": generation, "previous_generation": run.generation,
                    "dataset": described, "history": {"mini": history_meta} if history_meta else {},
                    "solve": solve, "files": files,
                    "metrics": {"train_accuracy": accuracy(model, theta, rows_ds.X_train, rows_ds.y_train),
                                "test_accuracy": accuracy(model, theta, rows_ds.X_test, rows_ds.y_test)},
                    "preprocessing": "refitted on the kept rows" if new_pre is not old_pre else "unchanged"}

        folder, record_sha = write_base_folder(run.path, generation, write)
        compaction_id = book.begin_compaction({
            "generation": generation, "after_request": book.last_request_id(),
            "warm_start_request": warm.get("request"), "n_before": run.n_train, "n_after": int(len(keep)),
            "n_dropped": int(len(dropped_now)), "dropped_ids_sha256": ids_sha256(forgotten),
            "dropped_keys_sha256": keys_sha256(run.keys_of(forgotten)),
            "dropped_keys_blob": encode_keys(run.keys_of(forgotten)), "base_fingerprint": fingerprint,
            "base_model_sha256": file_sha256(folder / MODEL_FILE), "base_record_sha256": record_sha,
            "removed_json": None, "stats_json": None, "note": None})
        update_run_meta(run.path, base=base_pointer(generation, record_sha))  # the switch
        previous_generation = run.generation
        run.refresh()
        run.__dict__["dataset"] = rows_ds  # the new base's rows, fingerprinted above: no reload for the next request
        removed = leftovers + purge_previous(run, book)
    stats = {**total.as_dict(),
             "solve": solve, "history": history_meta}
    book.finish_compaction(compaction_id, removed, stats)
    if publish_to is not None:
        _publish_base(run, Path(publish_to), compaction_id, generation)
    return {"run": str(run.path), "compaction": compaction_id, "generation": generation,
            "previous_generation": previous_generation, "n_before": int(run.n_train + len(dropped_now)),
            "n_after": int(len(keep)), "n_dropped": int(len(dropped_now)),
            "n_dropped_total": int(len(new_dropped)), "base_dir": str(folder), "removed": removed,
            "preprocessing": "refitted on the kept rows" if new_pre is not old_pre else "unchanged",
            **stats}


def _legacy_spec(recorded: dict) -> str:
    """The profile spec of a history recorded before profiles had options: its name and dtype."""
    name, dtype = recorded.get("profile", "exact"), recorded.get("curvature_dtype", "float64")
    return f"exact:dtype={dtype}" if name == "exact" and dtype != "float64" else name


def _penalty(run):
    return Penalty(run.model, run.l2, run.penalize_intercept)


def _refit_statistics(pre: Preprocessing, X: np.ndarray, keep: np.ndarray) -> Preprocessing:
    """Standardisation fitted on the training rows is refitted on the kept rows (from their raw
    values); other preprocessing (none, or a fixed scaling) is returned as it is."""
    if not pre.scaled or not pre.description.startswith(STANDARDIZE):
        return pre
    moments = RunningMoments(X.shape[1])
    chunk = 1 << 15
    for start in range(0, len(keep), chunk):
        moments.update(pre.inverse(X[keep[start:start + chunk]]))
    mean, scale = moments.mean_and_scale()
    return Preprocessing(pre.classes, mean, scale, pre.feature_names, pre.description, pre.split)


def _base_rows(run: Run, dataset, keep: np.ndarray, new_pre: Preprocessing, new_keys, new_dropped):
    """The new base's rows, made the way later processes will load them."""

    if run.base.stored is None:
        return run.rows_of(new_pre, new_keys, new_dropped)
    # data stored in the run: the kept rows, restandardised, in float32 (how they are stored)
    selected = select_base_rows(dataset, new_keys, new_dropped, f"the data stored in run {run.path}") \
        if dataset.keys is not None else dataclasses.replace(
            dataset, X_train=np.ascontiguousarray(dataset.X_train[keep]),
            y_train=np.asarray(dataset.y_train)[keep], keys=new_keys, _fingerprint=[])
    if new_pre is not run.preprocessing:
        selected = restandardized(selected, new_pre)
    return dataclasses.replace(selected, X_train=np.asarray(selected.X_train, dtype=np.float32),
                               X_test=np.asarray(selected.X_test, dtype=np.float32), _fingerprint=[])


def _warm_start(run: Run, book: Ledger, forgotten: np.ndarray, old_pre: Preprocessing,
                new_pre: Preprocessing) -> tuple[torch.Tensor, dict]:
    """The latest unlearned model that forgot every row forgotten since the base (its file intact),
    mapped to the new base's features; the base's own model when there is none."""
    current = [r for r in run_requests(book) if np.array_equal(r.cumulative_ids(), forgotten)]
    warm = {"request": None, "from": "the base model (no intact unlearned model of the current forgotten set)"}
    theta = None
    for request in reversed(current):
        if request.model_problem() is None and "release" not in request.stats:
            _, theta, _ = load_model(request.model_path)
            warm = {"request": request.id, "from": f"request #{request.id} ({request.method})"}
            break
    if theta is None:
        theta = run.theta()
    if new_pre is not old_pre:  # the same logits on every raw row, in the new features
        linear = run.model.to_linear(theta)
        w_raw, b_raw = old_pre.raw_linear(linear["weight"].numpy(), linear["bias"].numpy())
        weight, bias = new_pre.feature_linear(w_raw, b_raw)
        theta = run.model.from_linear(torch.from_numpy(weight), torch.from_numpy(bias))
    return theta.to(torch.float64), warm


def run_requests(book: Ledger) -> list:
    return book.current_requests("done")


def _publish_base(run: Run, out: Path, compaction_id: int, generation: int) -> None:
    """Put the new base's model into ``out`` (result.json written last: the directory is complete)."""
    out.mkdir(parents=True, exist_ok=True)
    digest = atomic_copy(run.base.dir / MODEL_FILE, out / MODEL_FILE)
    atomic_write_json(out / RESULT_JSON, {
        "run": str(Path(run.path).resolve()), "compaction": compaction_id, "base_generation": generation,
        "model_file": MODEL_FILE, "model_sha256": digest, "method": "compact",
        "note": "the run was compacted after this request: this is the new base's model, the exact optimum on "
                "the kept rows"})


# ---------------------------------------------------------------------------------------------- purge
def purge_previous(run: Run, book: Ledger) -> list[str]:
    """Remove what earlier bases left: their files, half-built bases, and every recorded model
    computed from an earlier base. Call while holding the request lock. Returns the removed paths
    (relative to the run directory when inside it)."""
    paths = stale_paths(run.path, run.meta)
    after = book.base_after_request()
    for request in book.requests():
        if request.id > after or request.out_path is None or (request.out_path / RUN_JSON).exists():
            continue
        if _from_earlier_base(request, run.generation):
            paths += [p for p in (request.out_path / MODEL_FILE, request.out_path / RESULT_JSON) if p.is_file()]
    removed = []
    for path in paths:
        if path.is_dir():
            remove_tree_durably(path)
        else:
            remove_durably(path)
            parent = path.parent
            if parent != Path(run.path) and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        removed.append(_shown(run, path))
    return removed


def _from_earlier_base(request, generation: int) -> bool:
    """True when the request's output directory holds a model computed from an earlier base: the
    model it recorded, or an earlier base's model published there by a compaction."""
    model = request.out_path / MODEL_FILE
    if not model.is_file():
        return (request.out_path / RESULT_JSON).is_file()
    if request.model_sha256 is not None and file_sha256(model) == request.model_sha256:
        return True
    try:
        published = read_json(request.out_path / RESULT_JSON, RESULT_JSON).get("base_generation")
    except Exception:  # noqa: BLE001 - an unreadable marker: not ours to judge, leave the files
        return False
    return isinstance(published, int) and published < generation


def _shown(run: Run, path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(run.path).resolve()).as_posix()
    except ValueError:
        return str(path)
