"""Ledgers written by earlier schema versions, checked in under fixtures/ (built by make_fixtures.py),
still read as valid, verify, and migrate; their row checksums follow the documented formula."""

import hashlib
import json
import shutil
import sqlite3
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from miniunlearn.core.errors import InputError
from miniunlearn.service.ledger import LEDGER_FILE, Compaction, Ledger, Request, canonical_options, plan_request, store
from tests.service.ledger.make_fixtures import StandInRun

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# The row checksum's columns, written out independently of the code: version 2 and 3 requests, version 3 compactions.
REQUEST_COLUMNS = ["id", "status", "kind", "refers_to", "requested_at", "finished_at", "method", "options_json",
                   "n_ids", "ids_sha256", "n_cumulative", "cumulative_sha256", "out_dir", "model_sha256",
                   "model_bytes", "stats_json", "bound_json", "note", "pid", "host", "ids_blob", "cumulative_blob",
                   "keys_sha256", "keys_blob", "requested_by"]
COMPACTION_COLUMNS = ["id", "status", "generation", "after_request", "started_at", "finished_at",
                      "warm_start_request", "n_before", "n_after", "n_dropped", "dropped_ids_sha256",
                      "dropped_keys_sha256", "dropped_keys_blob", "base_fingerprint", "base_model_sha256",
                      "base_record_sha256", "removed_json", "stats_json", "note"]


def fixture(name, tmp_path) -> StandInRun:
    """A copy of fixture ``name``: even a reader of a write-ahead-log database writes beside it."""
    shutil.copytree(FIXTURES / name, tmp_path / name)
    return StandInRun(tmp_path / name)


def raw_rows(path, table):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY id")]
    finally:
        db.close()


def documented_digest(row, columns):
    """sha256 over json([column, value]) + newline per column; a blob enters as {"sha256": its SHA-256}."""
    digest = hashlib.sha256()
    for column in columns:
        value = row[column]
        if isinstance(value, bytes):
            value = {"sha256": hashlib.sha256(value).hexdigest()}
        digest.update(json.dumps([column, value]).encode() + b"\n")
    return digest.hexdigest()


def user_version(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


@pytest.mark.parametrize("name, tables", [("v2", ["requests"]), ("v3", ["requests", "compactions"])])
def test_stored_checksums_follow_the_documented_formula(name, tables, tmp_path):
    path = fixture(name, tmp_path).path / LEDGER_FILE
    for table in tables:
        columns = REQUEST_COLUMNS if table == "requests" else COMPACTION_COLUMNS
        rows = raw_rows(path, table)
        assert rows and all(r["row_sha256"] == documented_digest(r, columns) for r in rows)


def test_the_column_tuples_are_the_documented_ones_and_cover_the_records():
    assert [c for c in store.REQUEST_COLUMNS[3] if c != "row_sha256"] == REQUEST_COLUMNS
    assert [c for c in store.COMPACTION_COLUMNS_V3 if c != "row_sha256"] == COMPACTION_COLUMNS
    assert store.REQUEST_COLUMNS[2] == store.REQUEST_COLUMNS[3]
    assert store.REQUEST_COLUMNS[1] == store.REQUEST_COLUMNS[2][:len(store.REQUEST_COLUMNS[1])]
    assert set(store.REQUEST_COLUMNS[3]) == {f.name for f in fields(Request)} - {"run_dir"}
    assert set(store.COMPACTION_COLUMNS_V3) == {f.name for f in fields(Compaction)}


def test_a_version_3_ledger_with_a_compaction_reads_as_valid(tmp_path):
    run = fixture("v3", tmp_path)
    before = (run.path / LEDGER_FILE).read_bytes()
    with Ledger.open(run) as book:
        requests = book.requests()
        assert [(r.status, r.kind, r.ids().tolist()) for r in requests] == [
            ("done", "deletion", [3, 5]), ("done", "deletion", [8]), ("done", "deletion", [0, 4]),
            ("done", "alternative", [0, 4]), ("failed", "deletion", [6])]
        assert requests[1].bound == {"certificate_rel": 0.01} and requests[3].refers_to == 3
        assert "did not converge" in requests[4].note
        (compaction,) = book.compactions()
        assert (compaction.status, compaction.generation, compaction.after_request) == ("done", 1, 2)
        assert compaction.dropped_keys() == ["user-3", "user-5", "user-8"]
        assert compaction.removed == ["out/a/model.safetensors", "out/b/model.safetensors"]
        assert book.forgotten_ids().tolist() == [0, 4]  # rows of base 1: the compaction dropped 3, 5 and 8
        assert book.forgotten_keys() == ["user-0", "user-3", "user-4", "user-5", "user-8"]
        assert book.verify() == []
    assert (run.path / LEDGER_FILE).read_bytes() == before


def test_a_version_2_ledger_reads_as_it_is_and_migrates_to_version_3(tmp_path):
    run = fixture("v2", tmp_path)
    path = run.path / LEDGER_FILE
    before = path.read_bytes()
    with Ledger.open(run) as book:
        assert [(r.status, r.kind, r.ids().tolist()) for r in book.requests()] == [
            ("done", "deletion", [3, 5]), ("done", "alternative", [3, 5]), ("done", "deletion", [8, 11]),
            ("failed", "deletion", [1])]
        assert book.compactions() == [] and book.verify() == []
        assert book.forgotten_ids().tolist() == [3, 5, 8, 11]
    assert path.read_bytes() == before and user_version(path) == 2
    rows = raw_rows(path, "requests")
    with Ledger.open(run, create=True) as book:  # a writer migrates
        assert book.meta()["schema_version"] == "3" and "migrated_to_v3" in book.meta()
        assert book.verify() == [] and book.compactions() == []
        options = canonical_options({})
        assert book.plan(np.array([8, 11]), "retrain", options).kind == "repeat"
        plan = book.plan(np.array([2]), "retrain", options)
        assert (plan.kind, plan.cumulative.tolist()) == ("deletion", [2, 3, 5, 8, 11])
    assert user_version(path) == 3 and raw_rows(path, "requests") == rows  # records and checksums unchanged
    assert raw_rows(path, "compactions") == []


def test_planning_is_a_function_of_the_completed_requests(tmp_path):
    run = fixture("v3", tmp_path)
    with Ledger.open(run) as book:
        done = book.current_requests("done")
    options = canonical_options({})
    intact = plan_request(done, [0, 4], "retrain", options, run_path=run.path, n_train=run.n_train)
    assert (intact.kind, intact.refers_to.id) == ("repeat", 3)
    lost = plan_request(done, [0, 4], "retrain", options, run_path=run.path, n_train=run.n_train,
                        model_problem=lambda r: f"#{r.id} is gone")
    assert (lost.kind, lost.refers_to.id, lost.note) == ("recompute", 3, "#3 is gone; recomputed from the run's base")
    with pytest.raises(InputError, match="1 of its 2 rows were already forgotten"):
        plan_request(done, [4, 7], "retrain", options, run_path=run.path, n_train=run.n_train)
