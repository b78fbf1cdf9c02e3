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
      run's current *base* (its model, history and rows) with every row forgotten since, so the method is given the cumulative set (all rows
      forgotten by earlier requests plus the new ones): the result equals forgetting the union in
      one request, and counts stay right (``n_forget`` = cumulative, ``n_forget_request`` = own).
    * **Identical repeat** -- the same row set, method and options as a completed request: the
      recorded model is returned byte for byte, without recomputing (copied, hash-checked, when
      another output directory is named). If the recorded file is missing or its SHA-256 no longer
      matches, the request is recomputed from the run's base (the run's identity is checked
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
    (:func:`~miniunlearn.service.ledger.lock.request_lock`), which the kernel releases when a process dies, so a ``started``
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

Modules
    ``codec`` (id and key encodings, hashes, row checksums), ``records`` (:class:`Request`,
    :class:`Compaction`), ``store`` (the SQLite file: schema and column tuples of every version,
    migrations, error mapping), ``planning`` (what a new request does: a pure function of the
    completed requests), ``lock`` (the request lock) and ``book`` (:class:`Ledger`, which joins them).
"""

from miniunlearn.runs import LEDGER_FILE
from miniunlearn.service.ledger.book import Ledger, forgotten_so_far
from miniunlearn.service.ledger.codec import (IDS_ENCODING, KEYS_ENCODING, canonical_options, decode_ids, decode_keys,
                                              encode_ids, encode_keys, ids_sha256, keys_sha256)
from miniunlearn.service.ledger.lock import LOCK_FILE, request_lock
from miniunlearn.service.ledger.planning import Plan, plan_request
from miniunlearn.service.ledger.records import (COMPACTION_STATUSES, FORGETTING_KINDS, KINDS, REQUESTED_BY, STATUSES,
                                                Compaction, Request, bounds_from_stats, superseded)
from miniunlearn.service.ledger.store import SCHEMA_VERSION

__all__ = [
    "COMPACTION_STATUSES", "FORGETTING_KINDS", "IDS_ENCODING", "KEYS_ENCODING", "KINDS", "LEDGER_FILE", "LOCK_FILE",
    "REQUESTED_BY", "SCHEMA_VERSION", "STATUSES", "Compaction", "Ledger", "Plan", "Request", "bounds_from_stats",
    "canonical_options", "decode_ids", "decode_keys", "encode_ids", "encode_keys", "forgotten_so_far", "ids_sha256",
    "keys_sha256", "plan_request", "request_lock", "superseded",
]
