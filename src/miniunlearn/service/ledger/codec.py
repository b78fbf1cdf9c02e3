"""How the ledger encodes what it stores: row ids, keys, options, timestamps and row checksums.

Row ids are stored sorted, delta-encoded as little-endian int64 and zlib-compressed (a few bytes
per thousand rows) with their count and SHA-256; keys as their canonical texts joined by line
breaks, zlib-compressed, with a SHA-256. Every stored record carries :func:`row_digest`, a
SHA-256 over its columns in the order its schema version lists them
(:mod:`miniunlearn.service.ledger.store`), so a damaged or hand-edited record is noticed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import zlib
from typing import Sequence

import numpy as np

from miniunlearn.core.errors import RunError
from miniunlearn.core.storage import canonical_json

IDS_ENCODING = "delta-int64le-zlib"
KEYS_ENCODING = "utf8-lines-zlib"


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
    """SHA-256 of the canonical key texts joined by line breaks."""
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


def utc_now() -> str:
    """The current time, UTC, ISO 8601 with milliseconds (every timestamp the ledger records)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def row_digest(values: dict, columns: Sequence[str]) -> str:
    """SHA-256 over a record's columns (all but ``row_sha256``), so a damaged or edited record is noticed.

    The digest is ``sha256(line_1 + ... + line_n)`` with ``line_i = json([column_i, value_i]) + "\\n"``
    over ``columns`` in their order (a blob enters as ``{"sha256": its SHA-256}``). ``columns`` are
    the explicit tuple of the record's schema version (``store.REQUEST_COLUMNS``), never derived
    from a class, so the digest of a stored record cannot change with the code.
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
