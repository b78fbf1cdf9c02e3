"""The ledger's SQLite file: schema of every version, the columns each version stores, creation,
migration, connections, checksummed inserts and updates, and SQLite errors as one clear message.

Schema versions
    1. ``meta`` and ``requests`` (:data:`REQUEST_COLUMNS_V1`); output directories absolute.
    2. ``requests`` gains ``keys_sha256``, ``keys_blob`` and ``requested_by``
       (:data:`REQUEST_COLUMNS_V2`); output directories relative to the run.
    3. the ``compactions`` table (:data:`COMPACTION_COLUMNS_V3`).

Each record's ``row_sha256`` is :func:`~miniunlearn.service.ledger.codec.row_digest` over the
explicit column tuple of its version, in that order: these tuples are part of the file format,
so they are written out here and never derived from the record classes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import quote

from miniunlearn.core.errors import RunError
from miniunlearn.core.storage import WriteError, atomic_path
from miniunlearn.service.ledger.codec import KEYS_ENCODING, row_digest, utc_now
from miniunlearn.service.ledger.records import COMPACTION_STATUSES, KINDS, STATUSES

SCHEMA_VERSION = 3

# The columns of a request record, in the order its row checksum covers them (version 1, then 2 and 3).
REQUEST_COLUMNS_V1 = (
    "id", "status", "kind", "refers_to", "requested_at", "finished_at", "method", "options_json", "n_ids",
    "ids_sha256", "n_cumulative", "cumulative_sha256", "out_dir", "model_sha256", "model_bytes", "stats_json",
    "bound_json", "note", "pid", "host", "ids_blob", "cumulative_blob", "row_sha256",
)
REQUEST_COLUMNS_V2 = REQUEST_COLUMNS_V1 + ("keys_sha256", "keys_blob", "requested_by")
REQUEST_COLUMNS = {1: REQUEST_COLUMNS_V1, 2: REQUEST_COLUMNS_V2, 3: REQUEST_COLUMNS_V2}
# The columns of a compaction record (version 3), in the order its row checksum covers them.
COMPACTION_COLUMNS_V3 = (
    "id", "status", "generation", "after_request", "started_at", "finished_at", "warm_start_request", "n_before",
    "n_after", "n_dropped", "dropped_ids_sha256", "dropped_keys_sha256", "dropped_keys_blob", "base_fingerprint",
    "base_model_sha256", "base_record_sha256", "removed_json", "stats_json", "note", "row_sha256",
)

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


# ---------------------------------------------------------------------------------------------- files
def create_file(path: Path, meta: dict) -> None:
    """Build an empty ledger (schema, ``meta`` rows) in a temporary file and rename it into place."""
    with atomic_path(path) as tmp, sqlite_errors(path, "create"):
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


def connect(path: Path, writer: bool) -> sqlite3.Connection:
    """A connection to the ledger: read-write, or read-only when this process cannot write the directory.

    A reader in a writable directory uses a plain connection (it writes nothing: SQLite removes the
    write-ahead log files when the last connection closes). In a directory it cannot write, it opens
    with ``mode=ro`` when a write-ahead log exists, else ``immutable=1`` (no log means the file
    holds every committed request).
    """
    if writer or os.access(path.parent, os.W_OK):
        return sqlite3.connect(str(path), timeout=60, isolation_level=None)
    wal = path.with_name(path.name + "-wal")
    flag = "mode=ro" if wal.is_file() and wal.stat().st_size else "immutable=1"
    return sqlite3.connect(f"file:{quote(str(path))}?{flag}", uri=True, timeout=60, isolation_level=None)


def check_schema(db: sqlite3.Connection, path: Path) -> tuple[int, set[str]]:
    """Integrity check and schema version of an open ledger: ``(version, table names)``; refuses others."""
    check = db.execute("PRAGMA integrity_check").fetchone()
    if check is None or check[0] != "ok":
        found = one_line(check[0]) if check else "no answer"
        raise RunError(f"ledger {path} is corrupted (integrity check: {found}); restore it from a backup; "
                       "models already written are unaffected")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if version > SCHEMA_VERSION:
        raise RunError(f"ledger {path} has schema version {version}, newer than this miniunlearn "
                       f"understands ({SCHEMA_VERSION}); upgrade miniunlearn")
    if version not in REQUEST_COLUMNS or not {"meta", "requests"} <= tables:
        raise RunError(f"{path} is not a miniunlearn deletion ledger (schema version {version}, "
                       f"tables {sorted(tables) or 'none'}); restore it from a backup")
    return version, tables


def set_writer_pragmas(db: sqlite3.Connection) -> None:
    """Write-ahead log, a full sync on every commit, foreign keys enforced."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")


# ---------------------------------------------------------------------------------------------- migrations
def migrate_v1_to_v2(db: sqlite3.Connection, rewritten: list[dict]) -> None:
    """Version 1 -> 2 (inside the caller's transaction): add the key columns, store ``rewritten``.

    ``rewritten``: every request's version-2 values (``id`` and every column of
    :data:`REQUEST_COLUMNS_V2` but ``row_sha256``), computed from its verified version-1 record.
    """
    for column in _V2_COLUMNS_SQL:
        db.execute(f"ALTER TABLE requests ADD COLUMN {column}")
    for values in rewritten:
        changes = {k: values[k] for k in ("keys_sha256", "keys_blob", "requested_by", "out_dir")}
        sets = ", ".join(f"{c}=?" for c in changes)
        db.execute(f"UPDATE requests SET {sets}, row_sha256=? WHERE id=?",
                   (*changes.values(), row_digest(values, REQUEST_COLUMNS_V2), values["id"]))
    db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                   [("schema_version", "2"), ("keys_encoding", KEYS_ENCODING), ("migrated_from_v1", utc_now())])
    db.execute("PRAGMA user_version = 2")


def migrate_v2_to_v3(db: sqlite3.Connection) -> None:
    """Version 2 -> 3 (inside the caller's transaction): the (empty) compactions table."""
    db.execute(_COMPACTIONS_SQL)
    db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                   [("schema_version", str(SCHEMA_VERSION)), ("migrated_to_v3", utc_now())])
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


# ---------------------------------------------------------------------------------------------- rows
def select(db: sqlite3.Connection, table: str, columns: Sequence[str], status: str | None) -> list[tuple]:
    """Every row of ``table`` (with ``status`` only, if given), in id order."""
    query = f"SELECT {', '.join(columns)} FROM {table}"
    args: tuple = ()
    if status is not None:
        query += " WHERE status = ?"
        args = (status,)
    return db.execute(query + " ORDER BY id", args).fetchall()


def insert_request(db: sqlite3.Connection, values: dict, columns: Sequence[str]) -> int:
    """Insert a request (``values``: every column but ``id``), then its checksum; return its id."""
    values = {**values, "row_sha256": ""}
    cursor = db.execute(f"INSERT INTO requests ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                        list(values.values()))
    request_id = int(cursor.lastrowid)
    db.execute("UPDATE requests SET row_sha256=? WHERE id=?", (row_digest({**values, "id": request_id}, columns),
                                                              request_id))
    return request_id


def update_request(db: sqlite3.Connection, request_id: int, expected_status: str, current: dict, changes: dict,
                   columns: Sequence[str]) -> None:
    """Apply ``changes`` to a request still in ``expected_status`` (``current``: its values), with a new checksum."""
    values = {**{c: current[c] for c in columns if c != "row_sha256"}, **changes}
    sets = ", ".join(f"{c}=?" for c in changes)
    db.execute(f"UPDATE requests SET {sets}, row_sha256=? WHERE id=? AND status=?",
               (*changes.values(), row_digest(values, columns), request_id, expected_status))


def insert_compaction(db: sqlite3.Connection, values: dict) -> int:
    """Insert a compaction (``values``: every column but ``id``), then its checksum; return its id."""
    values = {**values, "row_sha256": ""}
    cursor = db.execute(f"INSERT INTO compactions ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                        list(values.values()))
    compaction_id = int(cursor.lastrowid)
    _rehash_compaction(db, compaction_id)
    return compaction_id


def update_compaction(db: sqlite3.Connection, compaction_id: int, changes: dict) -> None:
    """Apply ``changes`` to a compaction and recompute its checksum."""
    sets = ", ".join(f"{c}=?" for c in changes)
    db.execute(f"UPDATE compactions SET {sets} WHERE id=?", (*changes.values(), compaction_id))
    _rehash_compaction(db, compaction_id)


def _rehash_compaction(db: sqlite3.Connection, compaction_id: int) -> None:
    row = db.execute(f"SELECT {', '.join(COMPACTION_COLUMNS_V3)} FROM compactions WHERE id=?",
                     (compaction_id,)).fetchone()
    values = dict(zip(COMPACTION_COLUMNS_V3, row))
    db.execute("UPDATE compactions SET row_sha256=? WHERE id=?",
               (row_digest(values, COMPACTION_COLUMNS_V3), compaction_id))


# ---------------------------------------------------------------------------------------------- errors
@contextlib.contextmanager
def sqlite_errors(path: Path, action: str) -> Iterator[None]:
    """Turn SQLite errors into one clear :class:`RunError` (a full disk into a WriteError)."""
    try:
        yield
    except UnicodeDecodeError:
        raise RunError(f"ledger {path} is corrupted (a text field is not valid UTF-8); restore it from a backup. "
                       "Models already written are unaffected") from None
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        text = one_line(str(exc))
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


def one_line(text: str, limit: int = 240) -> str:
    """SQLite's multi-line reports as one short line."""
    flat = "; ".join(part.strip() for part in str(text).splitlines() if part.strip() and "***" not in part)
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def _no_space_left(path: Path) -> bool:
    """True when the file system holding ``path`` has no free block (SQLite then reports a bare I/O error)."""
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        return False
    return stats.f_bavail == 0 or stats.f_favail == 0
