"""The deletion ledger: recorded requests, idempotent repeats, refusals, cumulative forgetting."""

import json
import shutil
import sqlite3
import threading
from numbers import Real
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from miniunlearn.cli import main
from miniunlearn.core.errors import InputError, RunError
from miniunlearn.core.params import Interval, Param
from miniunlearn.core.storage import file_sha256
from miniunlearn.methods import UnlearningMethod, register, unregister
from miniunlearn.methods.retrain import Retrain
from miniunlearn.runs import load_model, open_run
from miniunlearn.service import LedgerWarning, forget
from miniunlearn.service.ledger import LEDGER_FILE, Ledger, decode_ids, encode_ids, ids_sha256, request_lock
from tests.helpers import fresh_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from miniunlearn import load_dataset, train

    path = tmp_path_factory.mktemp("ledger") / "bc"
    train(load_dataset("breast_cancer"), 1e-2, path)
    return path


@pytest.fixture
def run(trained, tmp_path):
    """A fresh copy of the trained run (no ledger yet)."""
    return fresh_run(trained, tmp_path)


@pytest.fixture
def calls(monkeypatch):
    """Count how often retraining actually computes."""
    counter = {"n": 0}
    original = Retrain.unlearn

    def counting(self, ctx):
        counter["n"] += 1
        return original(self, ctx)

    monkeypatch.setattr(Retrain, "unlearn", counting)
    return counter


class Shrink(UnlearningMethod):
    """A stand-in method with an option and a certificate (registered only inside tests)."""

    name = "test-shrink"
    summary = "multiply the trained parameters by `factor`"

    parameters = {"factor": Param(0.5, Interval(Real, 0, 10))}

    def unlearn(self, ctx):
        return ctx.original_theta() * self.factor, {"certificate": 1.25, "banach_bound": 0.5}


@pytest.fixture
def shrink():
    register(Shrink)
    yield "test-shrink"
    unregister("test-shrink")


def requests(run):
    with Ledger.open(run) as book:
        return book.requests()


# ---------------------------------------------------------------------------------------------- recording
def test_a_request_is_recorded_with_ids_method_result_and_hash(run, tmp_path):
    result = forget(run, [5, 1, 3], "retrain", out=tmp_path / "o1")
    assert (run.path / LEDGER_FILE).is_file()
    (r,) = requests(run)
    assert (r.status, r.kind, r.method, r.n_ids, r.n_cumulative) == ("done", "deletion", "retrain", 3, 3)
    assert r.ids().tolist() == [1, 3, 5] and r.ids_sha256 == ids_sha256(np.array([1, 3, 5]))
    assert r.model_sha256 == file_sha256(tmp_path / "o1" / "model.safetensors")
    # recorded relative to the run directory, resolved against where the run is now
    assert r.out_dir == "../o1" and r.out_path == (tmp_path / "o1").resolve()
    assert r.keys() == ["1", "3", "5"] and r.requested_by == "rows"  # no id column: keys are the row numbers
    assert r.stats["n_forget"] == 3 and r.finished_at >= r.requested_at
    assert result.stats["ledger"]["request"] == r.id
    saved = json.loads((tmp_path / "o1" / "result.json").read_text())
    assert saved["ledger_request"] == r.id and saved["model_sha256"] == r.model_sha256
    with sqlite3.connect(run.path / LEDGER_FILE) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3


def test_bound_or_certificate_and_options_are_recorded(run, tmp_path, shrink):
    forget(run, [2, 4], shrink, out=tmp_path / "o", factor=0.25)
    (r,) = requests(run)
    assert r.options == {"factor": 0.25}
    assert r.bound == {"certificate": 1.25, "banach_bound": 0.5}


def test_in_memory_and_opted_out_requests_are_not_recorded(run, tmp_path):
    forget(run, [1, 2], "retrain")
    forget(run, [1, 2], "retrain", out=tmp_path / "o", ledger=False)
    assert not (run.path / LEDGER_FILE).exists()
    with pytest.raises(InputError, match="give an output directory"):
        forget(run, [1, 2], "retrain", ledger=True)
    with pytest.raises(InputError, match="already_forgotten comes from the run's deletion ledger"):
        forget(run, [1, 2], "retrain", out=tmp_path / "o2", already_forgotten=[3])


# ---------------------------------------------------------------------------------------------- repeats
def test_identical_repeat_returns_the_recorded_model_without_recomputing(run, tmp_path, calls):
    first = forget(run, [7, 8, 9], "retrain", out=tmp_path / "a")
    model = tmp_path / "a" / "model.safetensors"
    digest, mtime = file_sha256(model), model.stat().st_mtime_ns
    assert calls["n"] == 1
    again = forget(run, [9, 8, 7], "retrain", out=tmp_path / "a")  # same set, other order, same directory
    assert calls["n"] == 1 and file_sha256(model) == digest and model.stat().st_mtime_ns == mtime
    assert torch.equal(again.theta, first.theta)
    assert again.stats["ledger"]["kind"] == "repeat" and again.stats["passes_retained"] == 0.0
    elsewhere = forget(run, [7, 8, 9], "retrain", out=tmp_path / "b")  # copied, byte for byte
    assert calls["n"] == 1 and file_sha256(tmp_path / "b" / "model.safetensors") == digest
    assert torch.equal(elsewhere.theta, first.theta)
    kinds = [(r.kind, r.refers_to) for r in requests(run)]
    assert kinds == [("deletion", None), ("repeat", 1), ("repeat", 1)]
    assert json.loads((tmp_path / "b" / "result.json").read_text())["model_sha256"] == digest


def test_repeat_with_a_missing_model_is_recomputed_and_says_so(run, tmp_path, calls):
    forget(run, [3, 4], "retrain", out=tmp_path / "a")
    digest = file_sha256(tmp_path / "a" / "model.safetensors")
    (tmp_path / "a" / "model.safetensors").unlink()
    with pytest.warns(LedgerWarning, match="is missing; recomputed"):
        result = forget(run, [3, 4], "retrain", out=tmp_path / "a")
    assert calls["n"] == 2
    assert result.stats["ledger"]["kind"] == "recompute"
    # the computation is deterministic and the file format canonical: the same bytes come back
    assert result.stats["ledger"]["identical_to_recorded"] is True
    assert file_sha256(tmp_path / "a" / "model.safetensors") == digest


def test_repeat_with_a_damaged_model_is_recomputed(run, tmp_path, calls):
    forget(run, [3, 4], "retrain", out=tmp_path / "a")
    model = tmp_path / "a" / "model.safetensors"
    data = bytearray(model.read_bytes())
    data[-3] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.warns(LedgerWarning, match="changed or damaged"):
        forget(run, [3, 4], "retrain", out=tmp_path / "a")
    assert calls["n"] == 2
    load_model(tmp_path / "a")  # loads again


def test_repeat_after_a_crash_between_done_and_result_json_restores_result_json(run, tmp_path, calls):
    forget(run, [10, 11], "retrain", out=tmp_path / "a")
    (tmp_path / "a" / "result.json").unlink()
    forget(run, [10, 11], "retrain", out=tmp_path / "a")
    assert calls["n"] == 1 and (tmp_path / "a" / "result.json").is_file()


# ---------------------------------------------------------------------------------------------- refusals
def test_rows_already_forgotten_are_refused_naming_the_request(run, tmp_path, calls):
    forget(run, [1, 2, 3], "retrain", out=tmp_path / "a")
    for ids in ([3, 50], [1, 2, 3, 4], [2]):
        with pytest.raises(InputError, match=r"already forgotten, e\.g\. row [123], by request #1 \(retrain"):
            forget(run, ids, "retrain", out=tmp_path / "b")
    assert not (tmp_path / "b").exists() and calls["n"] == 1
    assert len(requests(run)) == 1


def test_refusal_message_through_the_cli(run, tmp_path, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("1\n2\n")
    assert _cli("retrain", run.path, "--ids", ids, "--out", tmp_path / "a") == 0
    ids.write_text("2\n3\n")
    assert _cli("retrain", run.path, "--ids", ids, "--out", tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 of its 2 rows were already forgotten" in err


def test_forgetting_every_remaining_row_is_refused(run, tmp_path):
    n = run.n_train
    forget(run, list(range(0, n - 5)), "retrain", out=tmp_path / "a")
    with pytest.raises(InputError, match="would remove every training row"):
        forget(run, list(range(n - 5, n)), "retrain", out=tmp_path / "b")


def test_the_run_directory_and_other_runs_are_never_outputs(run, tmp_path, trained):
    before = {p.name: file_sha256(p) for p in run.path.iterdir() if p.is_file()}
    with pytest.raises(InputError, match="is the run directory itself"):
        forget(run, [1], "retrain", out=run.path)
    with pytest.raises(RunError, match="holds a training run"):
        forget(run, [1], "retrain", out=trained, overwrite=True)
    assert {p.name: file_sha256(p) for p in run.path.iterdir() if p.is_file()} == before


def test_forget_on_an_unlearned_model_points_to_the_original_run(run, tmp_path, capsys):
    forget(run, [1], "retrain", out=tmp_path / "a")
    ids = tmp_path / "ids.txt"
    ids.write_text("2\n")
    assert _cli("forget", tmp_path / "a", "--ids", ids, "--method", "retrain", "--out", tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert "holds an unlearned model" in err and str(run.path.resolve()) in err


# ---------------------------------------------------------------------------------------------- cumulative
def test_forgetting_more_rows_later_equals_forgetting_the_union_at_once(run, tmp_path):
    first = forget(run, [0, 10, 20], "retrain", out=tmp_path / "a")
    second = forget(run, [5, 15], "retrain", out=tmp_path / "b")
    assert (first.stats["n_forget"], second.stats["n_forget"]) == (3, 5)
    assert (second.stats["n_forget_request"], second.stats["n_forgotten_before"]) == (2, 3)
    assert second.stats["ratio"] == pytest.approx(5 / run.n_train)
    at_once = forget(run, [0, 5, 10, 15, 20], "retrain", ledger=False)
    assert torch.equal(second.theta, at_once.theta)
    assert not torch.equal(first.theta, at_once.theta)
    r1, r2 = requests(run)
    assert r2.ids().tolist() == [5, 15] and r2.cumulative_ids().tolist() == [0, 5, 10, 15, 20]
    with Ledger.open(run) as book:
        assert book.forgotten_ids().tolist() == [0, 5, 10, 15, 20] and book.verify() == []


def test_without_the_ledger_already_forgotten_means_the_union(run):
    staged = forget(run, [5, 15], "retrain", already_forgotten=[0, 10, 20], ledger=False)
    at_once = forget(run, [0, 5, 10, 15, 20], "retrain", ledger=False)
    assert torch.equal(staged.theta, at_once.theta) and staged.stats["n_forget"] == 5
    with pytest.raises(InputError, match="already forgotten"):
        forget(run, [10], "retrain", already_forgotten=[0, 10], ledger=False)


def test_same_rows_with_another_method_is_an_alternative_that_forgets_nothing_new(run, tmp_path, shrink):
    forget(run, [1, 2], "retrain", out=tmp_path / "a")
    forget(run, [3], "retrain", out=tmp_path / "b")
    alt = forget(run, [1, 2], shrink, out=tmp_path / "c")
    assert alt.stats["ledger"]["kind"] == "alternative" and alt.stats["ledger"]["refers_to"] == 1
    assert alt.stats["n_forget"] == 2  # request #1's state, not #2's
    other_options = forget(run, [1, 2], shrink, out=tmp_path / "d", factor=0.75)
    assert other_options.stats["ledger"]["kind"] == "alternative"
    with Ledger.open(run) as book:
        assert book.forgotten_ids().tolist() == [1, 2, 3]


def test_the_cli_forget_then_retrain_flow_of_the_readme_works(run, tmp_path, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("4\n8\n15\n")
    assert _cli("forget", run.path, "--ids", ids, "--method", "mini", "--out", tmp_path / "m") == 0
    assert _cli("retrain", run.path, "--ids", ids, "--out", tmp_path / "r") == 0
    assert [(r.method, r.kind) for r in requests(run)] == [("mini", "deletion"), ("retrain", "alternative")]


# ---------------------------------------------------------------------------------------------- crash semantics
def test_failed_request_is_recorded_and_its_rows_stay_unforgotten(run, tmp_path, monkeypatch):
    def broken(self, ctx):
        raise RuntimeError("solver exploded")

    monkeypatch.setattr(Retrain, "unlearn", broken)
    with pytest.raises(RuntimeError):
        forget(run, [1, 2], "retrain", out=tmp_path / "a")
    (r,) = requests(run)
    assert r.status == "failed" and "solver exploded" in r.note and r.model_sha256 is None
    monkeypatch.undo()
    result = forget(run, [1, 2], "retrain", out=tmp_path / "a")
    assert result.stats["ledger"]["kind"] == "deletion"


def test_a_request_left_started_by_a_dead_process_is_abandoned_and_can_be_retried(run, tmp_path, capsys):
    from miniunlearn.service.ledger import Plan

    with request_lock(run), Ledger.open(run, create=True) as book:  # a process that died mid-request
        book.begin(Plan("deletion", np.array([6, 7]), np.array([6, 7]), 0), "retrain", "{}", tmp_path / "a")
    (r,) = requests(run)
    assert r.status == "started"
    with request_lock(run):  # while a process holds the lock, the listing calls it running
        assert _cli("ledger", run.path, "--json") == 0
        assert json.loads(capsys.readouterr().out)["requests"][0]["running"] is True
    assert _cli("ledger", run.path, "--json") == 0
    (listed,) = json.loads(capsys.readouterr().out)["requests"]
    assert listed["status"] == "started" and listed["running"] is False
    assert json.loads(json.dumps(listed))["n_ids"] == 2
    result = forget(run, [6, 7], "retrain", out=tmp_path / "a")
    first, second = requests(run)
    assert first.status == "abandoned" and "process ended" in first.note
    assert second.status == "done" and second.kind == "deletion" and result.stats["n_forget"] == 2


def test_concurrent_requests_on_one_run_are_serialised(run, tmp_path):
    errors = []

    def request(ids, name):
        try:
            forget(open_run(run.path), ids, "retrain", out=tmp_path / name)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=request, args=([i, i + 100], f"o{i}")) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    done = requests(run)
    assert sorted(r.n_cumulative for r in done) == [2, 4, 6, 8]
    with Ledger.open(run) as book:
        assert book.verify() == [] and book.forgotten_ids().size == 8


def test_a_ledger_from_before_retraining_in_place_is_refused(run, tmp_path):
    from miniunlearn import load_dataset, train

    forget(run, [1], "retrain", out=tmp_path / "a")
    train(load_dataset("breast_cancer"), 3e-2, run.path, overwrite=True)
    with pytest.raises(RunError, match="changed since its ledger"):
        forget(open_run(run.path), [2], "retrain", out=tmp_path / "b")


# ---------------------------------------------------------------------------------------------- CLI
def _cli(*args):
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code
    return 0


def test_ledger_command_lists_verifies_and_exports(run, tmp_path, capsys):
    assert _cli("ledger", run.path, "--json") == 0
    assert json.loads(capsys.readouterr().out)["requests"] == []
    assert not (run.path / LEDGER_FILE).exists()  # listing creates nothing
    forget(run, [3, 1], "retrain", out=tmp_path / "a")
    forget(run, [9], "retrain", out=tmp_path / "b")
    assert _cli("ledger", run.path, "--verify", "--json", "--forgotten-ids", tmp_path / "f.txt") == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["forgotten_rows"] == 3 and payload["verify"] == {"ok": True, "problems": []}
    assert [r["n_cumulative"] for r in payload["requests"]] == [2, 3]
    assert (tmp_path / "f.txt").read_text().split() == ["1", "3", "9"]
    assert _cli("ledger", run.path) == 0
    human = capsys.readouterr().out
    assert "2 request(s); 3 of 426 training rows forgotten" in human and "deletion" in human
    (tmp_path / "b" / "model.safetensors").unlink()
    assert _cli("ledger", run.path, "--verify") == 2
    captured = capsys.readouterr()
    assert "request #2's model" in captured.err and "is missing" in captured.err


# ---------------------------------------------------------------------------------------------- encoding
@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, 2**40), max_size=300))
def test_id_sets_round_trip_compactly(values):
    ids = np.array(sorted(values), dtype=np.int64)
    blob = encode_ids(ids)
    assert decode_ids(blob, len(ids), ids_sha256(ids), "x").tolist() == ids.tolist()


def test_compact_encoding_is_small_and_damage_is_detected():
    random = np.sort(np.random.default_rng(0).choice(1_000_000, 100_000, replace=False))
    assert len(encode_ids(random)) < 1.2 * random.size  # ~1 byte per id instead of 8
    ids = np.arange(0, 1_000_000, 2)
    blob = encode_ids(ids)
    assert len(blob) < 8000  # a regular pattern: 500k ids in a few kB
    with pytest.raises(RunError, match="corrupted"):
        decode_ids(blob[:-5], len(ids), ids_sha256(ids), "request #1")
    with pytest.raises(RunError, match="do not match their recorded SHA-256"):
        decode_ids(encode_ids(ids + 1), len(ids), ids_sha256(ids), "request #1")


def test_an_edited_request_row_is_reported(run, tmp_path):
    forget(run, [1, 2], "retrain", out=tmp_path / "a")
    with sqlite3.connect(run.path / LEDGER_FILE) as db:
        db.execute("UPDATE requests SET method='neggrad'")
    with pytest.raises(RunError, match="does not match its checksum"):
        forget(run, [3], "retrain", out=tmp_path / "b")
    assert _cli("ledger", run.path) == 2


# ---------------------------------------------------------------------------------------------- keys
@pytest.fixture
def keyed_run(tmp_path, rng):
    """A CSV run whose rows belong to users (four rows each, some held out for testing)."""
    import pandas as pd

    from miniunlearn import load_dataset, train

    n = 240
    frame = pd.DataFrame({"user": [f"user-{i % 60}" for i in range(n)], "x": rng.normal(size=n),
                          "z": rng.normal(size=n)})
    frame["y"] = np.where(frame.x + rng.logistic(size=n) > 0, "a", "b")
    frame.to_csv(tmp_path / "data.csv", index=False)
    return train(load_dataset(f"csv:path={tmp_path / 'data.csv'},target=y,id=user"), 1e-2, tmp_path / "run")


def test_forget_by_key_removes_every_row_of_the_key_and_records_rows_and_keys(keyed_run, tmp_path):
    run = keyed_run
    result = forget(run, keys=["user-7", "user-30"], method="retrain", out=tmp_path / "o")
    keys = run.keys_of(np.arange(run.n_train))
    rows = [i for i, k in enumerate(keys) if k in ("user-7", "user-30")]
    assert result.stats["n_forget"] == len(rows) >= 2
    (r,) = requests(run)
    assert r.ids().tolist() == rows and r.keys() == [keys[i] for i in rows] and r.requested_by == "keys"
    with Ledger.open(run) as book:
        assert book.forgotten_keys() == list(dict.fromkeys(keys[i] for i in rows))  # each once, in row order
    # the same rows by number are an identical repeat: the request is about rows, however it was named
    forget(run, rows, "retrain", out=tmp_path / "o")
    assert [q.kind for q in requests(run)] == ["deletion", "repeat"]


def test_retraining_every_row_forgotten_so_far_is_an_alternative_not_a_refusal(run, tmp_path, capsys):
    from miniunlearn.service.ledger import forgotten_so_far

    forget(run, [1, 2], "mini", out=tmp_path / "a")
    forget(run, [7], "mini", out=tmp_path / "b")
    union = forgotten_so_far(run)
    assert union.tolist() == [1, 2, 7]
    main(["retrain", str(run.path), "--out", str(tmp_path / "re"), "--json"])
    assert json.loads(capsys.readouterr().out)["n_forget"] == 3
    record = requests(run)[-1]
    assert (record.kind, record.refers_to, record.ids().tolist()) == ("alternative", 2, [1, 2, 7])
    expected = forget(run, [1, 2, 7], "retrain", ledger=False)  # the same computation without the ledger
    assert torch.equal(load_model(tmp_path / "re")[1], expected.theta)
    # evaluate without --ids compares on the same rows
    main(["evaluate", str(tmp_path / "b"), "--against", str(tmp_path / "re"), "--run", str(run.path), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["n_forget"] == 3 and report["models"]["mini"]["relative_residual"] < 0.1


# ---------------------------------------------------------------------------------------------- files
def _as_version_1(path, run_dir):
    """Rewrite a version-2 ledger as version 1 stored it -- no key columns, absolute output paths,
    row checksums over the version-1 columns -- with this test's own implementation of that format."""
    import hashlib

    columns_v1 = ["id", "status", "kind", "refers_to", "requested_at", "finished_at", "method", "options_json",
                  "n_ids", "ids_sha256", "n_cumulative", "cumulative_sha256", "out_dir", "model_sha256",
                  "model_bytes", "stats_json", "bound_json", "note", "pid", "host", "ids_blob", "cumulative_blob"]
    db = sqlite3.connect(path, isolation_level=None)
    db.row_factory = sqlite3.Row
    for row in db.execute("SELECT * FROM requests").fetchall():
        values = dict(row)
        values["out_dir"] = str((run_dir / values["out_dir"]).resolve())
        digest = hashlib.sha256()
        for column in columns_v1:
            value = values[column]
            if isinstance(value, bytes):
                value = {"sha256": hashlib.sha256(value).hexdigest()}
            digest.update(json.dumps([column, value]).encode() + b"\n")
        db.execute("UPDATE requests SET out_dir=?, row_sha256=? WHERE id=?", (values["out_dir"], digest.hexdigest(),
                                                                             values["id"]))
    for column in ("keys_sha256", "keys_blob", "requested_by"):
        db.execute(f"ALTER TABLE requests DROP COLUMN {column}")
    db.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    db.execute("DELETE FROM meta WHERE key='keys_encoding'")
    db.execute("PRAGMA user_version = 1")
    db.close()


def test_a_version_1_ledger_is_read_as_it_is_and_migrated_by_the_next_request(run, tmp_path, capsys):
    forget(run, [3, 5], "retrain", out=tmp_path / "a")
    forget(run, [3, 5], "mini", out=tmp_path / "b")
    _as_version_1(run.path / LEDGER_FILE, run.path)
    before = (run.path / LEDGER_FILE).read_bytes()
    main(["ledger", str(run.path), "--verify", "--forgotten-keys", str(tmp_path / "keys.txt"), "--json"])
    listed = json.loads(capsys.readouterr().out)
    assert listed["verify"]["ok"] and [r["kind"] for r in listed["requests"]] == ["deletion", "alternative"]
    assert (tmp_path / "keys.txt").read_text() == "3\n5\n"  # version 1 has no keys: the run's keys of its rows
    assert (run.path / LEDGER_FILE).read_bytes() == before  # reading changed nothing
    forget(run, [8], "retrain", out=tmp_path / "c")  # a new request migrates, in one transaction
    with sqlite3.connect(run.path / LEDGER_FILE) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    first, second, third = requests(run)
    assert first.keys() == ["3", "5"] and first.out_dir == "../a" and third.ids().tolist() == [8]
    assert first.model_problem() is None and third.n_cumulative == 3


def test_a_run_moved_with_its_outputs_keeps_its_ledger_valid(trained, tmp_path, calls):
    home = tmp_path / "home"
    shutil.copytree(trained, home / "run", ignore=shutil.ignore_patterns(LEDGER_FILE, "ledger.*"))
    forget(open_run(home / "run"), [4, 6], "retrain", out=home / "out")
    (home / "run" / "ledger.lock").unlink()
    moved = tmp_path / "elsewhere" / "project"
    shutil.move(str(home), str(moved))
    run = open_run(moved / "run")
    with Ledger.open(run) as book:
        assert book.verify() == [] and book.requests()[0].out_path == (moved / "out").resolve()
    again = forget(run, [4, 6], "retrain", out=moved / "out")
    assert again.stats["ledger"]["kind"] == "repeat" and calls["n"] == 1


def test_a_lost_ledger_is_refused_not_restarted(run, tmp_path, capsys):
    forget(run, [1], "retrain", out=tmp_path / "a")
    assert json.loads((run.path / "run.json").read_text())["ledger"]["file"] == LEDGER_FILE
    (run.path / LEDGER_FILE).unlink()
    with pytest.raises(RunError, match="had a deletion ledger .* is missing"):
        forget(run, [2], "retrain", out=tmp_path / "b")
    assert not (run.path / LEDGER_FILE).exists()
    with pytest.raises(SystemExit) as stop:
        main(["ledger", str(run.path)])
    assert stop.value.code == 2 and "is missing" in capsys.readouterr().err


def test_verify_works_on_a_run_this_process_cannot_write(run, tmp_path):
    import os
    import subprocess
    import sys
    import tempfile

    forget(run, [2, 9], "retrain", out=run.path.parent / "a")
    # a world-readable copy (pytest's own temporary folders are private to their owner)
    base = Path(tempfile.mkdtemp(prefix="miniunlearn-read-only-"))
    try:
        shutil.copytree(run.path, base / "run", ignore=shutil.ignore_patterns("ledger.lock"))
        shutil.copytree(run.path.parent / "a", base / "a")
        before = sorted(p.name for p in (base / "run").iterdir())
        folders = (base, base / "run", base / "a")
        for folder in folders:
            folder.chmod(0o555)
        command = [sys.executable, "-m", "miniunlearn", "ledger", str(base / "run"), "--verify", "--json"]
        if os.geteuid() == 0:  # root writes anywhere: read as an unprivileged user instead
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv: a read-only directory cannot be simulated")
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        env = {**os.environ, "PYTHONPATH": str(Path(__import__("miniunlearn").__file__).parents[1])}
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["verify"]["ok"]
        assert sorted(p.name for p in (base / "run").iterdir()) == before  # no lock, no log files
    finally:
        for folder in (base, base / "run", base / "a"):
            if folder.exists():
                folder.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)
