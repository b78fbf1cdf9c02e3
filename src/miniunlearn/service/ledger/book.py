"""The :class:`Ledger` of one run: opening (creation, identity, migration), reading and recording
requests and compactions, and checking what it records."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
from pathlib import Path
from typing import Iterator

import numpy as np

from miniunlearn.core.errors import InputError, RunError
from miniunlearn.core.storage import file_sha256, read_json, to_json
from miniunlearn.runs import LEDGER_FILE, MODEL_FILE, RUN_JSON, update_run_meta
from miniunlearn.service.ledger import store
from miniunlearn.service.ledger.codec import (IDS_ENCODING, KEYS_ENCODING, encode_ids, encode_keys, ids_sha256,
                                              keys_sha256, row_digest, utc_now)
from miniunlearn.service.ledger.lock import lock_held
from miniunlearn.service.ledger.planning import Plan, forgotten_ids_from, plan_request
from miniunlearn.service.ledger.records import (FORGETTING_KINDS, KINDS, STATUSES, Compaction, Request, bound_column,
                                                stats_column, superseded)
from miniunlearn.service.ledger.store import SCHEMA_VERSION, sqlite_errors


class Ledger:
    """The ledger of one run. Use :meth:`open`; every method maps SQLite errors to :class:`RunError`."""

    def __init__(self, run, connection: sqlite3.Connection, path: Path, writer: bool = False):
        self.run = run
        self.path = path
        self.writer = writer
        self._db = connection
        self._columns = store.REQUEST_COLUMNS[SCHEMA_VERSION]
        self._has_compactions = False

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def path_for(cls, run) -> Path:
        return Path(run.path).resolve() / LEDGER_FILE

    @classmethod
    def exists(cls, run) -> bool:
        """True when the run has a ledger; a run whose ``run.json`` records one that is gone is refused."""
        if cls.path_for(run).is_file():
            return True
        _refuse_lost(run, cls.path_for(run))
        return False

    @classmethod
    def open(cls, run, create: bool = False) -> "Ledger":
        """Open ``run``'s ledger, checking its integrity and that it belongs to this run.

        With ``create`` the ledger is opened for recording requests (call only while holding
        :func:`~miniunlearn.service.ledger.lock.request_lock`): a missing ledger is created --
        atomically (built in a temporary file and renamed), so ``ledger.sqlite`` either does not
        exist or holds the full schema; an empty or schema-less file is therefore always damage,
        never a half-made ledger -- and an older version is migrated. Without ``create`` it is
        opened to read, writing nothing.
        """
        path = cls.path_for(run)
        if not path.is_file():
            if path.exists():
                raise RunError(f"ledger {path} is not a file")
            _refuse_lost(run, path)
            if not create:
                raise RunError(f"run {run.path} has no ledger ({LEDGER_FILE}): no deletion request was recorded")
            store.create_file(path, _new_meta(run))
        if path.stat().st_size == 0:
            raise RunError(f"ledger {path} is empty (truncated?); the record of forgotten rows is lost. Restore it "
                           "from a backup; models already written are unaffected")
        with sqlite_errors(path, "open"):
            db = store.connect(path, writer=create)
        ledger = cls(run, db, path, writer=create)
        try:
            with sqlite_errors(path, "open"):
                ledger._prepare()
            if create:
                _record_in_run(run)
        except BaseException:
            db.close()
            raise
        return ledger

    def _prepare(self) -> None:
        version, tables = store.check_schema(self._db, self.path)
        self._columns = store.REQUEST_COLUMNS[version]
        if self.writer:
            store.set_writer_pragmas(self._db)
        self._has_compactions = "compactions" in tables
        self._check_identity()
        if self.writer and version == 1:
            self._migrate_from_v1()
        if self.writer and version < 3:
            with self._transaction():
                store.migrate_v2_to_v3(self._db)
            self._has_compactions = True

    def _migrate_from_v1(self) -> None:
        """Version 1 -> 2 in one transaction: verify every row, add keys, relative paths, new checksums."""
        rows = self.requests()  # every version-1 checksum is verified here
        rewritten = []
        for request in rows:
            keys = self.run.keys_of(request.ids())
            values = {c: getattr(request, c) for c in store.REQUEST_COLUMNS_V2 if c != "row_sha256"}
            values.update(keys_sha256=keys_sha256(keys), keys_blob=encode_keys(keys), requested_by="rows",
                          out_dir=self._relative(request.out_path))
            rewritten.append(values)
        with self._transaction():
            store.migrate_v1_to_v2(self._db, rewritten)
            self._columns = store.REQUEST_COLUMNS_V2

    def _relative(self, out_dir: Path | None) -> str | None:
        """``out_dir`` relative to the run directory (how version 2 records it)."""
        if out_dir is None:
            return None
        return os.path.relpath(Path(out_dir).resolve(), Path(self.run.path).resolve())

    def meta(self) -> dict:
        with sqlite_errors(self.path, "read"):
            return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def _check_identity(self) -> None:
        generation = getattr(self.run, "generation", 0)
        if generation > 0:
            self._check_base_identity(generation)
            return
        meta = self.meta()
        if meta.get("run_fingerprint") != self.run.fingerprint or meta.get("run_n_train") != str(self.run.n_train):
            raise RunError(f"ledger {self.path} belongs to a run trained on other data (fingerprint "
                           f"{str(meta.get('run_fingerprint'))[:23]}... != run's {self.run.fingerprint[:23]}...); "
                           "its deletion records do not describe this run. Move it away to start a new ledger")
        model = Path(self.run.path) / MODEL_FILE
        try:
            digest = file_sha256(model)
        except OSError as exc:
            raise RunError(f"cannot read the run's model {model}: {exc.strerror or exc}") from None
        if digest != meta.get("run_model_sha256"):
            raise RunError(f"the run's model {model} changed since its ledger {self.path} was started "
                           f"(SHA-256 {digest[:16]}... != recorded {str(meta.get('run_model_sha256'))[:16]}...): "
                           "the run was retrained or its model replaced, so the recorded deletions no longer "
                           "describe it. Restore the original model, or move the ledger away to start a new one")

    def _check_base_identity(self, generation: int) -> None:
        """A compacted run: its current base must be the one a recorded compaction made."""
        found = self.base_compaction()
        if found is None:
            raise RunError(f"run {self.run.path} is at base {generation}, but its ledger {self.path} records no "
                           "compaction that made it; the ledger does not describe this run (restore it from a backup)")
        model = Path(self.run.base.dir) / MODEL_FILE
        try:
            digest = file_sha256(model)
        except OSError as exc:
            raise RunError(f"cannot read the run's model {model}: {exc.strerror or exc}") from None
        if (found.base_fingerprint != self.run.fingerprint or found.n_after != self.run.n_train
                or found.base_model_sha256 != digest):
            raise RunError(f"the run's base {generation} ({model}) is not the one ledger {self.path} recorded for "
                           f"compaction #{found.id}; the recorded deletions no longer describe it")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transactions and locking ----------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT); rolled back on any exception."""
        with sqlite_errors(self.path, "write"):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
            self._commit()

    def _commit(self) -> None:
        self._db.execute("COMMIT")

    def busy(self) -> bool:
        """True while another process holds the request lock (a request is being computed)."""
        return lock_held(self.run)

    # -- reading ----------------------------------------------------------------------------------
    def _select(self, table: str, columns, status: str | None) -> list[tuple]:
        with sqlite_errors(self.path, "read"):
            return store.select(self._db, table, columns, status)

    def requests(self, status: str | None = None) -> list[Request]:
        return [self._request(row) for row in self._select("requests", self._columns, status)]

    def request(self, request_id: int) -> Request:
        with sqlite_errors(self.path, "read"):
            row = self._db.execute(f"SELECT {', '.join(self._columns)} FROM requests WHERE id = ?",
                                   (int(request_id),)).fetchone()
        if row is None:
            raise InputError(f"ledger {self.path} has no request #{request_id}")
        return self._request(row)

    def _request(self, row) -> Request:
        values = dict(zip(self._columns, row))
        request = Request(**values, run_dir=Path(self.run.path).resolve())
        if row_digest(values, self._columns) != request.row_sha256:
            raise RunError(f"ledger {self.path} is corrupted: request #{request.id}'s record does not match its "
                           "checksum (the file was damaged or edited); restore it from a backup")
        if request.status not in STATUSES or request.kind not in KINDS:
            raise RunError(f"ledger {self.path} is corrupted: request #{request.id} has status {request.status!r}, "
                           f"kind {request.kind!r}")
        try:
            request.options, request.stats  # noqa: B018  (validate the JSON columns now)
        except (json.JSONDecodeError, TypeError) as exc:
            raise RunError(f"ledger {self.path} is corrupted: request #{request.id}'s JSON columns ({exc})") from None
        return request

    def forgotten_ids(self) -> np.ndarray:
        """Every row of the current base forgotten by a completed deletion request (sorted; row
        numbers of the current base -- rows dropped by a compaction are no longer in it)."""
        return forgotten_ids_from(self.current_requests("done"))

    forgotten_ids_from = staticmethod(forgotten_ids_from)

    def current_requests(self, status: str | None = None) -> list[Request]:
        """The requests computed from the run's current base (those after its latest compaction)."""
        after = self.base_after_request()
        return [r for r in self.requests(status) if r.id > after]

    def forgotten_keys(self) -> list[str]:
        """The keys of every forgotten row, each once, in the order of the rows that hold them.

        A key appears when at least one of its rows is forgotten (the rows themselves are what
        the ledger counts: ``forgotten_ids``).
        """
        rows, keys = [], []
        for request in self.requests("done"):
            if request.kind in FORGETTING_KINDS:
                ids = request.ids()
                recorded = request.keys()
                rows.append(ids)
                keys += recorded if recorded is not None else self.run.keys_of(ids)
        if not rows:
            return []
        order = np.argsort(np.concatenate(rows), kind="stable")
        return list(dict.fromkeys(keys[i] for i in order))

    # -- compactions --------------------------------------------------------------------------------
    def compactions(self, status: str | None = None) -> list[Compaction]:
        if not getattr(self, "_has_compactions", False):
            return []
        found = []
        for row in self._select("compactions", store.COMPACTION_COLUMNS_V3, status):
            values = dict(zip(store.COMPACTION_COLUMNS_V3, row))
            if row_digest(values, store.COMPACTION_COLUMNS_V3) != values["row_sha256"]:
                raise RunError(f"ledger {self.path} is corrupted: compaction #{values['id']}'s record does not match "
                               "its checksum (the file was damaged or edited); restore it from a backup")
            found.append(Compaction(**values))
        return found

    def base_compaction(self) -> Compaction | None:
        """The compaction that made the run's current base (None at generation 0).

        A ``started`` one counts when run.json already names its base: the process was killed
        after the switch and before recording it done (:meth:`resolve_compactions` finishes it).
        """
        generation = getattr(self.run, "generation", 0)
        if generation == 0:
            return None
        matches = [c for c in self.compactions() if c.generation == generation and c.status in ("done", "started")]
        return matches[-1] if matches else None

    def base_after_request(self) -> int:
        found = self.base_compaction()
        return 0 if found is None else found.after_request

    def last_request_id(self) -> int:
        with sqlite_errors(self.path, "read"):
            row = self._db.execute("SELECT MAX(id) FROM requests").fetchone()
        return int(row[0] or 0)

    def begin_compaction(self, values: dict) -> int:
        """Record a compaction as ``started`` (one transaction) before its base becomes current."""
        values = {**values, "status": "started", "started_at": utc_now(), "finished_at": None}
        with self._transaction():
            return store.insert_compaction(self._db, values)

    def finish_compaction(self, compaction_id: int, removed: list[str], stats: dict, note: str | None = None) -> None:
        """Mark a compaction ``done`` with the files it removed (one transaction)."""
        with self._transaction():
            store.update_compaction(self._db, compaction_id, dict(
                status="done", finished_at=utc_now(), removed_json=to_json(removed, indent=None),
                stats_json=stats_column(stats), note=note))

    def resolve_compactions(self) -> list[int]:
        """Settle compactions a killed process left ``started`` (call while holding the request lock):
        done when run.json names their base (the switch happened), else abandoned."""
        settled = []
        generation = getattr(self.run, "generation", 0)
        for c in self.compactions("started"):
            with self._transaction():
                if c.generation == generation:
                    store.update_compaction(self._db, c.id, dict(
                        status="done", finished_at=utc_now(),
                        note="the process ended after its base became current; files of the previous base are "
                             "removed by the next request"))
                else:
                    store.update_compaction(self._db, c.id, dict(
                        status="abandoned", finished_at=utc_now(),
                        note="the process ended before its base became current; the run kept its previous base"))
            settled.append(c.id)
        return settled

    # -- planning -----------------------------------------------------------------------------------
    def plan(self, ids: np.ndarray, method: str, options_json: str, requested_by: str = "rows") -> Plan:
        """Decide what a request for ``ids`` with ``method``/options does
        (:func:`~miniunlearn.service.ledger.planning.plan_request` on the current base's completed requests).

        A request naming exactly every row forgotten so far (e.g. ``retrain RUN`` without ids) is an
        alternative computation of the current state, even when several requests forgot those rows.
        Call while holding the request lock.
        """
        return plan_request(self.current_requests("done"), ids, method, options_json, run_path=self.run.path,
                            n_train=self.run.n_train, requested_by=requested_by)

    # -- writing --------------------------------------------------------------------------------------
    def abandon_stale(self) -> list[int]:
        """Mark ``started`` requests ``abandoned`` (call while holding the request lock: they are dead)."""
        stale = self.requests("started")
        if stale:
            with self._transaction():
                for request in stale:
                    note = "; ".join(filter(None, [request.note, "the process ended before the request finished; "
                                                                 "no model was recorded"]))
                    self._update(request.id, "started", status="abandoned", finished_at=utc_now(), note=note)
        return [r.id for r in stale]

    def begin(self, plan: Plan, method: str, options_json: str, out_dir: Path) -> int:
        """Record ``plan`` as ``started`` (one transaction); return the request id."""
        with self._transaction():
            return store.insert_request(self._db, self._new_row(plan, method, options_json, out_dir, "started"),
                                        self._columns)

    def record_done(self, plan: Plan, method: str, options_json: str, out_dir: Path, model_sha256: str,
                    model_bytes: int, stats: dict) -> int:
        """Record a request that is complete already (a repeat: its model is on disk) in one transaction."""
        values = self._new_row(plan, method, options_json, out_dir, "done")
        values.update(finished_at=utc_now(), model_sha256=model_sha256, model_bytes=int(model_bytes),
                      stats_json=stats_column(stats), bound_json=bound_column(stats))
        with self._transaction():
            return store.insert_request(self._db, values, self._columns)

    def finish(self, request_id: int, model_sha256: str, model_bytes: int, stats: dict) -> None:
        """Mark a started request ``done`` (one transaction): call only once its model file is durably written."""
        with self._transaction():
            self._update(request_id, "started", status="done", finished_at=utc_now(), model_sha256=model_sha256,
                         model_bytes=int(model_bytes), stats_json=stats_column(stats), bound_json=bound_column(stats))

    def fail(self, request_id: int, error: BaseException) -> None:
        """Mark a started request ``failed`` with the error (best effort: a full disk may forbid even this)."""
        message = f"{type(error).__name__}: {error}"[:2000]
        with contextlib.suppress(RunError, sqlite3.Error):
            with self._transaction():
                self._update(request_id, "started", status="failed", finished_at=utc_now(), note=message)

    def _update(self, request_id: int, expected_status: str, **changes) -> None:
        current = self.request(request_id)  # (checks the row's checksum)
        if current.status != expected_status:
            raise RunError(f"ledger {self.path}: request #{request_id} is {current.status!r}, not {expected_status!r}")
        store.update_request(self._db, request_id, expected_status, {c: getattr(current, c) for c in self._columns},
                             changes, self._columns)

    def _new_row(self, plan: Plan, method: str, options_json: str, out_dir: Path, status: str) -> dict:
        keys = self.run.keys_of(plan.ids)
        return {
            "status": status, "kind": plan.kind, "refers_to": None if plan.refers_to is None else plan.refers_to.id,
            "requested_at": utc_now(), "finished_at": None, "method": method, "options_json": options_json,
            "n_ids": int(len(plan.ids)), "ids_sha256": ids_sha256(plan.ids), "ids_blob": encode_ids(plan.ids),
            "n_cumulative": int(len(plan.cumulative)), "cumulative_sha256": ids_sha256(plan.cumulative),
            "cumulative_blob": encode_ids(plan.cumulative), "out_dir": self._relative(out_dir),
            "model_sha256": None, "model_bytes": None, "stats_json": None, "bound_json": None,
            "note": plan.note, "pid": os.getpid(), "host": socket.gethostname(),
            "keys_sha256": keys_sha256(keys), "keys_blob": encode_keys(keys), "requested_by": plan.requested_by,
        }

    # -- checking ---------------------------------------------------------------------------------------
    def verify(self) -> list[str]:
        """Problems found: completed requests whose model is missing or altered, inconsistent counts."""
        problems = []
        done = self.requests("done")
        replaced = superseded(done)
        seen = np.zeros(0, dtype=np.int64)
        bounds = sorted(c.after_request for c in self.compactions("done"))
        current = self.base_after_request()
        for r in done:
            if bounds and r.id > bounds[0]:  # a compaction renumbered the rows: a new union starts
                while bounds and r.id > bounds[0]:
                    bounds.pop(0)
                seen = np.zeros(0, dtype=np.int64)
            if r.id <= current:  # computed from an earlier base: its compaction removed the model
                continue
            if r.id not in replaced and (issue := r.model_problem()) is not None:
                problems.append(issue)
            if r.kind in FORGETTING_KINDS:
                seen = np.union1d(seen, r.ids())
                if not np.array_equal(r.cumulative_ids(), seen):
                    problems.append(f"request #{r.id}'s cumulative set ({r.n_cumulative} rows) differs from the "
                                    f"union of the deletions up to it ({seen.size} rows)")
        return problems


def forgotten_so_far(run) -> np.ndarray:
    """Every row forgotten by the run's completed deletion requests; an error when there is none."""
    if not Ledger.exists(run):
        raise InputError(f"no row of run {run.path} has been forgotten yet (it has no deletion ledger); "
                         "name the rows with --ids or --keys")
    with Ledger.open(run) as book:
        rows = book.forgotten_ids()
    if rows.size == 0 and getattr(run, "generation", 0) > 0:
        raise InputError(f"no row of run {run.path} was forgotten since its last compaction (its base is the exact "
                         "optimum on the rows it kept); name the rows with --ids or --keys")
    if rows.size == 0:
        raise InputError(f"no deletion request on run {run.path} has completed yet; name the rows with --ids or --keys")
    return rows


def _new_meta(run) -> dict:
    """The ``meta`` rows of a new ledger: its format and the identity of the run it belongs to."""
    return {"format": "miniunlearn-ledger", "schema_version": str(SCHEMA_VERSION), "created": utc_now(),
            "run_fingerprint": run.fingerprint, "run_n_train": str(run.n_train),
            "run_model_sha256": file_sha256(Path(run.path) / MODEL_FILE), "ids_encoding": IDS_ENCODING,
            "keys_encoding": KEYS_ENCODING}


def _refuse_lost(run, path: Path) -> None:
    """Refuse a run whose ``run.json`` records a ledger that no longer exists."""
    recorded = read_json(Path(run.path) / RUN_JSON, RUN_JSON).get("ledger")
    if isinstance(recorded, dict):
        raise RunError(f"run {run.path} had a deletion ledger (created {recorded.get('created', '?')}) but {path} is "
                       "missing: the record of which rows were forgotten is lost. Restore the ledger from a backup; "
                       "a new, empty ledger would count forgotten rows as present again, so none is started")


def _record_in_run(run) -> None:
    """Note in ``run.json`` that the run has a ledger (so losing it is noticed); written once."""
    if not isinstance(read_json(Path(run.path) / RUN_JSON, RUN_JSON).get("ledger"), dict):
        update_run_meta(run.path, ledger={"file": LEDGER_FILE, "created": utc_now()})
