"""Faults: SIGKILL of the server under a stream of concurrent requests, then SIGTERM; after the
restarts every acknowledged request is done exactly once and the served model is the ledger's latest.

Only deterministic facts are asserted (never how many requests a kill caught in which state)."""

from __future__ import annotations

import sqlite3
import threading
import time

import httpx
import numpy as np
import pytest

from miniunlearn.runs import open_run
from miniunlearn.service.ledger import FORGETTING_KINDS, Ledger
from tests.helpers import reference_optimum
from tests.server.conftest import L2, auth, copy_run, make_tokens, wait_done

N_REQUESTS, N_CLIENTS, KILL_AFTER = 36, 4, 12


def send(url: str, token: str, body: dict, key: str):
    """POST one deletion; the answer's JSON, or None when the server did not acknowledge it."""
    try:
        answer = httpx.post(url + "/v1/deletions", json=body, headers={**auth(token), "Idempotency-Key": key},
                            timeout=30)
    except httpx.HTTPError:
        return None
    return answer.json() if answer.status_code == 202 else None


def queue_counts(run_dir) -> dict:
    with sqlite3.connect(run_dir / "serve" / "queue.sqlite") as db:
        return dict(db.execute("SELECT status, COUNT(*) FROM deletions GROUP BY status").fetchall())


def queue_ids(run_dir) -> set[str]:
    with sqlite3.connect(run_dir / "serve" / "queue.sqlite") as db:
        return {row[0] for row in db.execute("SELECT id FROM deletions").fetchall()}


@pytest.mark.slow
def test_sigkill_then_sigterm_lose_nothing_and_apply_nothing_twice(keyed_run, tmp_path, server_factory):
    run_dir = copy_run(keyed_run, tmp_path)
    tokens = make_tokens(tmp_path / "tokens.json")
    users = list(dict.fromkeys(open_run(run_dir).keys_of(np.arange(open_run(run_dir).n_train))))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(users))
    requests, start = [], 0
    for i in range(N_REQUESTS):  # disjoint sets of 1-3 users
        size = int(rng.integers(1, 4))
        requests.append({"keys": [users[j] for j in order[start:start + size]]})
        start += size
    server = server_factory(run_dir, tmp_path / "tokens.json")
    acknowledged: dict[int, str] = {}
    lock = threading.Lock()

    def client(share):
        for i in share:
            answer = send(server.url, tokens["deleter"], requests[i], f"subject-{i}")
            if answer is not None:
                with lock:
                    acknowledged[i] = answer["id"]

    threads = [threading.Thread(target=client, args=(range(c, N_REQUESTS, N_CLIENTS),)) for c in range(N_CLIENTS)]
    for t in threads:
        t.start()
    while len(acknowledged) < KILL_AFTER and any(t.is_alive() for t in threads):
        time.sleep(0.002)
    server.kill()  # SIGKILL while the clients keep sending
    with lock:
        acked_at_kill = dict(acknowledged)
    for t in threads:
        t.join()
    at_kill = queue_counts(run_dir)
    assert set(acknowledged.values()) <= queue_ids(run_dir)  # every acknowledged request was durable

    # restart; every client retries everything with its Idempotency-Key (acknowledged or not)
    server = server_factory(run_dir, tmp_path / "tokens.json")
    ids = {}
    for i, body in enumerate(requests):
        answer = send(server.url, tokens["deleter"], body, f"subject-{i}")
        assert answer is not None
        ids[i] = answer["id"]
        if i in acknowledged:
            assert answer["id"] == acknowledged[i] and answer["replayed"]
    # SIGTERM with requests queued: the running solve finishes, the rest wait in the queue
    server.stop()
    server = server_factory(run_dir, tmp_path / "tokens.json")
    with httpx.Client(base_url=server.url, timeout=60) as http:
        final = wait_done(http, ids.values(), tokens["reader"])
        served = http.get("/v1/model", headers=auth(tokens["reader"])).json()
    assert all(s["status"] == "done" for s in final.values())
    assert queue_counts(run_dir) == {"done": N_REQUESTS}  # one entry per request: no duplicate

    run = open_run(run_dir)
    with Ledger.open(run) as book:
        done = [r for r in book.requests("done") if r.kind in FORGETTING_KINDS]
        seen = np.zeros(0, dtype=np.int64)
        for record in done:  # no row forgotten twice
            assert np.intersect1d(seen, record.ids()).size == 0
            seen = np.union1d(seen, record.ids())
        wanted = run.rows_for_keys([k for body in requests for k in body["keys"]])
        np.testing.assert_array_equal(seen, np.sort(wanted))
        by_id = {r.id: r for r in done}
        for i, body in enumerate(requests):  # each request's rows are in the one ledger request it names
            record = by_id[final[ids[i]]["ledger_request"]]
            assert set(run.rows_for_keys(body["keys"])) <= set(record.ids())
        latest = done[-1]
    assert served["model_sha256"] == latest.model_sha256 and served["ledger_request"] == latest.id
    ds = keyed_run["dataset"]
    keep = np.setdiff1d(np.arange(ds.n_train), seen)
    w_R, error = reference_optimum(np.asarray(ds.X_train)[keep], np.asarray(ds.y_train)[keep], ds.n_classes, L2)
    from tests.server.conftest import model_arrays

    arrays = model_arrays(latest.model_path)
    theta = np.hstack([arrays["weight"], arrays["bias"][:, None]]).ravel()
    assert np.linalg.norm(theta - w_R) <= latest.stats["certificate"] + error
    print(f"\nSIGKILL figures: {len(acked_at_kill)} acknowledged when killed, queue at kill {at_kill}, "
          f"{len(acknowledged)} acknowledged in all before the restart, {N_REQUESTS} completed after restarts, "
          f"{len(done)} ledger deletions, duplicates 0")
