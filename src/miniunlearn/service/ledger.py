"""The deletion ledger: a durable audit trail of every forget request on a run.

Each run keeps ``RUN/ledger.sqlite`` (SQLite, write-ahead log, ``synchronous=FULL``, schema
version in ``PRAGMA user_version`` and the ``meta`` table). :func:`miniunlearn.service.forget`
records every request that writes a model; ``miniunlearn ledger RUN`` lists them.

What a request records
    its own row ids (sorted, delta-encoded int64, zlib-compressed) with their count and SHA-256;
    the keys of those rows, one per row in the same order (their canonical text joined by line
    breaks, zlib-compressed, with a SHA-256), and whether the request named rows or keys; the
    cumulative set of rows the resulting model has forgotten (same encoding as the ids); the
    method and its options (canonical JSON); when it was asked and finished; the output directory
    (relative to the run directory, so a run moved together with its outputs keeps its ledger
    valid), the model file's SHA-256 and size; the method's statistics and any bound or
    certificate it reports. Keys are recorded so that a later renumbering of the rows (a run
    retrained on its retained rows) can map every forgotten key to the new rows.

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

Schema versions
    Version 2 added the keys and ``requested_by`` columns and stores output directories relative
    to the run. A version-1 ledger is read as it is (its keys are the run's keys of its rows) and
    migrated in one transaction the next time a request is recorded: every row's version-1
    checksum is verified, keys are filled in, paths made relative and checksums recomputed.

Compactions (version 3)
    ``miniunlearn compact`` (:mod:`miniunlearn.service.compact`) replaces the run's base by the
    optimum on its kept rows; the ``compactions`` table records each one: the generation it made,
    the last request before it, the number of rows before and after, the dropped rows' ids hash and
    keys (compressed, with a SHA-256), the new base's fingerprint and hashes, and every file it
    removed -- ids, keys and hashes only, never row data. Row ids of requests after a compaction
    number the rows of its base; only those requests count for planning (``forgotten_ids``).
    A compaction is inserted ``started`` before run.json names its base and becomes ``done``
    after; a killed one is settled by the next request (done if the switch happened, else abandoned).

Reading without writing
    Listing and ``--verify`` take no lock and write nothing. In a directory this process cannot
    write (a read-only copy, an archive), SQLite is opened read-only: ``mode=ro`` when a write-ahead
    log is present, else ``immutable=1`` (no log means the file holds every committed request).

A lost ledger is noticed
    Creating the ledger records it in ``run.json`` (``"ledger"``). A run that records a ledger
    but has no ``ledger.sqlite`` is refused -- by requests and by listing -- instead of starting
    an empty ledger that would let forgotten rows count as present again.

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
from miniunlearn.core.storage import WriteError, atomic_path, canonical_json, file_sha256, read_json, to_json
from miniunlearn.runs.run import MODEL_FILE, RUN_JSON, update_run_meta

LEDGER_FILE = "ledger.sqlite"
LOCK_FILE = "ledger.lock"
SCHEMA_VERSION = 3
COMPACTION_STATUSES = ("started", "done", "abandoned")
IDS_ENCODING = "delta-int64le-zlib"
KEYS_ENCODING = "utf8-lines-zlib"
REQUESTED_BY = ("rows", "keys")
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
    row_sha256        TEXT NOT NULL,
    keys_sha256       TEXT,
    keys_blob         BLOB,
    requested_by      TEXT
);
"""
_V2_COLUMNS_SQL = ("keys_sha256 TEXT", "keys_blob BLOB", "requested_by TEXT")
# Version 3: compactions (miniunlearn.service.compact). Only counts, ids, keys and hashes: no row data.
_COMPACTIONS_SQL = f"""
CREATE TABLE IF NOT EXISTS compactions (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    status              TEXT NOT NULL CHECK (status IN {COMPACTION_STATUSES!r}),
    generation          INTEGER NOT NULL,
    after_request       INTEGER NOT NULL,
    started_at          TEXT NOT NULL,
    finished_at         TEXT,
    warm_start_request  INTEGER,
    n_before            INTEGER NOT NULL,
    n_after             INTEGER NOT NULL,
    n_dropped           INTEGER NOT NULL,
    dropped_ids_sha256  TEXT NOT NULL,
    dropped_keys_sha256 TEXT NOT NULL,
    dropped_keys_blob   BLOB NOT NULL,
    base_fingerprint    TEXT NOT NULL,
    base_model_sha256   TEXT NOT NULL,
    base_record_sha256  TEXT NOT NULL,
    removed_json        TEXT,
    stats_json          TEXT,
    note                TEXT,
    row_sha256          TEXT NOT NULL
)"""


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


def encode_keys(keys: list[str]) -> bytes:
    """Canonical key texts -> zlib(UTF-8 lines) (keys hold no line breaks: miniunlearn.data.keys)."""
    return zlib.compress("\n".join(keys).encode("utf-8"), 6)


def keys_sha256(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()


def decode_keys(blob: bytes, count: int, digest: str, what: str) -> list[str]:
    """Inverse of :func:`encode_keys`, checked against the recorded count and SHA-256."""
    try:
        text = zlib.decompress(blob).decode("utf-8")
    except (zlib.error, TypeError, UnicodeDecodeError) as exc:
        raise RunError(f"{what} is corrupted: its keys cannot be decoded ({exc})") from None
    keys = text.split("\n") if count else []
    if len(keys) != count or keys_sha256(keys) != digest:
        raise RunError(f"{what} is corrupted: its keys do not match their recorded count and SHA-256")
    return keys


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
    keys_sha256: str | None = None
    keys_blob: bytes | None = field(repr=False, default=None)
    requested_by: str | None = None
    base: Path | None = field(repr=False, default=None, compare=False)  # the run directory (not a column)

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

    def keys(self) -> list[str] | None:
        """The keys of :meth:`ids`, one per row (None for a version-1 record, which has none)."""
        if self.keys_blob is None:
            return None
        return decode_keys(self.keys_blob, self.n_ids, self.keys_sha256, f"ledger request #{self.id}")

    @property
    def out_path(self) -> Path | None:
        """The output directory: recorded relative to the run directory (absolute in version 1)."""
        if self.out_dir is None:
            return None
        path = Path(self.out_dir)
        return path if path.is_absolute() or self.base is None else Path(os.path.normpath(self.base / path))

    @property
    def model_path(self) -> Path | None:
        return None if self.out_path is None else self.out_path / MODEL_FILE

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
            "out_dir": None if self.out_path is None else str(self.out_path), "model_sha256": self.model_sha256,
            "model_bytes": self.model_bytes, "bound": self.bound, "note": self.note, "pid": self.pid,
            "host": self.host, "requested_by": self.requested_by or "rows",
        }


_COLUMNS = [f for f in Request.__dataclass_fields__ if f != "base"]
_COMPACTION_COLUMNS = ["id", "status", "generation", "after_request", "started_at", "finished_at",
                       "warm_start_request", "n_before", "n_after", "n_dropped", "dropped_ids_sha256",
                       "dropped_keys_sha256", "dropped_keys_blob", "base_fingerprint", "base_model_sha256",
                       "base_record_sha256", "removed_json", "stats_json", "note", "row_sha256"]


@dataclass
class Compaction:
    """One row of the ``compactions`` table: a run's base replaced by the optimum on its kept rows.

    ``after_request``: every request with a larger id computed from this compaction's base
    (``generation``); the row ids of earlier requests number the rows of earlier bases.
    """

    id: int
    status: str
    generation: int
    after_request: int
    started_at: str
    finished_at: str | None
    warm_start_request: int | None
    n_before: int
    n_after: int
    n_dropped: int
    dropped_ids_sha256: str
    dropped_keys_sha256: str
    dropped_keys_blob: bytes = field(repr=False)
    base_fingerprint: str = ""
    base_model_sha256: str = ""
    base_record_sha256: str = ""
    removed_json: str | None = None
    stats_json: str | None = None
    note: str | None = None
    row_sha256: str = ""

    @property
    def removed(self) -> list[str]:
        return json.loads(self.removed_json) if self.removed_json else []

    @property
    def stats(self) -> dict:
        return json.loads(self.stats_json) if self.stats_json else {}

    def dropped_keys(self) -> list[str]:
        return decode_keys(self.dropped_keys_blob, self.n_dropped, self.dropped_keys_sha256,
                           f"ledger compaction #{self.id}")

    def summary(self) -> dict:
        return {"id": self.id, "status": self.status, "generation": self.generation,
                "after_request": self.after_request, "started_at": self.started_at,
                "finished_at": self.finished_at, "warm_start_request": self.warm_start_request,
                "n_before": self.n_before, "n_after": self.n_after, "n_dropped": self.n_dropped,
                "dropped_keys_sha256": self.dropped_keys_sha256, "base_fingerprint": self.base_fingerprint,
                "base_model_sha256": self.base_model_sha256, "removed": self.removed, "note": self.note,
                "time_s": self.stats.get("time_s")}
_COLUMNS_V1 = _COLUMNS[:_COLUMNS.index("row_sha256") + 1]  # version 2 appended keys_sha256, keys_blob, requested_by


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
    requested_by: str = "rows"      # the request named rows or keys

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

    def __init__(self, run, connection: sqlite3.Connection, path: Path, writer: bool = False):
        self.run = run
        self.path = path
        self.writer = writer
        self._db = connection
        self._columns = _COLUMNS
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
        :func:`request_lock`): a missing ledger is created -- atomically (built in a temporary file
        and renamed), so ``ledger.sqlite`` either does not exist or holds the full schema; an empty
        or schema-less file is therefore always damage, never a half-made ledger -- and a
        version-1 ledger is migrated. Without ``create`` it is opened to read, writing nothing.
        """
        path = cls.path_for(run)
        if not path.is_file():
            if path.exists():
                raise RunError(f"ledger {path} is not a file")
            _refuse_lost(run, path)
            if not create:
                raise RunError(f"run {run.path} has no ledger ({LEDGER_FILE}): no deletion request was recorded")
            _create_ledger_file(run, path)
        if path.stat().st_size == 0:
            raise RunError(f"ledger {path} is empty (truncated?); the record of forgotten rows is lost. Restore it "
                           "from a backup; models already written are unaffected")
        with _sqlite_errors(path, "open"):
            db = _connect(path, writer=create)
        ledger = cls(run, db, path, writer=create)
        try:
            with _sqlite_errors(path, "open"):
                ledger._prepare()
            if create:
                _record_in_run(run)
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
        if version not in (1, 2, SCHEMA_VERSION) or not {"meta", "requests"} <= tables:
            raise RunError(f"{self.path} is not a miniunlearn deletion ledger (schema version {version}, "
                           f"tables {sorted(tables) or 'none'}); restore it from a backup")
        self._columns = _COLUMNS_V1 if version == 1 else _COLUMNS
        if self.writer:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
        self._has_compactions = "compactions" in tables
        self._check_identity()
        if self.writer and version == 1:
            self._migrate_from_v1()
        if self.writer and version < 3:
            self._migrate_to_v3()

    def _migrate_from_v1(self) -> None:
        """Version 1 -> 2 in one transaction: verify every row, add keys, relative paths, new checksums."""
        rows = self.requests()  # every version-1 checksum is verified here
        with self._transaction():
            for column in _V2_COLUMNS_SQL:
                self._db.execute(f"ALTER TABLE requests ADD COLUMN {column}")
            self._columns = _COLUMNS
            for request in rows:
                keys = self.run.keys_of(request.ids())
                values = {c: getattr(request, c) for c in _COLUMNS if c != "row_sha256"}
                values.update(keys_sha256=keys_sha256(keys), keys_blob=encode_keys(keys), requested_by="rows",
                              out_dir=self._relative(request.out_path))
                changes = {k: values[k] for k in ("keys_sha256", "keys_blob", "requested_by", "out_dir")}
                sets = ", ".join(f"{c}=?" for c in changes)
                self._db.execute(f"UPDATE requests SET {sets}, row_sha256=? WHERE id=?",
                                 (*changes.values(), _row_digest(values, _COLUMNS), request.id))
            self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                 [("schema_version", "2"), ("keys_encoding", KEYS_ENCODING),
                                  ("migrated_from_v1", _now())])
            self._db.execute("PRAGMA user_version = 2")

    def _migrate_to_v3(self) -> None:
        """Version 2 -> 3 in one transaction: the (empty) compactions table."""
        with self._transaction():
            self._db.execute(_COMPACTIONS_SQL)
            self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                 [("schema_version", str(SCHEMA_VERSION)), ("migrated_to_v3", _now())])
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._has_compactions = True

    def _relative(self, out_dir: Path | None) -> str | None:
        """``out_dir`` relative to the run directory (how version 2 records it)."""
        if out_dir is None:
            return None
        return os.path.relpath(Path(out_dir).resolve(), Path(self.run.path).resolve())

    def meta(self) -> dict:
        with _sqlite_errors(self.path, "read"):
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
    def _select(self, table: str, columns, status: str | None) -> list[tuple]:
        """Every row of ``table`` (with ``status`` only, if given), in id order."""
        query = f"SELECT {', '.join(columns)} FROM {table}"
        args: tuple = ()
        if status is not None:
            query += " WHERE status = ?"
            args = (status,)
        with _sqlite_errors(self.path, "read"):
            return self._db.execute(query + " ORDER BY id", args).fetchall()

    def requests(self, status: str | None = None) -> list[Request]:
        return [self._request(row) for row in self._select("requests", self._columns, status)]

    def request(self, request_id: int) -> Request:
        with _sqlite_errors(self.path, "read"):
            row = self._db.execute(f"SELECT {', '.join(self._columns)} FROM requests WHERE id = ?",
                                   (int(request_id),)).fetchone()
        if row is None:
            raise InputError(f"ledger {self.path} has no request #{request_id}")
        return self._request(row)

    def _request(self, row) -> Request:
        values = dict(zip(self._columns, row))
        request = Request(**values, base=Path(self.run.path).resolve())
        if _row_digest(values, self._columns) != request.row_sha256:
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
        return self.forgotten_ids_from(self.current_requests("done"))

    def current_requests(self, status: str | None = None) -> list[Request]:
        """The requests computed from the run's current base (those after its latest compaction)."""
        after = self.base_after_request()
        return [r for r in self.requests(status) if r.id > after]

    # -- compactions --------------------------------------------------------------------------------
    def compactions(self, status: str | None = None) -> list[Compaction]:
        if not getattr(self, "_has_compactions", False):
            return []
        found = []
        for row in self._select("compactions", _COMPACTION_COLUMNS, status):
            values = dict(zip(_COMPACTION_COLUMNS, row))
            if _row_digest(values, _COMPACTION_COLUMNS) != values["row_sha256"]:
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
        with _sqlite_errors(self.path, "read"):
            row = self._db.execute("SELECT MAX(id) FROM requests").fetchone()
        return int(row[0] or 0)

    def begin_compaction(self, values: dict) -> int:
        """Record a compaction as ``started`` (one transaction) before its base becomes current."""
        values = {**values, "status": "started", "started_at": _now(), "finished_at": None, "row_sha256": ""}
        with self._transaction():
            cursor = self._db.execute(f"INSERT INTO compactions ({', '.join(values)}) VALUES "
                                      f"({', '.join('?' * len(values))})", list(values.values()))
            compaction_id = int(cursor.lastrowid)
            self._rehash_compaction(compaction_id)
        return compaction_id

    def finish_compaction(self, compaction_id: int, removed: list[str], stats: dict, note: str | None = None) -> None:
        """Mark a compaction ``done`` with the files it removed (one transaction)."""
        with self._transaction():
            self._update_compaction(compaction_id, status="done", finished_at=_now(),
                                    removed_json=to_json(removed, indent=None), stats_json=_stats_json(stats),
                                    note=note)

    def resolve_compactions(self) -> list[int]:
        """Settle compactions a killed process left ``started`` (call while holding :func:`request_lock`):
        done when run.json names their base (the switch happened), else abandoned."""
        settled = []
        generation = getattr(self.run, "generation", 0)
        for c in self.compactions("started"):
            with self._transaction():
                if c.generation == generation:
                    self._update_compaction(c.id, status="done", finished_at=_now(),
                                            note="the process ended after its base became current; files of the "
                                                 "previous base are removed by the next request")
                else:
                    self._update_compaction(c.id, status="abandoned", finished_at=_now(),
                                            note="the process ended before its base became current; the run kept "
                                                 "its previous base")
            settled.append(c.id)
        return settled

    def _update_compaction(self, compaction_id: int, **changes) -> None:
        sets = ", ".join(f"{c}=?" for c in changes)
        self._db.execute(f"UPDATE compactions SET {sets} WHERE id=?", (*changes.values(), compaction_id))
        self._rehash_compaction(compaction_id)

    def _rehash_compaction(self, compaction_id: int) -> None:
        row = self._db.execute(f"SELECT {', '.join(_COMPACTION_COLUMNS)} FROM compactions WHERE id=?",
                               (compaction_id,)).fetchone()
        values = dict(zip(_COMPACTION_COLUMNS, row))
        self._db.execute("UPDATE compactions SET row_sha256=? WHERE id=?",
                         (_row_digest(values, _COMPACTION_COLUMNS), compaction_id))

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

    # -- planning -----------------------------------------------------------------------------------
    def plan(self, ids: np.ndarray, method: str, options_json: str, requested_by: str = "rows") -> Plan:
        """Decide what a request for ``ids`` with ``method``/options does (see the module docstring).

        A request naming exactly every row forgotten so far (e.g. ``retrain RUN`` without ids) is an
        alternative computation of the current state, even when several requests forgot those rows.
        Call while holding :func:`request_lock`. Raises :class:`InputError` when the request names rows
        already forgotten and is neither an identical repeat nor an alternative computation.
        """
        if requested_by not in REQUESTED_BY:
            raise ValueError(f"requested_by must be one of {REQUESTED_BY}")
        plan = self._plan(np.asarray(ids, dtype=np.int64), method, options_json)
        plan.requested_by = requested_by
        return plan

    def _plan(self, ids: np.ndarray, method: str, options_json: str) -> Plan:
        digest = ids_sha256(ids)
        done = self.current_requests("done")
        forgotten = self.forgotten_ids_from(done)
        same_rows = [r for r in done if r.ids_sha256 == digest and r.n_ids == len(ids)]
        identical = [r for r in same_rows if r.method == method and r.options_json == options_json]
        dirs = [str(r.out_path) for r in identical if r.out_dir]
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
        if forgotten.size and np.array_equal(ids, forgotten):
            latest = [r for r in done if r.kind in FORGETTING_KINDS][-1]
            return Plan("alternative", ids, forgotten, len(forgotten), latest)
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
                         (_row_digest({**values, "id": request_id}, self._columns), request_id))
        return request_id

    def _update(self, request_id: int, expected_status: str, **changes) -> None:
        current = self.request(request_id)  # (checks the row's checksum)
        if current.status != expected_status:
            raise RunError(f"ledger {self.path}: request #{request_id} is {current.status!r}, not {expected_status!r}")
        values = {**{c: getattr(current, c) for c in self._columns if c != "row_sha256"}, **changes}
        sets = ", ".join(f"{c}=?" for c in changes)
        self._db.execute(f"UPDATE requests SET {sets}, row_sha256=? WHERE id=? AND status=?",
                         (*changes.values(), _row_digest(values, self._columns), request_id, expected_status))

    def _new_row(self, plan: Plan, method: str, options_json: str, out_dir: Path, status: str) -> dict:
        keys = self.run.keys_of(plan.ids)
        return {
            "status": status, "kind": plan.kind, "refers_to": None if plan.refers_to is None else plan.refers_to.id,
            "requested_at": _now(), "finished_at": None, "method": method, "options_json": options_json,
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


def _connect(path: Path, writer: bool) -> sqlite3.Connection:
    """A connection to the ledger: read-write, or read-only when this process cannot write the directory.

    A reader in a writable directory uses a plain connection (it writes nothing: SQLite removes the
    write-ahead log files when the last connection closes). In a directory it cannot write, it opens
    with ``mode=ro`` when a write-ahead log exists, else ``immutable=1`` (see the module docstring).
    """
    if writer or os.access(path.parent, os.W_OK):
        return sqlite3.connect(str(path), timeout=60, isolation_level=None)
    from urllib.parse import quote

    wal = path.with_name(path.name + "-wal")
    flag = "mode=ro" if wal.is_file() and wal.stat().st_size else "immutable=1"
    return sqlite3.connect(f"file:{quote(str(path))}?{flag}", uri=True, timeout=60, isolation_level=None)


def _refuse_lost(run, path: Path) -> None:
    """Refuse a run whose ``run.json`` records a ledger that no longer exists."""
    recorded = read_json(Path(run.path) / RUN_JSON, "run.json").get("ledger")
    if isinstance(recorded, dict):
        raise RunError(f"run {run.path} had a deletion ledger (created {recorded.get('created', '?')}) but {path} is "
                       "missing: the record of which rows were forgotten is lost. Restore the ledger from a backup; "
                       "a new, empty ledger would count forgotten rows as present again, so none is started")


def _record_in_run(run) -> None:
    """Note in ``run.json`` that the run has a ledger (so losing it is noticed); written once."""
    if not isinstance(read_json(Path(run.path) / RUN_JSON, "run.json").get("ledger"), dict):
        update_run_meta(run.path, ledger={"file": LEDGER_FILE, "created": _now()})


def _create_ledger_file(run, path: Path) -> None:
    """Build an empty ledger (schema, run identity) in a temporary file and rename it into place."""
    meta = {"format": "miniunlearn-ledger", "schema_version": str(SCHEMA_VERSION), "created": _now(),
            "run_fingerprint": run.fingerprint, "run_n_train": str(run.n_train),
            "run_model_sha256": file_sha256(Path(run.path) / MODEL_FILE), "ids_encoding": IDS_ENCODING,
            "keys_encoding": KEYS_ENCODING}
    with atomic_path(path) as tmp, _sqlite_errors(path, "create"):
        db = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            db.execute("BEGIN")
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            db.execute(_COMPACTIONS_SQL)
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
        key = str(r.out_path.resolve()) if r.out_dir else None
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


def _row_digest(values: dict, columns: list[str]) -> str:
    """SHA-256 over a request's columns (all but ``row_sha256``), so a damaged or edited record is noticed.

    ``columns`` are those of the ledger's schema version (version 1 rows are checked with version 1's).
    """
    digest = hashlib.sha256()
    for column in columns:
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
