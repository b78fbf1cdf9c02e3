"""The server's durable queue of deletion requests: ``RUN/serve/queue.sqlite``.

SQLite in write-ahead-log mode with ``synchronous=FULL``: a request is acknowledged (202) only
after the transaction inserting it has committed, i.e. after it is on disk. The file is created
atomically (schema built in a temporary file, renamed into place).

Lifecycle of a request: ``queued`` -> ``running`` (a solve took it, ``solve_id`` set in the same
transaction that records the solve and its output directory) -> ``done`` or ``failed``. The
deletion ledger (:mod:`miniunlearn.service.ledger`) records what the model has forgotten; this
queue only records who asked for what and which solve served it. After a crash, a solve still
``running`` is settled against the ledger (:meth:`DeletionQueue.running_solves` + the worker's
recovery): if the ledger holds a completed request for its output directory, its requests become
``done`` from that record (the deletion happened once); otherwise they go back to ``queued``
(the ledger marks its half-started record abandoned, so the rows count as not forgotten).

The keys a request names are kept only until it is done: then they are replaced by their
SHA-256 digests (the receipt's form). The ledger keeps its own record of forgotten keys.
"""

from __future__ import annotations

import datetime as _dt
import json
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from miniunlearn.core.errors import InputError, RunError
from miniunlearn.core.storage import atomic_path, canonical_json
from miniunlearn.server.receipts import SERVE_DIR

QUEUE_FILE = "queue.sqlite"
STATUSES = ("queued", "running", "done", "failed")
SCHEMA_VERSION = 1

_SCHEMA = f"""
CREATE TABLE deletions (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    idempotency_key TEXT UNIQUE,
    body_sha256     TEXT NOT NULL,
    token_name      TEXT NOT NULL,
    received_at     TEXT NOT NULL,
    requested_by    TEXT NOT NULL CHECK (requested_by IN ('rows', 'keys')),
    names_json      TEXT,
    generation      INTEGER NOT NULL,
    options_json    TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN {STATUSES!r}),
    solo            INTEGER NOT NULL DEFAULT 0,
    solve_id        INTEGER REFERENCES solves(id),
    started_at      TEXT,
    done_at         TEXT,
    result_json     TEXT,
    error           TEXT
);
CREATE INDEX deletions_status ON deletions(status, seq);
CREATE TABLE solves (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    status          TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'abandoned')),
    out_dir         TEXT NOT NULL,
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    n_requests      INTEGER NOT NULL,
    n_rows          INTEGER NOT NULL,
    model_before    TEXT NOT NULL,
    ledger_request  INTEGER
)
"""


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


class IdempotencyConflict(InputError):
    """An Idempotency-Key reused with another request body."""


@dataclass
class Deletion:
    """One row of the ``deletions`` table."""

    seq: int
    id: str
    idempotency_key: str | None
    body_sha256: str
    token_name: str
    received_at: str
    requested_by: str
    names_json: str | None
    generation: int
    options_json: str
    status: str
    solo: int
    solve_id: int | None
    started_at: str | None
    done_at: str | None
    result_json: str | None
    error: str | None

    @property
    def names(self) -> list:
        return [] if self.names_json is None else json.loads(self.names_json)

    @property
    def options(self) -> dict:
        return json.loads(self.options_json)

    @property
    def result(self) -> dict:
        return json.loads(self.result_json) if self.result_json else {}


_COLUMNS = list(Deletion.__dataclass_fields__)


class DeletionQueue:
    """The queue of one run. Thread-safe: one connection, one lock (requests are small and brief)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        if not self.path.exists():
            _create(self.path)
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise RunError(f"server queue {self.path} cannot be opened ({exc}); restore it from a backup") from None
        if version != SCHEMA_VERSION:
            raise RunError(f"server queue {self.path} has schema version {version}, expected {SCHEMA_VERSION}")

    @classmethod
    def open(cls, run_dir: str | Path) -> "DeletionQueue":
        directory = Path(run_dir) / SERVE_DIR
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / QUEUE_FILE)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _rows(self, where: str, args: tuple = ()) -> list[Deletion]:
        with self._lock:
            found = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM deletions WHERE {where}", args).fetchall()
        return [Deletion(*row) for row in found]

    # -- requests ------------------------------------------------------------------------------------
    def add(self, *, idempotency_key: str | None, body_sha256: str, token_name: str, requested_by: str,
            names: list, generation: int, options: dict) -> tuple[Deletion, bool]:
        """Insert a request durably; return it and whether it is new. A known Idempotency-Key returns
        the request it made (an :class:`IdempotencyConflict` when the body differs)."""
        with self._transaction() as db:
            if idempotency_key is not None:
                row = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM deletions WHERE idempotency_key = ?",
                                 (idempotency_key,)).fetchone()
                if row is not None:
                    existing = Deletion(*row)
                    if existing.body_sha256 != body_sha256:
                        raise IdempotencyConflict(f"Idempotency-Key {idempotency_key[:80]!r} was used for another "
                                                  f"request ({existing.id}) with a different body")
                    return existing, False
            request_id = str(uuid.uuid4())
            db.execute("INSERT INTO deletions (id, idempotency_key, body_sha256, token_name, received_at, requested_by, "
                       "names_json, generation, options_json, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued')",
                       (request_id, idempotency_key, body_sha256, token_name, now(), requested_by,
                        json.dumps(names), int(generation), canonical_json(options)))
        return self.get(request_id), True

    def get(self, request_id: str) -> Deletion | None:
        found = self._rows("id = ?", (request_id,))
        return found[0] if found else None

    def all(self) -> list[Deletion]:
        return self._rows("1 ORDER BY seq")

    def next_batch(self, max_batch: int) -> list[Deletion]:
        """The oldest queued request and the queued requests after it with the same options (at most
        ``max_batch``); a request marked ``solo`` (its batch failed) is served alone."""
        first = self._rows("status = 'queued' ORDER BY seq LIMIT 1")
        if not first or first[0].solo or max_batch == 1:
            return first
        return self._rows("status = 'queued' AND solo = 0 AND options_json = ? ORDER BY seq LIMIT ?",
                          (first[0].options_json, int(max_batch)))

    def depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM deletions WHERE status IN ('queued', 'running')")
                       .fetchone()[0])

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM deletions GROUP BY status").fetchall()
        return {status: 0 for status in STATUSES} | dict(rows)

    # -- solves ----------------------------------------------------------------------------------------
    def begin_solve(self, request_ids: list[str], out_dir: str, n_rows: int, model_before: str) -> int:
        """Record a solve (with the served model's SHA-256 before it) and mark its requests ``running``
        (one transaction)."""
        stamp = now()
        with self._transaction() as db:
            cursor = db.execute("INSERT INTO solves (status, out_dir, started_at, n_requests, n_rows, model_before) "
                                "VALUES ('running', ?, ?, ?, ?, ?)",
                                (out_dir, stamp, len(request_ids), int(n_rows), model_before))
            solve_id = int(cursor.lastrowid)
            for request_id in request_ids:
                changed = db.execute("UPDATE deletions SET status='running', solve_id=?, started_at=? "
                                     "WHERE id=? AND status='queued'", (solve_id, stamp, request_id)).rowcount
                if changed != 1:
                    raise RunError(f"server queue: request {request_id} is no longer queued")
        return solve_id

    def finish(self, request_ids: list[str], results: dict[str, dict], solve_id: int | None = None,
               ledger_request: int | None = None) -> None:
        """Mark requests ``done`` with their results, forgetting the raw names (one transaction);
        ``solve_id`` (when they were solved) is marked done with the ledger request it made."""
        stamp = now()
        with self._transaction() as db:
            for request_id in request_ids:
                status = "running" if solve_id is not None else "queued"
                changed = db.execute("UPDATE deletions SET status='done', done_at=?, result_json=?, names_json=NULL "
                                     "WHERE id=? AND status=?",
                                     (stamp, canonical_json(results[request_id]), request_id, status)).rowcount
                if changed != 1:
                    raise RunError(f"server queue: request {request_id} was not {status}; not marked done twice")
            if solve_id is not None:
                db.execute("UPDATE solves SET status='done', finished_at=?, ledger_request=? WHERE id=?",
                           (stamp, ledger_request, solve_id))

    def fail(self, request_ids: list[str], error: str, solve_id: int | None = None) -> None:
        stamp = now()
        with self._transaction() as db:
            for request_id in request_ids:
                db.execute("UPDATE deletions SET status='failed', done_at=?, error=?, names_json=NULL "
                           "WHERE id=? AND status IN ('queued', 'running')", (stamp, error[:2000], request_id))
            if solve_id is not None:
                db.execute("UPDATE solves SET status='failed', finished_at=? WHERE id=?", (stamp, solve_id))

    def requeue(self, solve_id: int, solo: bool = False) -> list[str]:
        """Put a solve's requests back in the queue (its solve abandoned); ``solo``: serve each alone."""
        with self._transaction() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM deletions WHERE solve_id=? AND status='running'",
                                            (solve_id,)).fetchall()]
            db.execute("UPDATE deletions SET status='queued', solve_id=NULL, started_at=NULL, solo=MAX(solo, ?) "
                       "WHERE solve_id=? AND status='running'", (int(solo), solve_id))
            db.execute("UPDATE solves SET status='abandoned', finished_at=? WHERE id=?", (now(), solve_id))
        return ids

    def running_solves(self) -> list[tuple[int, str]]:
        """``(solve id, output directory)`` of every solve not settled (only after a crash or a stop)."""
        with self._lock:
            return [(int(a), str(b)) for a, b in
                    self._db.execute("SELECT id, out_dir FROM solves WHERE status='running' ORDER BY id").fetchall()]

    def solve_before(self, solve_id: int) -> str:
        with self._lock:
            return str(self._db.execute("SELECT model_before FROM solves WHERE id=?", (solve_id,)).fetchone()[0])

    def requests_of(self, solve_id: int) -> list[Deletion]:
        return self._rows("solve_id = ? AND status = 'running' ORDER BY seq", (solve_id,))


def _create(path: Path) -> None:
    """Build the schema in a temporary file and rename it into place: the queue exists whole or not at all."""
    with atomic_path(path) as tmp:
        db = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            db.execute("BEGIN")
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
            db.execute("PRAGMA journal_mode=WAL")
        finally:
            db.close()
