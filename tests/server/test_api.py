"""The service over real HTTP: one server subprocess on a copy of the keyed run, driven with httpx."""

from __future__ import annotations

import collections
import fcntl
import json
import os
import time

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, \
    status_code_conformance

from miniunlearn.runs import open_run
from miniunlearn.service.ledger import Ledger
from tests.helpers import reference_optimum, run_cli
from tests.server.conftest import L2, ServerProcess, auth, copy_run, make_tokens, model_arrays, wait_done


@pytest.fixture(scope="module")
def served(keyed_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    run_dir = copy_run(keyed_run, root)
    tokens = make_tokens(root / "tokens.json")
    server = ServerProcess(run_dir, root / "tokens.json", "--max-names", "500", "--max-body-bytes", "65536",
                           log=root / "server.log").start()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield {**keyed_run, "server": server, "client": client, "tokens": tokens, "run": run_dir}
    assert server.stop() in (0, -15)  # SIGTERM: a graceful stop (uvicorn re-raises the signal after it)
    assert "Traceback" not in (root / "server.log").read_text()
    assert not any(t in (root / "server.log").read_text() for t in tokens.values())  # tokens are never logged


def delete(served, body, token="deleter", key=None):
    headers = {**auth(served["tokens"][token]), **({"Idempotency-Key": key} if key else {})}
    return served["client"].post("/v1/deletions", json=body, headers=headers)


def kept_optimum(served, forgotten_rows):
    ds = served["dataset"]
    keep = np.setdiff1d(np.arange(ds.n_train), forgotten_rows)
    return reference_optimum(np.asarray(ds.X_train)[keep], np.asarray(ds.y_train)[keep], ds.n_classes, L2)


def forgotten_rows(served):
    run = open_run(served["run"])
    with Ledger.open(run) as book:
        return book.forgotten_ids()


def served_theta(served, status):
    """The parameters of the model a deletion produced, read from its file (weight | bias rows)."""
    run = open_run(served["run"])
    with Ledger.open(run) as book:
        path = book.request(status["ledger_request"]).model_path
    arrays = model_arrays(path)
    return np.hstack([arrays["weight"], arrays["bias"][:, None]]).ravel()


# ---------------------------------------------------------------------------------------------- auth
ENDPOINTS = [("POST", "/v1/deletions", "delete", {"keys": ["u1"]}), ("GET", "/v1/deletions/x", "read", None),
             ("POST", "/v1/predict", "predict", {"rows": [{"x": 1.0}]}), ("GET", "/v1/model", "read", None),
             ("GET", "/metrics", "read", None), ("POST", "/v1/compact", "admin", None)]


@pytest.mark.parametrize("method,path,scope,body", ENDPOINTS)
def test_auth_matrix(served, method, path, scope, body):
    client, tokens = served["client"], served["tokens"]
    for headers in ({}, {"Authorization": "Bearer mu_wrong"}, {"Authorization": "Basic abc"},
                    {"Authorization": "Bearer " + tokens["admin"] + "x"}):
        answer = client.request(method, path, json=body, headers=headers)
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
        assert "token" in answer.json()["error"]
    for name, token in tokens.items():
        if name == "admin" or name == "deleter" and scope == "delete" or name == "reader" and scope == "read" \
                or name == "predictor" and scope == "predict":
            continue
        answer = client.request(method, path, json=body, headers=auth(token))
        assert answer.status_code == 403 and f"lacks the scope '{scope}'" in answer.json()["error"]
    assert client.get("/healthz").status_code == 200  # the only open endpoint


# ---------------------------------------------------------------------------------------------- deletions
def test_deletion_status_receipt_and_verify(served, tmp_path, capsys):
    client, tokens = served["client"], served["tokens"]
    answer = delete(served, {"keys": ["u3", "u10"]})
    assert answer.status_code == 202 and answer.json()["status"] in ("queued", "running", "done")
    request_id = answer.json()["id"]
    status = wait_done(client, [request_id], tokens["reader"])[request_id]
    assert status["status"] == "done" and status["n_keys"] == 2 and status["method"] == "mini"
    run = open_run(served["run"])
    rows = run.rows_for_keys(["u3", "u10"])
    assert status["n_rows"] == len(rows) and set(rows) <= set(forgotten_rows(served))
    # within its certificate of the independent optimum on the kept rows, at the requested tolerance
    w_R, error = kept_optimum(served, forgotten_rows(served))
    theta = served_theta(served, status)
    assert np.linalg.norm(theta - w_R) <= status["certificate"] + error
    assert status["certified_relative"] <= 1e-3
    # once done, predictions use that model
    row = {k: float(v) for k, v in served["frame"].drop(columns=["user", "label"]).iloc[0].items()}
    predicted = client.post("/v1/predict", json={"rows": [row]}, headers=auth(tokens["predictor"])).json()
    assert predicted["model_sha256"] == status["model_sha256"]
    # the receipt: signed, no raw key, verified offline by the CLI; any change breaks it
    receipt = client.get(f"/v1/deletions/{request_id}/receipt", headers=auth(tokens["reader"])).json()
    text = json.dumps(receipt)  # (as JSON strings: the base64 signature may hold the letters u3 by chance)
    assert '"u3"' not in text and '"u10"' not in text and receipt["model_sha256_after"] == status["model_sha256"]
    import hashlib

    assert receipt["key_sha256"] == sorted(hashlib.sha256(k.encode()).hexdigest() for k in ("u3", "u10"))
    with Ledger.open(run) as book:
        assert receipt["ledger_row_sha256"] == book.request(status["ledger_request"]).row_sha256
    good, bad = tmp_path / "receipt.json", tmp_path / "tampered.json"
    good.write_text(json.dumps(receipt))
    assert run_cli(capsys, "receipt", "verify", good, "--run", served["run"])[0] == 0
    pub = served["run"] / "serve" / "receipt-key.pub.pem"
    assert run_cli(capsys, "receipt", "verify", good, "--public-key", pub)[0] == 0
    assert oct(os.stat(served["run"] / "serve" / "receipt-key.pem").st_mode & 0o777) == "0o600"
    for change in ({"certificate": 0.0}, {"n_keys": 1}, {"done_at": "2000-01-01T00:00:00.000+00:00"}):
        bad.write_text(json.dumps({**receipt, **change}))
        code, out, _ = run_cli(capsys, "receipt", "verify", bad, "--run", served["run"])
        assert code == 1 and "INVALID" in out
    # a receipt before the request is done does not exist; unknown ids are 404
    assert client.get("/v1/deletions/nope/receipt", headers=auth(tokens["reader"])).status_code == 404


def test_idempotency_key_returns_the_same_request(served):
    first = delete(served, {"keys": ["u20"]}, key="subject-request-0001")
    again = delete(served, {"keys": ["u20"]}, key="subject-request-0001")
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.json()["replayed"] is True
    other = delete(served, {"keys": ["u21"]}, key="subject-request-0001")
    assert other.status_code == 409 and "different body" in other.json()["error"]
    wait_done(served["client"], [first.json()["id"]], served["tokens"]["reader"])


def test_requests_queued_during_a_solve_are_coalesced(served):
    """Hold the run's ledger lock (as a CLI forget would): the first solve waits, the next requests
    queue, and one solve then serves them all, each with its own id, status and receipt."""
    client, tokens = served["client"], served["tokens"]
    lock = os.open(served["run"] / "ledger.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        first = delete(served, {"keys": ["u30"]}).json()["id"]
        deadline = time.monotonic() + 120
        while client.get(f"/v1/deletions/{first}", headers=auth(tokens["reader"])).json()["status"] != "running":
            assert time.monotonic() < deadline, "the solver never took the first request"
            time.sleep(0.05)  # until the solver has taken it (and waits for the lock)
        later = [delete(served, {"keys": [f"u{40 + i}", f"u{60 + i}"]}).json()["id"] for i in range(5)]
        later.append(delete(served, {"rows": [int(r) for r in open_run(served["run"]).rows_for_keys(["u80"])]}).json()["id"])
    finally:
        os.close(lock)
    final = wait_done(client, [first, *later], tokens["reader"])
    assert final[first]["coalesced_requests"] == 1
    solved = {final[i]["ledger_request"] for i in later}
    assert len(solved) == 1 and all(final[i]["coalesced_requests"] == len(later) for i in later)
    assert len({final[i]["id"] for i in later}) == len(later)
    receipts = [client.get(f"/v1/deletions/{i}/receipt", headers=auth(tokens["reader"])).json() for i in later]
    assert len({r["signature"]["value"] for r in receipts}) == len(later)
    # the coalesced result is within its certificate of the optimum without every forgotten row
    w_R, error = kept_optimum(served, forgotten_rows(served))
    status = final[later[0]]
    assert np.linalg.norm(served_theta(served, status) - w_R) <= status["certificate"] + error
    model = client.get("/v1/model", headers=auth(tokens["reader"])).json()
    assert model["model_sha256"] == status["model_sha256"]


def test_predictions_match_an_independent_computation(served):
    client, tokens = served["client"], served["tokens"]
    frame = served["frame"]
    X = frame.drop(columns=["user", "label"])
    rows = [{k: float(v) for k, v in X.iloc[i].items()} for i in range(0, 40, 3)]
    answer = client.post("/v1/predict", json={"rows": rows, "proba": True}, headers=auth(tokens["predictor"])).json()
    info = client.get("/v1/model", headers=auth(tokens["reader"])).json()
    download = client.get("/v1/model/download", headers=auth(tokens["reader"]))
    import hashlib

    assert hashlib.sha256(download.content).hexdigest() == answer["model_sha256"] == info["model_sha256"]
    from safetensors.numpy import load as load_bytes

    arrays = load_bytes(download.content)
    Z = (X.iloc[list(range(0, 40, 3))].to_numpy() - arrays["feature_mean"]) / arrays["feature_scale"]
    logits = Z @ arrays["weight"].T + arrays["bias"]
    P = np.exp(logits - logits.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    assert answer["labels"] == [int(c) for c in np.asarray(info["classes"])[P.argmax(axis=1)]]
    got = np.array([[p[str(c)] for c in info["classes"]] for p in answer["probabilities"]])
    np.testing.assert_allclose(got, P, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------------------------- bad input
BAD = [
    ('{"keys": ["u1"]', "not valid JSON"), ('{"keys": []}', "keys"), ('{"keys": ["u1"], "rows": [1]}', "exactly one"),
    ('{"rows": [-1]}', "rows"), ('{"rows": ["1"]}', "rows"), ('{"rows": [1.5]}', "rows"), ('{"rows": [true]}', "rows"),
    ('{"keys": ["u1"], "tol": NaN}', "tol"), ('{"keys": ["u1"], "tol": 0}', "tol"), ('{"keys": ["u1"], "tol": 2}', "tol"),
    ('{"keys": ["u1"], "epsilon": 1}', "together"), ('{"keys": ["u1"], "who": 1}', "who"), ('[1, 2]', "body"),
    ('{"keys": ["nobody"]}', "nobody"), ('{"rows": [100000]}', "out of range"), ('{"rows": [5, 5]}', "more than once"),
    ('{"keys": ["a\\nb"]}', "keys"), ('"x"', "body"), ('{"keys": [{"a": 1}]}', "keys"),
]


@pytest.mark.parametrize("body,named", BAD)
def test_bad_deletions_get_a_4xx_naming_the_problem(served, body, named):
    answer = served["client"].post("/v1/deletions", content=body, headers={
        **auth(served["tokens"]["deleter"]), "content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert named in answer.json()["error"]


def test_a_body_is_read_as_json_whatever_its_content_type(served):
    # `curl -d` sends application/x-www-form-urlencoded: the body must still be decoded, so the answer names
    # the real problem (here an unknown key) instead of refusing a well-formed request
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
        headers = {**auth(served["tokens"]["deleter"]), **({"content-type": content_type} if content_type else {})}
        answer = served["client"].post("/v1/deletions", content='{"keys": ["nobody-by-form"]}', headers=headers)
        assert answer.status_code == 422 and "'nobody-by-form'" in answer.json()["error"], answer.text


def test_keys_whose_rows_were_all_held_out_are_accepted_and_change_nothing(served):
    # like `miniunlearn forget --keys`: a person need not know which side of the split their rows fell on
    from miniunlearn.data.keys import canonical

    held = canonical(served["dataset"].test_keys[:1])[0]
    assert held not in set(canonical(open_run(served["run"]).keys()))
    client, reader = served["client"], served["tokens"]["reader"]
    before = client.get("/v1/model", headers=auth(reader)).json()["model_sha256"]
    answer = delete(served, {"keys": [held]})
    assert answer.status_code == 202, answer.text
    status = wait_done(client, [answer.json()["id"]], reader)[answer.json()["id"]]
    assert status["status"] == "done" and status["n_rows"] == 0, status
    assert status["model_sha256"] == before


def test_limits_and_huge_bodies(served):
    client, token = served["client"], served["tokens"]["deleter"]
    many = client.post("/v1/deletions", json={"keys": [f"u{i}" for i in range(501)]}, headers=auth(token))
    assert many.status_code == 422 and "at most 500" in many.json()["error"]
    huge = client.post("/v1/deletions", json={"keys": [f"u{i}" for i in range(10**6)]}, headers=auth(token))
    assert huge.status_code == 413 and "65536" in huge.json()["error"]

    def chunks():  # no Content-Length: the limit applies while reading
        yield b'{"keys": ['
        for _ in range(2000):
            yield b'"u1", ' * 10
        yield b'"u1"]}'

    streamed = client.post("/v1/deletions", content=chunks(), headers={**auth(token), "content-type": "application/json"})
    assert streamed.status_code == 413
    predictor = served["tokens"]["predictor"]
    nan = client.post("/v1/predict", content='{"rows": [{"mean radius": NaN}]}',
                      headers={**auth(predictor), "content-type": "application/json"})
    assert nan.status_code == 422 and "finite" in nan.json()["error"]
    names = client.get("/v1/model", headers=auth(served["tokens"]["reader"])).json()["feature_names"]
    overflow = client.post("/v1/predict", json={"rows": [{n: 1e308 for n in names}]}, headers=auth(predictor))
    assert overflow.status_code == 422 and "overflow" in overflow.json()["error"]
    unknown = client.post("/v1/predict", json={"rows": [{"height": 1.0}]}, headers=auth(predictor))
    assert unknown.status_code == 422 and "'height'" in unknown.json()["error"]
    assert client.get("/v1/nothing").status_code == 404
    reader = served["tokens"]["reader"]
    for stray in ("/v1/deletions/", "/v1/model/", "/healthz/"):  # no redirect: a stray slash is a 404 naming it
        answer = client.get(stray, headers=auth(reader))
        assert answer.status_code == 404 and "error" in answer.json(), (stray, answer.status_code)
    listing = client.get("/v1/deletions", headers=auth(reader))  # the collection takes POST only
    assert listing.status_code == 405 and "error" in listing.json()


def test_metrics_count_requests_and_report_the_served_certificate(served):
    text = served["client"].get("/metrics", headers=auth(served["tokens"]["reader"])).text
    assert 'miniunlearn_http_requests_total{method="POST",route="/v1/deletions",status="202"}' in text
    assert "miniunlearn_queue_depth" in text and "miniunlearn_deletion_seconds_bucket" in text
    certificate = [line for line in text.splitlines() if line.startswith("miniunlearn_served_certificate ")]
    assert certificate and float(certificate[0].split()[1]) > 0


def test_refuses_to_serve_without_tokens_off_loopback(keyed_run, capsys):
    code, _, err = run_cli(capsys, "serve", keyed_run["run"], "--host", "0.0.0.0", "--port", "1")
    assert code == 2 and "without --tokens" in err
    code, _, err = run_cli(capsys, "serve", keyed_run["run"], "--max-batch", "0")
    assert code == 2 and "max_batch" in err


# ---------------------------------------------------------------------------------------------- schema
MAX_EXAMPLES = 12
SEEN: collections.Counter = collections.Counter()


def test_every_answer_conforms_to_the_openapi_schema(served):
    """Schemathesis over the whole OpenAPI schema: for each operation MAX_EXAMPLES valid (positive) and
    invalid (negative) requests, each answered without a server error and conforming to the schema
    (documented status code, content type and body shape)."""
    from schemathesis import GenerationMode

    server, tokens = served["server"], served["tokens"]
    api = schemathesis.openapi.from_url(server.url + "/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/deletions", "/v1/deletions/{request_id}", "/v1/predict",
                                               "/v1/deletions/{request_id}/receipt", "/v1/model", "/v1/compact",
                                               "/healthz", "/metrics"}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                      derandomize=True, database=None)
            def call(case):
                response = case.call_and_validate(headers=auth(tokens["admin"]), checks=checks)
                SEEN["requests"] += 1
                SEEN[f"{case.method} {case.path} -> {response.status_code}"] += 1

            try:
                call()
            except Unsatisfiable:  # an operation without parameters or body has no invalid request
                assert mode == GenerationMode.NEGATIVE
    print(f"\nSchemathesis: {SEEN['requests']} generated requests, 0 server errors, 0 off-schema answers")
    for name, count in sorted(SEEN.items()):
        if name != "requests":
            print(f"  {name}: {count}")
    assert SEEN["requests"] >= len(operations) * 2
