"""The deletion ledger: a durable audit trail of every forget request on a run.

Each run keeps ``RUN/ledger.sqlite`` (SQLite, write-ahead log, ``synchronous=FULL``, schema
version in ``PRAGMA user_version`` and the ``meta`` table). :func:`miniunlearn.service.forget`
records every request that writes a model; ``miniunlearn ledger RUN`` lists them.

What a request records
    its own row ids (sorted, delta-encoded int64, zlib-compressed) with their count and SHA-256;
    the cumulative set of rows the resulting model has forgotten (same encoding); the method and
    its options (canonical JSON); when it was asked and finished; the output directory, the model
    file's SHA-256 and size; the method's statistics and any bound or certificate it reports.

Semantics
    * **New deletion** -- rows none of which are forgotten yet. Every method computes from the
      *original* run and its history, so the method is given the cumulative set (all rows
      forgotten by earlier requests plus the new ones): the result equals forgetting the union in
      one request, and counts stay right (``n_forget`` = cumulative, ``n_forget_request`` = own).
    * **Identical repeat** -- the same row set, method and options as a completed request: the
      recorded model is returned byte for byte, without recomputing (copied, hash-checked, when
      another output directory is named). If the recorded file is missing or its SHA-256 no longer
      matches, the request is recomputed from the original run (the run's identity is checked
      first, so the inputs are the ones the request originally used) and the ledger says why.
    * **Alternative** -- the same row set as a completed request but another method or options
      (e.g. ``forget --method mini`` and then ``retrain`` to compare): allowed, computed with that
      request's cumulative set; it forgets nothing new.
    * **Refused** -- any other request naming a row that is already forgotten: the message names
      the earlier request(s). Malformed requests (empty, out of range, duplicates, every row) are
      refused before anything is recorded.

Crash safety
    The ledger file is created atomically (built in a temporary file, renamed into place), so it
    either does not exist or holds the whole schema. A request is inserted as ``started`` (one
    transaction) before any work, and becomes ``done`` (one transaction) only after its model
    file is durably written; ``result.json`` in the output directory is written after that. A
    killed process therefore leaves a ``started`` entry whose rows count as *not* forgotten; the
    next request on the run marks it ``abandoned``. A ``done`` entry always has a model on disk
    with the recorded hash (unless someone removed it later -- ``ledger --verify`` checks).
    Requests on one run are serialised by an exclusive ``flock`` on ``RUN/ledger.lock``
    (:func:`request_lock`), which the kernel releases when a process dies, so a ``started``
    entry seen while holding the lock is certainly stale.

Integrity
    SQLite's ``integrity_check`` runs on every open; each request row carries a SHA-256 over all its
    columns (``row_sha256``) and each id set its own SHA-256, so a damaged or hand-edited record is
    reported instead of silently changing what counts as forgotten. The ledger is bound to the run
    it was created for (data fingerprint and SHA-256 of the run's original ``model.safetensors``):
    if the run is retrained in place, the old ledger is refused.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import socket
import sqlite3
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from miniunlearn.core.errors import InputError, RunError
from miniunlearn.core.storage import WriteError, atomic_path, canonical_json, file_sha256, to_json
from miniunlearn.runs.run import MODEL_FILE

LEDGER_FILE = "ledger.sqlite"
LOCK_FILE = "ledger.lock"
SCHEMA_VERSION = 1
IDS_ENCODING = "delta-int64le-zlib"
STATUSES = ("started", "done", "failed", "abandoned")
KINDS = ("deletion", "alternative", "repeat", "recompute")
# kinds whose rows join the forgotten set; alternatives, repeats and recomputations forget nothing new
FORGETTING_KINDS = ("deletion",)

_SCHEMA = f"""
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE requests (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    status            TEXT NOT NULL CHECK (status IN {STATUSES!r}),
    kind              TEXT NOT NULL CHECK (kind IN {KINDS!r}),
    refers_to         INTEGER REFERENCES requests(id),
    requested_at      TEXT NOT NULL,
    finished_at       TEXT,
    method            TEXT NOT NULL,
    options_json      TEXT NOT NULL,
    n_ids             INTEGER NOT NULL,
    ids_sha256        TEXT NOT NULL,
    ids_blob          BLOB NOT NULL,
    n_cumulative      INTEGER NOT NULL,
    cumulative_sha256 TEXT NOT NULL,
    cumulative_blob   BLOB NOT NULL,
    out_dir           TEXT,
    model_sha256      TEXT,
    model_bytes       INTEGER,
    stats_json        TEXT,
    bound_json        TEXT,
    note              TEXT,
    pid               INTEGER,
    host              TEXT,
    row_sha256        TEXT NOT NULL
);
"""


# ---------------------------------------------------------------------------------------------- ids
def ids_sha256(ids: np.ndarray) -> str:
    """SHA-256 of sorted row ids as little-endian int64 (also ``forget_ids_sha256`` in result.json)."""
    return hashlib.sha256(np.asarray(ids, dtype="<i8").tobytes()).hexdigest()


def encode_ids(ids: np.ndarray) -> bytes:
    """Sorted unique ids -> zlib(delta-encoded little-endian int64): a few bytes per thousand rows."""
    ids = np.asarray(ids, dtype=np.int64)
    deltas = np.diff(ids, prepend=np.int64(0)) if ids.size else ids
    return zlib.compress(deltas.astype("<i8").tobytes(), 6)


def decode_ids(blob: bytes, count: int, digest: str, what: str) -> np.ndarray:
    """Inverse of :func:`encode_ids`, checked against the recorded count and SHA-256."""
    try:
        raw = zlib.decompress(blob)
    except (zlib.error, TypeError) as exc:
        raise RunError(f"{what} is corrupted: its row ids cannot be decoded ({exc})") from None
    if len(raw) != 8 * count:
        raise RunError(f"{what} is corrupted: {len(raw) // 8} row ids stored, {count} recorded")
    ids = np.cumsum(np.frombuffer(raw, dtype="<i8")).astype(np.int64)
    if ids_sha256(ids) != digest:
        raise RunError(f"{what} is corrupted: its row ids do not match their recorded SHA-256")
    return ids


def canonical_options(options: dict) -> str:
    """Options as canonical JSON (sorted keys, no spaces): equal options give equal text."""
    return canonical_json(options)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------------- records
@dataclass
class Request:
    """One row of the ``requests`` table."""

    id: int
    status: str
    kind: str
    refers_to: int | None
    requested_at: str
    finished_at: str | None
    method: str
    options_json: str
    n_ids: int
    ids_sha256: str
    n_cumulative: int
    cumulative_sha256: str
    out_dir: str | None
    model_sha256: str | None
    model_bytes: int | None
    stats_json: str | None
    bound_json: str | None
    note: str | None
    pid: int | None
    host: str | None
    ids_blob: bytes = field(repr=False, default=b"")
    cumulative_blob: bytes = field(repr=False, default=b"")
    row_sha256: str = ""

    @property
    def options(self) -> dict:
        return json.loads(self.options_json)

    @property
    def stats(self) -> dict:
        return json.loads(self.stats_json) if self.stats_json else {}

    @property
    def bound(self) -> dict | None:
        return json.loads(self.bound_json) if self.bound_json else None

    def ids(self) -> np.ndarray:
        return decode_ids(self.ids_blob, self.n_ids, self.ids_sha256, f"ledger request #{self.id}")

    def cumulative_ids(self) -> np.ndarray:
        return decode_ids(self.cumulative_blob, self.n_cumulative, self.cumulative_sha256,
                          f"ledger request #{self.id} (cumulative set)")

    @property
    def model_path(self) -> Path | None:
        return None if self.out_dir is None else Path(self.out_dir) / MODEL_FILE

    def model_problem(self) -> str | None:
        """``None`` when the recorded model exists with the recorded SHA-256, else what is wrong."""
        path = self.model_path
        if path is None or self.model_sha256 is None:
            return f"request #{self.id} recorded no model"
        if not path.is_file():
            return f"request #{self.id}'s model {path} is missing"
        try:
            digest = file_sha256(path)
        except OSError as exc:
            return f"request #{self.id}'s model {path} cannot be read ({exc.strerror or exc})"
        if digest != self.model_sha256:
            return (f"request #{self.id}'s model {path} was changed or damaged (SHA-256 {digest[:16]}... "
                    f"!= recorded {self.model_sha256[:16]}...)")
        return None

    def summary(self) -> dict:
        """A JSON-ready description (ids as counts and digests, not lists)."""
        return {
            "id": self.id, "status": self.status, "kind": self.kind, "refers_to": self.refers_to,
            "requested_at": self.requested_at, "finished_at": self.finished_at, "method": self.method,
            "options": self.options, "n_ids": self.n_ids, "ids_sha256": self.ids_sha256,
            "n_cumulative": self.n_cumulative, "cumulative_sha256": self.cumulative_sha256,
            "out_dir": self.out_dir, "model_sha256": self.model_sha256, "model_bytes": self.model_bytes,
            "bound": self.bound, "note": self.note, "pid": self.pid, "host": self.host,
        }


_COLUMNS = [f for f in Request.__dataclass_fields__]


@dataclass
class Plan:
    """What a new request will do, decided under the ledger lock by :meth:`Ledger.plan`."""

    kind: str                       # one of KINDS
    ids: np.ndarray                 # the request's own rows (sorted)
    cumulative: np.ndarray          # every row the resulting model has forgotten
    forgotten_before: int           # size of the forgotten set before this request
    refers_to: Request | None = None
    note: str | None = None         # why a recomputation happens
    same_request_dirs: list[str] = field(default_factory=list)  # output dirs of identical earlier requests

    def is_same_request_dir(self, out) -> bool:
        """True when ``out`` holds (or held) this very request's result, so refreshing it is safe."""
        return any(Path(out).resolve() == Path(d).resolve() for d in self.same_request_dirs)


def bounds_from_stats(stats: dict) -> dict | None:
    """The bound or certificate a method reported (keys naming a bound, certificate or contraction)."""
    found = {k: v for k, v in stats.items()
             if any(word in k for word in ("bound", "certificate", "contraction")) and not isinstance(v, dict)}
    return found or None


# ---------------------------------------------------------------------------------------------- ledger
class Ledger:
    """The ledger of one run. Use :meth:`open`; every method maps SQLite errors to :class:`RunError`."""

    def __init__(self, run, connection: sqlite3.Connection, path: Path):
        self.run = run
        self.path = path
        self._db = connection

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def path_for(cls, run) -> Path:
        return Path(run.path).resolve() / LEDGER_FILE

    @classmethod
    def exists(cls, run) -> bool:
        return cls.path_for(run).is_file()

    @classmethod
    def open(cls, run, create: bool = False) -> "Ledger":
        """Open ``run``'s ledger, checking its integrity and that it belongs to this run.

        With ``create`` a missing ledger is created -- atomically (built in a temporary file and
        renamed), so ``ledger.sqlite`` either does not exist or holds the full schema; an empty
        or schema-less file is therefore always damage, never a half-made ledger. Create only
        while holding :func:`request_lock`.
        """
        path = cls.path_for(run)
        if not path.is_file():
            if path.exists():
                raise RunError(f"ledger {path} is not a file")
            if not create:
                raise RunError(f"run {run.path} has no ledger ({LEDGER_FILE}): no deletion request was recorded")
            _create_ledger_file(run, path)
        if path.stat().st_size == 0:
            raise RunError(f"ledger {path} is empty (truncated?); the record of forgotten rows is lost. Restore it "
                           "from a backup; models already written are unaffected")
        with _sqlite_errors(path, "open"):
            db = sqlite3.connect(str(path), timeout=60, isolation_level=None)
        ledger = cls(run, db, path)
        try:
            with _sqlite_errors(path, "open"):
                ledger._prepare()
        except BaseException:
            db.close()
            raise
        return ledger

    def _prepare(self) -> None:
        db = self._db
        check = db.execute("PRAGMA integrity_check").fetchone()
        if check is None or check[0] != "ok":
            found = _one_line(check[0]) if check else "no answer"
            raise RunError(f"ledger {self.path} is corrupted (integrity check: {found}); restore it from a backup; "
                           "models already written are unaffected")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version > SCHEMA_VERSION:
            raise RunError(f"ledger {self.path} has schema version {version}, newer than this miniunlearn "
                           f"understands ({SCHEMA_VERSION}); upgrade miniunlearn")
        if version != SCHEMA_VERSION or not {"meta", "requests"} <= tables:
            raise RunError(f"{self.path} is not a miniunlearn deletion ledger (schema version {version}, "
                           f"tables {sorted(tables) or 'none'}); restore it from a backup")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        self._check_identity()

    def meta(self) -> dict:
        with _sqlite_errors(self.path, "read"):
            return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def _check_identity(self) -> None:
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
        with _sqlite_errors(self.path, "write"):
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
        lock_path = Path(self.run.path) / LOCK_FILE
        if not lock_path.is_file():
            return False
        fd = os.open(lock_path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    # -- reading ----------------------------------------------------------------------------------
    def requests(self, status: str | None = None) -> list[Request]:
        query = f"SELECT {', '.join(_COLUMNS)} FROM requests"
        args: tuple = ()
        if status is not None:
            query += " WHERE status = ?"
            args = (status,)
        with _sqlite_errors(self.path, "read"):
            rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return [self._request(row) for row in rows]

    def request(self, request_id: int) -> Request:
        with _sqlite_errors(self.path, "read"):
            row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM requests WHERE id = ?",
                                   (int(request_id),)).fetchone()
        if row is None:
            raise InputError(f"ledger {self.path} has no request #{request_id}")
        return self._request(row)

    def _request(self, row) -> Request:
        values = dict(zip(_COLUMNS, row))
        request = Request(**values)
        if _row_digest(values) != request.row_sha256:
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
        """Every row forgotten by a completed deletion request (sorted)."""
        return self.forgotten_ids_from(self.requests("done"))

    # -- planning -----------------------------------------------------------------------------------
    def plan(self, ids: np.ndarray, method: str, options_json: str) -> Plan:
        """Decide what a request for ``ids`` with ``method``/options does (see the module docstring).

        Call while holding :func:`request_lock`. Raises :class:`InputError` when the request names rows
        already forgotten and is neither an identical repeat nor an alternative computation.
        """
        ids = np.asarray(ids, dtype=np.int64)
        digest = ids_sha256(ids)
        done = self.requests("done")
        forgotten = self.forgotten_ids_from(done)
        same_rows = [r for r in done if r.ids_sha256 == digest and r.n_ids == len(ids)]
        identical = [r for r in same_rows if r.method == method and r.options_json == options_json]
        dirs = [r.out_dir for r in identical if r.out_dir]
        # serve from the request that computed the model if its file is intact, else from a verified copy
        by_preference = sorted(identical, key=lambda r: (r.kind == "repeat", -r.id))
        for candidate in by_preference:
            if candidate.model_problem() is None:
                return Plan("repeat", ids, candidate.cumulative_ids(), len(forgotten), candidate, same_request_dirs=dirs)
        if identical:
            latest = identical[-1]
            return Plan("recompute", ids, latest.cumulative_ids(), len(forgotten), latest,
                        note=f"{latest.model_problem()}; recomputed from the original run", same_request_dirs=dirs)
        if same_rows:
            return Plan("alternative", ids, same_rows[-1].cumulative_ids(), len(forgotten), same_rows[-1])
        again = np.intersect1d(ids, forgotten, assume_unique=True)
        if again.size:
            raise InputError(self._already_forgotten_message(ids, again, done, forgotten))
        return Plan("deletion", ids, np.union1d(forgotten, ids), len(forgotten))

    @staticmethod
    def forgotten_ids_from(done: list[Request]) -> np.ndarray:
        parts = [r.ids() for r in done if r.kind in FORGETTING_KINDS]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def _already_forgotten_message(self, ids, again, done, forgotten) -> str:
        by = [r for r in done if r.kind in FORGETTING_KINDS and np.intersect1d(r.ids(), again).size]
        names = ", ".join(f"#{r.id} ({r.method}, {r.requested_at[:19]})" for r in by[:3])
        more = f" and {len(by) - 3} more" if len(by) > 3 else ""
        return (f"forget request: {again.size} of its {ids.size} rows were already forgotten, e.g. row {int(again[0])}, "
                f"by request {names}{more}. A row is forgotten once; to repeat a request give exactly its rows, "
                f"method and options; to forget further rows leave out those already forgotten "
                f"({forgotten.size} of {self.run.n_train} rows are; `miniunlearn ledger {self.run.path}` lists them)")

    # -- writing --------------------------------------------------------------------------------------
    def abandon_stale(self) -> list[int]:
        """Mark ``started`` requests ``abandoned`` (call while holding :func:`request_lock`: they are dead)."""
        stale = self.requests("started")
        if stale:
            with self._transaction():
                for request in stale:
                    note = "; ".join(filter(None, [request.note, "the process ended before the request finished; "
                                                                 "no model was recorded"]))
                    self._update(request.id, "started", status="abandoned", finished_at=_now(), note=note)
        return [r.id for r in stale]

    def begin(self, plan: Plan, method: str, options_json: str, out_dir: Path) -> int:
        """Record ``plan`` as ``started`` (one transaction); return the request id."""
        with self._transaction():
            return self._insert(self._new_row(plan, method, options_json, out_dir, "started"))

    def record_done(self, plan: Plan, method: str, options_json: str, out_dir: Path, model_sha256: str,
                    model_bytes: int, stats: dict) -> int:
        """Record a request that is complete already (a repeat: its model is on disk) in one transaction."""
        values = self._new_row(plan, method, options_json, out_dir, "done")
        values.update(finished_at=_now(), model_sha256=model_sha256, model_bytes=int(model_bytes),
                      stats_json=_stats_json(stats), bound_json=_bound_json(stats))
        with self._transaction():
            return self._insert(values)

    def finish(self, request_id: int, model_sha256: str, model_bytes: int, stats: dict) -> None:
        """Mark a started request ``done`` (one transaction): call only once its model file is durably written."""
        with self._transaction():
            self._update(request_id, "started", status="done", finished_at=_now(), model_sha256=model_sha256,
                         model_bytes=int(model_bytes), stats_json=_stats_json(stats), bound_json=_bound_json(stats))

    def fail(self, request_id: int, error: BaseException) -> None:
        """Mark a started request ``failed`` with the error (best effort: a full disk may forbid even this)."""
        message = f"{type(error).__name__}: {error}"[:2000]
        with contextlib.suppress(RunError, sqlite3.Error):
            with self._transaction():
                self._update(request_id, "started", status="failed", finished_at=_now(), note=message)

    def _insert(self, values: dict) -> int:
        values = {**values, "row_sha256": ""}
        cursor = self._db.execute(f"INSERT INTO requests ({', '.join(values)}) VALUES "
                                  f"({', '.join('?' * len(values))})", list(values.values()))
        request_id = int(cursor.lastrowid)
        self._db.execute("UPDATE requests SET row_sha256=? WHERE id=?",
                         (_row_digest({**values, "id": request_id}), request_id))
        return request_id

    def _update(self, request_id: int, expected_status: str, **changes) -> None:
        current = self.request(request_id)  # (checks the row's checksum)
        if current.status != expected_status:
            raise RunError(f"ledger {self.path}: request #{request_id} is {current.status!r}, not {expected_status!r}")
        values = {**{c: getattr(current, c) for c in _COLUMNS if c != "row_sha256"}, **changes}
        sets = ", ".join(f"{c}=?" for c in changes)
        self._db.execute(f"UPDATE requests SET {sets}, row_sha256=? WHERE id=? AND status=?",
                         (*changes.values(), _row_digest(values), request_id, expected_status))

    def _new_row(self, plan: Plan, method: str, options_json: str, out_dir: Path, status: str) -> dict:
        return {
            "status": status, "kind": plan.kind, "refers_to": None if plan.refers_to is None else plan.refers_to.id,
            "requested_at": _now(), "finished_at": None, "method": method, "options_json": options_json,
            "n_ids": int(len(plan.ids)), "ids_sha256": ids_sha256(plan.ids), "ids_blob": encode_ids(plan.ids),
            "n_cumulative": int(len(plan.cumulative)), "cumulative_sha256": ids_sha256(plan.cumulative),
            "cumulative_blob": encode_ids(plan.cumulative), "out_dir": str(Path(out_dir).resolve()),
            "model_sha256": None, "model_bytes": None, "stats_json": None, "bound_json": None,
            "note": plan.note, "pid": os.getpid(), "host": socket.gethostname(),
        }

    # -- checking ---------------------------------------------------------------------------------------
    def verify(self) -> list[str]:
        """Problems found: completed requests whose model is missing or altered, inconsistent counts."""
        problems = []
        done = self.requests("done")
        replaced = superseded(done)
        seen = np.zeros(0, dtype=np.int64)
        for r in done:
            if r.id not in replaced and (issue := r.model_problem()) is not None:
                problems.append(issue)
            if r.kind in FORGETTING_KINDS:
                seen = np.union1d(seen, r.ids())
                if not np.array_equal(r.cumulative_ids(), seen):
                    problems.append(f"request #{r.id}'s cumulative set ({r.n_cumulative} rows) differs from the "
                                    f"union of the deletions up to it ({seen.size} rows)")
        return problems


@contextlib.contextmanager
def request_lock(run) -> Iterator[None]:
    """Hold ``run``'s request lock: an exclusive ``flock`` on ``RUN/ledger.lock``.

    Waits while another process works on a request for the same run. The kernel releases the
    lock when its holder exits or is killed, so a ``started`` request seen under the lock is stale.
    """
    lock_path = Path(run.path) / LOCK_FILE
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunError(f"cannot open the ledger lock {lock_path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _create_ledger_file(run, path: Path) -> None:
    """Build an empty ledger (schema, run identity) in a temporary file and rename it into place."""
    meta = {"format": "miniunlearn-ledger", "schema_version": str(SCHEMA_VERSION), "created": _now(),
            "run_fingerprint": run.fingerprint, "run_n_train": str(run.n_train),
            "run_model_sha256": file_sha256(Path(run.path) / MODEL_FILE), "ids_encoding": IDS_ENCODING}
    with atomic_path(path) as tmp, _sqlite_errors(path, "create"):
        db = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            db.execute("BEGIN")
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", sorted(meta.items()))
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
            db.execute("PRAGMA journal_mode=WAL")  # persistent: recorded in the file header
        finally:
            db.close()


def superseded(done: list[Request]) -> dict[int, int]:
    """Completed requests whose output directory a later completed request wrote again: id -> that request."""
    latest: dict[str, int] = {}
    out: dict[int, int] = {}
    for r in sorted(done, key=lambda r: r.id, reverse=True):
        key = str(Path(r.out_dir).resolve()) if r.out_dir else None
        if key is None:
            continue
        if key in latest:
            out[r.id] = latest[key]
        else:
            latest[key] = r.id
    return out


def _no_space_left(path: Path) -> bool:
    """True when the file system holding ``path`` has no free block (SQLite then reports a bare I/O error)."""
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        return False
    return stats.f_bavail == 0 or stats.f_favail == 0


def _one_line(text: str, limit: int = 240) -> str:
    """SQLite's multi-line reports as one short line."""
    flat = "; ".join(part.strip() for part in str(text).splitlines() if part.strip() and "***" not in part)
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def _row_digest(values: dict) -> str:
    """SHA-256 over a request's columns (all but ``row_sha256``), so a damaged or edited record is noticed."""
    digest = hashlib.sha256()
    for column in _COLUMNS:
        if column == "row_sha256":
            continue
        value = values.get(column)
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = {"sha256": hashlib.sha256(bytes(value)).hexdigest()}
        digest.update(json.dumps([column, value]).encode() + b"\n")
    return digest.hexdigest()


def _stats_json(stats: dict) -> str:
    return to_json(stats, indent=None)


def _bound_json(stats: dict) -> str | None:
    found = bounds_from_stats(stats)
    return None if found is None else to_json(found, indent=None)


@contextlib.contextmanager
def _sqlite_errors(path: Path, action: str) -> Iterator[None]:
    """Turn SQLite errors into one clear :class:`RunError` (a full disk into a WriteError)."""
    try:
        yield
    except UnicodeDecodeError:
        raise RunError(f"ledger {path} is corrupted (a text field is not valid UTF-8); restore it from a backup. "
                       "Models already written are unaffected") from None
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        text = _one_line(str(exc))
        if code == sqlite3.SQLITE_FULL or "disk is full" in text or (
                code is not None and code & 0xFF == sqlite3.SQLITE_IOERR and _no_space_left(path)):
            error = WriteError(f"could not {action} the ledger {path}: the disk is full; the request was not "
                               "recorded and nothing already saved was changed")
            raise error from None
        if isinstance(exc, sqlite3.DatabaseError) and ("malformed" in text or "not a database" in text
                                                       or "corrupt" in text):
            raise RunError(f"ledger {path} is corrupted ({text}); restore it from a backup. Models already "
                           "written are unaffected, but the record of which rows were forgotten is unreadable") from None
        raise RunError(f"could not {action} the ledger {path}: {text}") from None
