"""The solver thread: takes queued deletion requests in coalesced batches and serves each batch with
one certified solve through :func:`miniunlearn.service.forget`.

One batch = the oldest queued request and the queued requests after it with the same options
(tol, epsilon, delta), at most ``max_batch``. Their rows are united (rows already forgotten --
by the ledger -- or named twice count once) and forgotten in one ledger request, so the result
equals the certified solve for the union; every request keeps its own id, status and receipt.
A batch whose solve is refused (e.g. the union would leave a class without rows) goes back to
the queue with each request marked to be served alone, so one bad request cannot fail others.

Order of a solve (each step durable before the next): the queue records the solve and its output
directory and marks its requests ``running``; ``forget`` records the ledger request ``started``,
writes the model, marks it ``done``; the served model is swapped; the queue marks the requests
``done``. :meth:`Worker.recover` settles a solve interrupted anywhere in between (module
docstring of :mod:`miniunlearn.server.queue`), so a request acknowledged before a SIGKILL is done
exactly once after the restart.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import threading
import time
import traceback
import uuid
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from miniunlearn.core.errors import MiniUnlearnError
from miniunlearn.core.storage import remove_tree_durably
from miniunlearn.privacy import ReleaseRequest
from miniunlearn.server.queue import Deletion, DeletionQueue
from miniunlearn.server.receipts import SERVE_DIR
from miniunlearn.service import forget
from miniunlearn.service.compact import compact
from miniunlearn.service.ledger import Ledger
from miniunlearn.service.requests import request_rows

log = logging.getLogger("miniunlearn.server")
SOLVES_DIR = "solves"
METHOD = "mini"


def key_sha256(key: str) -> str:
    """SHA-256 of a key's canonical text (UTF-8): what receipts hold instead of the key."""
    return hashlib.sha256(str(key).encode("utf-8")).hexdigest()


def _seconds_since(stamp: str) -> float:
    return max(0.0, time.time() - _dt.datetime.fromisoformat(stamp).timestamp())


class Worker:
    """One thread that serves the queue (and compactions) in order."""

    def __init__(self, state, queue: DeletionQueue, config, metrics=None):
        self.state, self.queue, self.config, self.metrics = state, queue, config, metrics
        self._wake = threading.Condition()
        self._stop = False
        self._compactions: list[Future] = []
        self._thread = threading.Thread(target=self._loop, name="miniunlearn-solver", daemon=True)
        self.solves = 0

    # -- control ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the running solve (its requests then are done), take no new one, and end the thread."""
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit_compaction(self) -> Future:
        future: Future = Future()
        with self._wake:
            self._compactions.append(future)
            self._wake.notify_all()
        return future

    def _loop(self) -> None:
        while True:
            with self._wake:
                if self._stop:
                    return
                job = self._compactions.pop(0) if self._compactions else None
            if job is not None:
                self._compact(job)
                continue
            batch = self.queue.next_batch(self.config.max_batch)
            if batch:
                try:
                    self.serve(batch)
                except Exception:  # keep serving: the requests stay queued/running and recovery settles them
                    log.error("solver error:\n%s", traceback.format_exc())
                    time.sleep(0.5)
                continue
            with self._wake:
                if not self._stop and not self._compactions:
                    self._wake.wait(0.5)

    # -- one batch -------------------------------------------------------------------------------------
    def rows_of(self, request: Deletion) -> np.ndarray:
        """The training rows a queued request names, in the run's current base (InputError if impossible).
        Keys whose rows were all held out for testing name no row, as in ``miniunlearn forget --keys``."""
        run = self.state.run
        if request.requested_by == "keys":
            return np.asarray(request_rows(run, keys=[str(k) for k in request.names]).rows, dtype=np.int64)
        if request.generation != run.generation:
            raise _Refused(f"the request names row numbers of base generation {request.generation}, but the run was "
                           f"compacted since (now generation {run.generation}) and its rows renumbered; "
                           "name the people by key instead")
        rows = np.asarray(request.names, dtype=np.int64)
        bad = rows[(rows < 0) | (rows >= run.n_train)]
        if bad.size:
            raise _Refused(f"row {int(bad[0])} is out of range 0..{run.n_train - 1}")
        return np.unique(rows)

    def serve(self, batch: list[Deletion]) -> None:
        run = self.state.run
        run.refresh()  # another process may have compacted the run
        resolved: dict[str, np.ndarray] = {}
        for request in batch:
            try:
                resolved[request.id] = self.rows_of(request)
            except MiniUnlearnError as exc:
                self.queue.fail([request.id], str(exc))
                self._count("failed")
        live = [r for r in batch if r.id in resolved]
        if not live:
            return
        forgotten = _forgotten(run)
        union = np.setdiff1d(np.unique(np.concatenate([resolved[r.id] for r in live])), forgotten)
        before = self.state.model
        if union.size == 0:  # every row is forgotten already (e.g. a repeat by another client): nothing to solve
            results = {r.id: self._result(r, resolved[r.id], before.sha256, before, None, len(live), 0, {})
                       for r in live}
            self.queue.finish([r.id for r in live], results)
            self._finished(live)
            return
        self._solve(live, resolved, union, before)

    def _solve(self, live, resolved, union, before) -> None:
        run = self.state.run
        out_rel = f"{SERVE_DIR}/{SOLVES_DIR}/{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        ids = [r.id for r in live]
        solve_id = self.queue.begin_solve(ids, out_rel, int(union.size), before.sha256)
        options = live[0].options
        release = None if options.get("epsilon") is None else ReleaseRequest(options["epsilon"], options["delta"])
        start = time.perf_counter()
        named = _by_keys(run, live, union)
        try:
            result = forget(run, None if named else union, keys=named, method=METHOD, out=Path(run.path) / out_rel,
                            ledger=True, release=release, tol=options.get("tol") or self.config.default_tol)
        except MiniUnlearnError as exc:
            if len(live) > 1:  # serve each alone: one request must not fail the others
                self.queue.requeue(solve_id, solo=True)
            else:
                self.queue.fail(ids, str(exc), solve_id)
                self._count("failed")
            remove_tree_durably(Path(run.path) / out_rel)
            return
        if self.metrics is not None:
            self.metrics.solve_seconds.observe(time.perf_counter() - start)
            self.metrics.batch_size.observe(len(live))
        self.solves += 1
        ledger_id = int(result.stats["ledger"]["request"])
        self._settle(live, resolved, solve_id, ledger_id, before.sha256)

    def _settle(self, live, resolved, solve_id: int, ledger_id: int, before_sha256: str) -> None:
        """Swap the served model to the ledger's latest, then mark the solve's requests done."""
        record = _ledger_request(self.state.run, ledger_id)
        served = self.state.swap()
        results = {r.id: self._result(r, resolved[r.id], before_sha256, served, record, len(live), solve_id,
                                      record.stats) for r in live}
        self.queue.finish([r.id for r in live], results, solve_id, ledger_id)
        self._finished(live)

    def _result(self, request: Deletion, rows, before_sha256: str, served, record, batch: int, solve_id: int,
                stats: dict) -> dict:
        """What GET /v1/deletions/{id} and the receipt report for one request."""
        run = self.state.run
        names = [str(k) for k in request.names] if request.requested_by == "keys" else run.keys_of(rows)
        release = stats.get("release") or None
        return {
            "key_sha256": sorted({key_sha256(k) for k in names}), "n_keys": len(set(names)), "n_rows": int(len(rows)),
            "method": METHOD, "tol": stats.get("tol", request.options.get("tol") or self.config.default_tol),
            "certificate": stats.get("certificate", served.certificate),
            "certified_relative": stats.get("certified_relative", served.certified_relative),
            "release": None if release is None else {k: release.get(k) for k in ("epsilon", "delta", "sigma",
                                                                                   "mechanism")},
            "model_sha256_before": before_sha256,
            "model_sha256": record.model_sha256 if record is not None else served.sha256,
            "served_model_sha256": served.sha256,
            "ledger_request": None if record is None else record.id,
            "ledger_row_sha256": None if record is None else record.row_sha256,
            "solve_id": solve_id or None, "coalesced_requests": batch,
            "rows_solved": int(stats.get("n_forget_request", 0)),
            "note": None if record is not None else "no row left to forget: its training rows were forgotten by "
                                                    "earlier requests (or it named none)",
            "timings": {"solve_s": stats.get("time_s"), "queue_to_done_s": _seconds_since(request.received_at)},
        }

    def _finished(self, requests: list[Deletion]) -> None:
        if self.metrics is None:
            return
        for request in requests:
            self.metrics.deletion_seconds.observe(_seconds_since(request.received_at))
        self._count("done", len(requests))
        self.metrics.observe_model(self.state.model)

    def _count(self, status: str, n: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.deletions.labels(status=status).inc(n)

    # -- recovery and compaction -------------------------------------------------------------------------
    def recover(self) -> dict:
        """Settle solves interrupted by a crash or a stop (see the module docstring); returns counts."""
        run = self.state.run
        report = {"completed": 0, "requeued": 0}
        for solve_id, out_rel in self.queue.running_solves():
            requests = self.queue.requests_of(solve_id)
            record = _done_request_for(run, Path(run.path) / out_rel)
            if record is None:
                report["requeued"] += len(self.queue.requeue(solve_id))
                remove_tree_durably(Path(run.path) / out_rel)
                continue
            resolved = {r.id: self.rows_of(r) for r in requests}
            self._settle(requests, resolved, solve_id, record.id, self.queue.solve_before(solve_id))
            report["completed"] += len(requests)
        self.state.swap()
        return report

    def _compact(self, job: Future) -> None:
        if not job.set_running_or_notify_cancel():
            return
        try:
            self.state.run.refresh()
            report = compact(self.state.run)
            self.state.run.refresh()
            self.state.swap()
            if self.metrics is not None:
                self.metrics.observe_model(self.state.model)
            job.set_result(report)
        except BaseException as exc:  # handed to the waiting request
            job.set_exception(exc)


class _Refused(MiniUnlearnError):
    """A queued request that cannot be served as named."""


def _by_keys(run, requests: list[Deletion], union: np.ndarray) -> list[str] | None:
    """The keys of ``union`` when every request named keys and those keys hold exactly these rows (the
    ledger then records the deletion as by key), else None (by rows)."""
    if any(r.requested_by != "keys" for r in requests):
        return None
    keys = list(dict.fromkeys(run.keys_of(union)))
    return keys if np.array_equal(np.sort(run.rows_for_keys(keys)), union) else None


def _forgotten(run) -> np.ndarray:
    if not Ledger.exists(run):
        return np.zeros(0, dtype=np.int64)
    with Ledger.open(run) as book:
        return book.forgotten_ids()


def _ledger_request(run, request_id: int):
    with Ledger.open(run) as book:
        return book.request(request_id)


def _done_request_for(run, out_dir: Path):
    """The completed ledger request whose model was written to ``out_dir`` (None if there is none)."""
    if not Ledger.exists(run):
        return None
    target = out_dir.resolve()
    with Ledger.open(run) as book:
        for record in book.requests("done"):
            if record.out_path is not None and record.out_path.resolve() == target:
                return record
    return None
