"""The ledger's records: one :class:`Request` per forget request, one :class:`Compaction` per
compaction, as read back from their tables, and the values every record may hold."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from miniunlearn.core.storage import file_sha256, to_json
from miniunlearn.runs import MODEL_FILE
from miniunlearn.service.ledger.codec import decode_ids, decode_keys

REQUESTED_BY = ("rows", "keys")
STATUSES = ("started", "done", "failed", "abandoned")
KINDS = ("deletion", "alternative", "repeat", "recompute")
# kinds whose rows join the forgotten set; alternatives, repeats and recomputations forget nothing new
FORGETTING_KINDS = ("deletion",)
COMPACTION_STATUSES = ("started", "done", "abandoned")


@dataclass
class Request:
    """One row of the ``requests`` table (the columns each schema version stores: ``store.REQUEST_COLUMNS``)."""

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
    run_dir: Path | None = field(repr=False, default=None, compare=False)  # the run directory (not a column)

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
        return path if path.is_absolute() or self.run_dir is None else Path(os.path.normpath(self.run_dir / path))

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


def bounds_from_stats(stats: dict) -> dict | None:
    """The bound or certificate a method reported (keys naming a bound, certificate or contraction)."""
    found = {k: v for k, v in stats.items()
             if any(word in k for word in ("bound", "certificate", "contraction")) and not isinstance(v, dict)}
    return found or None


def stats_column(stats: dict) -> str:
    """A method's statistics as stored in ``stats_json``."""
    return to_json(stats, indent=None)


def bound_column(stats: dict) -> str | None:
    """The bound or certificate in ``stats`` as stored in ``bound_json`` (None when there is none)."""
    found = bounds_from_stats(stats)
    return None if found is None else to_json(found, indent=None)


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
