"""Tokens, receipts and the durable queue on their own (in-process, no server)."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from miniunlearn.core.errors import InputError
from miniunlearn.server.auth import TokenStore, bearer_token, parse_scopes
from miniunlearn.server.queue import DeletionQueue, IdempotencyConflict
from miniunlearn.server.receipts import run_public_key, sign, signing_key, verify


def test_tokens_are_stored_as_hashes_and_identify_their_holder(tmp_path):
    path = tmp_path / "tokens.json"
    store = TokenStore.load(path, missing_ok=True)
    alice = store.add("alice", parse_scopes("delete,read"))
    bob = store.add("bob", parse_scopes("predict"))
    store.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert alice not in text and bob not in text
    assert hashlib.sha256(alice.encode()).hexdigest() in text  # only the hash is kept
    loaded = TokenStore.load(path)
    who = loaded.identify(alice)
    assert who.name == "alice" and who.allows("delete") and who.allows("read") and not who.allows("predict")
    assert loaded.identify(bob).scopes == ("predict",)
    assert loaded.identify(alice[:-1]) is None and loaded.identify("") is None
    with pytest.raises(InputError, match="exists already"):
        loaded.add("alice", ("read",))
    with pytest.raises(InputError, match="subset of delete, predict, read, admin"):
        parse_scopes("delete,write")
    admin = loaded.add("root", ("admin",))
    assert loaded.identify(admin).allows("predict")  # admin holds every scope
    loaded.remove("bob")
    assert loaded.identify(bob) is None


def test_bearer_header_parsing():
    assert bearer_token("Bearer abc") == "abc" and bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token("Bearer ") is None and bearer_token(None) is None


def test_receipts_verify_and_any_change_breaks_them(tmp_path):
    key = signing_key(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / "serve" / "receipt-key.pem").st_mode) == 0o600
    assert signing_key(tmp_path).public_key().public_bytes_raw() == key.public_key().public_bytes_raw()  # reused
    receipt = sign({"request_id": "r1", "certificate": 1e-5, "key_sha256": ["ab"], "release": None}, key)
    public = run_public_key(tmp_path)
    assert verify(receipt, public) is None
    assert verify(json.loads(json.dumps(receipt)), public) is None  # survives a JSON round trip
    for changed in ({"certificate": 2e-5}, {"key_sha256": ["ac"]}, {"extra": 1}):
        assert "does not match" in verify({**receipt, **changed}, public)
    missing = {k: v for k, v in receipt.items() if k != "release"}
    assert "does not match" in verify(missing, public)
    other = signing_key(tmp_path / "other").public_key()
    assert "another key" in verify(receipt, other)


def test_queue_is_durable_idempotent_and_moves_each_request_once(tmp_path):
    queue = DeletionQueue.open(tmp_path)
    first, created = queue.add(idempotency_key="k1", body_sha256="a", token_name="t", requested_by="keys",
                               names=["u1"], generation=0, options={"tol": None})
    assert created and first.status == "queued"
    again, created = queue.add(idempotency_key="k1", body_sha256="a", token_name="t", requested_by="keys",
                               names=["u1"], generation=0, options={"tol": None})
    assert not created and again.id == first.id
    with pytest.raises(IdempotencyConflict):
        queue.add(idempotency_key="k1", body_sha256="b", token_name="t", requested_by="keys", names=["u2"],
                  generation=0, options={"tol": None})
    second, _ = queue.add(idempotency_key=None, body_sha256="c", token_name="t", requested_by="rows", names=[4, 5],
                          generation=0, options={"tol": None})
    other, _ = queue.add(idempotency_key=None, body_sha256="d", token_name="t", requested_by="rows", names=[6],
                         generation=0, options={"tol": 1e-6})
    assert [d.id for d in queue.next_batch(10)] == [first.id, second.id]  # same options only
    solve = queue.begin_solve([first.id, second.id], "serve/solves/x", 3, "sha-before")
    queue.close()
    queue = DeletionQueue.open(tmp_path)  # as after a restart
    assert queue.running_solves() == [(solve, "serve/solves/x")] and queue.solve_before(solve) == "sha-before"
    assert queue.requeue(solve, solo=True) == [first.id, second.id]
    assert [d.id for d in queue.next_batch(10)] == [first.id]  # served alone now
    solve = queue.begin_solve([first.id], "serve/solves/y", 1, "sha")
    queue.finish([first.id], {first.id: {"n_keys": 1}}, solve, 7)
    done = queue.get(first.id)
    assert done.status == "done" and done.names == [] and done.result == {"n_keys": 1}  # raw keys dropped
    with pytest.raises(Exception, match="not marked done twice"):
        queue.finish([first.id], {first.id: {}}, solve, 7)
    assert queue.counts() == {"queued": 2, "running": 0, "done": 1, "failed": 0}
    assert other.id in {d.id for d in queue.all()}


def test_receipt_verify_tells_an_invalid_receipt_from_a_file_that_is_no_receipt(tmp_path, capsys):
    from tests.helpers import run_cli

    receipt = sign({"request_id": "r1", "certificate": 1e-5}, signing_key(tmp_path))
    files = {"good": receipt, "altered": {**receipt, "certificate": 0.0},
             "unsigned": {k: v for k, v in receipt.items() if k != "signature"},
             "other-json": {"rows": [1, 2]}, "a-list": [receipt]}
    for name, document in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(document))
    outcomes = {name: run_cli(capsys, "receipt", "verify", tmp_path / f"{name}.json", "--run", tmp_path)
                for name in files}
    assert outcomes["good"][0] == 0 and "valid: receipt of request r1" in outcomes["good"][1]
    assert outcomes["altered"][0] == 1 and "does not match" in outcomes["altered"][1]
    assert outcomes["unsigned"][0] == 1 and "no signature object" in outcomes["unsigned"][1]
    assert outcomes["other-json"][0] == 2 and "is not a deletion receipt (format None" in outcomes["other-json"][2]
    assert outcomes["a-list"][0] == 2 and "format 'list'" in outcomes["a-list"][2]
