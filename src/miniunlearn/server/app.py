"""The HTTP API (FastAPI): routes, authentication, limits and error shapes. docs/service.md describes it.

Every error answer is ``{"error": "<one line naming the problem>"}`` (plus ``detail`` for invalid
fields) with a 4xx status: 401 without a valid token, 403 without the scope, 404 unknown id,
409 state conflicts, 413 a body over ``--max-body-bytes``, 422 anything malformed or out of range.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass

import numpy as np
from fastapi import Depends, FastAPI, Header, Path as PathParam, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from miniunlearn.core.errors import DataError, InputError, MiniUnlearnError
from miniunlearn.core.storage import canonical_json, plain
from miniunlearn.runs import MODEL_FILE
from miniunlearn.server import receipts, schemas
from miniunlearn.server.auth import OPEN_ACCESS, Identity, load_store
from miniunlearn.server.config import ServeConfig
from miniunlearn.server.metrics import Metrics
from miniunlearn.server.queue import DeletionQueue, IdempotencyConflict
from miniunlearn.server.state import ServerState, WarmRun
from miniunlearn.server.worker import Worker
from miniunlearn.service.requests import request_rows

log = logging.getLogger("miniunlearn.server")
API_VERSION = "1"


class ApiError(Exception):
    """An answer with a 4xx status and one line naming the problem."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


@dataclass
class Server:
    """Everything one app serves: built at start-up (lifespan), closed at shutdown."""

    config: ServeConfig
    run: WarmRun
    state: ServerState
    queue: DeletionQueue
    worker: Worker
    metrics: Metrics
    key: object
    tokens: object
    started: dict

    @classmethod
    def open(cls, config: ServeConfig) -> "Server":
        tokens = load_store(config.tokens)
        run = WarmRun(config.run)
        started = {"warm": run.warm()}
        state = ServerState(run)
        queue = DeletionQueue.open(run.path)
        metrics = Metrics()
        worker = Worker(state, queue, config, metrics)
        server = cls(config, run, state, queue, worker, metrics, receipts.signing_key(run.path), tokens, started)
        started["recovered"] = worker.recover()
        metrics.observe_model(state.model)
        worker.start()
        return server

    def close(self) -> None:
        self.worker.stop()
        self.queue.close()

    def run_id(self) -> dict:
        return {"fingerprint": self.run.fingerprint, "path": str(self.run.path.resolve())}


ERRORS = {status: {"model": schemas.Error} for status in (401, 403, 404, 409, 413, 422)}
_bearer = HTTPBearer(auto_error=False, description="a token from `miniunlearn tokens add` (scopes gate endpoints)")


def require(scope: str):
    """A dependency admitting only tokens with ``scope`` (``admin`` holds every scope)."""

    def check(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Identity:
        server: Server = request.app.state.server
        if server.tokens is None:
            return OPEN_ACCESS
        identity = None if credentials is None else server.tokens.identify(credentials.credentials)
        if identity is None:
            raise ApiError(401, "missing or invalid bearer token (header 'Authorization: Bearer <token>')",
                           {"WWW-Authenticate": "Bearer"})
        if not identity.allows(scope):
            raise ApiError(403, f"token {identity.name!r} lacks the scope {scope!r} (it has: "
                                f"{', '.join(identity.scopes)})")
        return identity

    return check


def create_app(config: ServeConfig) -> FastAPI:
    """The FastAPI application serving ``config.run`` (the run is opened when the app starts)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.server = Server.open(config)
        log.info("serving run %s: model %s, recovered %s", config.run, app.state.server.state.model.sha256[:16],
                 app.state.server.started["recovered"])
        try:
            yield
        finally:
            app.state.server.close()

    # redirect_slashes off: a path with a stray slash is a 404 naming it, not a 307 a client may not follow
    app = FastAPI(title="miniunlearn deletion service", version=API_VERSION, lifespan=lifespan, redirect_slashes=False,
                  description="Certified deletion of people's training data from a served model, with signed "
                              "receipts. See docs/service.md.")
    _errors(app)
    _middleware(app, config)
    _deletion_routes(app)
    _model_routes(app)
    return app


# ---------------------------------------------------------------------------------------------- errors
def _error(status: int, message: str, detail=None, headers=None) -> JSONResponse:
    body = {"error": message} if detail is None else {"error": message, "detail": detail}
    return JSONResponse(body, status_code=status, headers=headers)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_, exc: ApiError):
        return _error(exc.status, exc.message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_, exc: RequestValidationError):
        detail = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type"))}
                  for e in exc.errors()]
        first = detail[0] if detail else {"loc": [], "msg": "invalid request", "type": ""}
        if first["type"] == "json_invalid":
            at = first["loc"][-1] if len(first["loc"]) > 1 else "?"
            return _error(422, f"the request body is not valid JSON (error at character {at})", detail[:1])
        where = ".".join(first["loc"]) or "request"
        return _error(422, f"{where}: {first['msg']}"[:500], detail[:20])

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_, exc: StarletteHTTPException):
        if exc.status_code == 400:  # FastAPI's answer to a body it cannot decode (e.g. not UTF-8)
            return _error(422, "the request body is not valid JSON text (UTF-8)")
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(MiniUnlearnError)
    async def refused(_, exc: MiniUnlearnError):
        return _error(422 if isinstance(exc, (InputError, DataError)) else 409, str(exc).splitlines()[0][:1000])


# ---------------------------------------------------------------------------------------------- middleware
class _BodyLimit:
    """Reads a request's body (streamed or not) up to the limit before the app sees it: past the
    limit the answer is 413 at once; otherwise the buffered body is handed on unchanged."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:  # refused before reading it
            shown = length.decode("latin-1")[:20]
            response = _error(413, f"request body of {shown} bytes exceeds the limit of {self.limit} bytes "
                                   "(serve --max-body-bytes)")
            return await response(scope, receive, send)
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            more = message.get("more_body", False)
            if seen > self.limit:
                response = _error(413, f"request body exceeds the limit of {self.limit} bytes (serve --max-body-bytes)")
                return await response(scope, receive, send)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # (waits for a disconnect, as the server would)
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class _JsonBody:
    """Reads every request body as JSON, whatever its Content-Type says: the API takes nothing else, and
    ``curl -d`` sends ``application/x-www-form-urlencoded`` by default -- without this, FastAPI would not
    decode such a body and would answer a valid request with a 422 that names no real problem."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            # in place: the outer middleware reads the matched route from this same scope
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope["headers"] = headers + [(b"content-type", b"application/json")]
        await self.app(scope, receive, send)


def _middleware(app: FastAPI, config: ServeConfig) -> None:
    app.add_middleware(_JsonBody)
    app.add_middleware(_BodyLimit, limit=config.max_body_bytes)

    @app.middleware("http")  # (added last: the outermost, so it also counts the 413s of the body limit)
    async def measure(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        server = getattr(request.app.state, "server", None)
        if server is not None:
            server.metrics.http_requests.labels(request.method, name, str(response.status_code)).inc()
            server.metrics.http_seconds.labels(request.method, name).observe(time.perf_counter() - start)
        return response



# ---------------------------------------------------------------------------------------------- deletions
def _server(request: Request) -> Server:
    return request.app.state.server


IdParam = PathParam(min_length=1, max_length=64, description="the id POST /v1/deletions answered")


def _deletion_routes(app: FastAPI) -> None:
    @app.post("/v1/deletions", status_code=202, response_model=schemas.DeletionAccepted, responses=ERRORS,
              summary="Ask for people's (keys) or rows' deletion; 202 once the request is durable")
    def create_deletion(body: schemas.DeletionCreate, request: Request,
                        identity: Identity = Depends(require("delete")),
                        idempotency_key: str | None = Header(None, alias="Idempotency-Key", min_length=1,
                                                             max_length=255, pattern=r"^[\x21-\x7e]+$")):
        server = _server(request)
        names = body.canonical_names()
        if len(names) > server.config.max_names:
            raise ApiError(422, f"the request names {len(names)} {'keys' if body.keys else 'rows'}; at most "
                                f"{server.config.max_names} per request (serve --max-names)")
        _check_names(server, body, names)
        options = {"tol": body.tol, "epsilon": body.epsilon, "delta": body.delta}
        digest = hashlib.sha256(canonical_json({"names": names, "by": "keys" if body.keys else "rows",
                                                **options}).encode()).hexdigest()
        try:
            entry, created = server.queue.add(idempotency_key=idempotency_key, body_sha256=digest,
                                              token_name=identity.name, requested_by="keys" if body.keys else "rows",
                                              names=names, generation=server.run.generation, options=options)
        except IdempotencyConflict as exc:
            raise ApiError(409, str(exc)) from None
        if created:
            server.metrics.deletions.labels(status="accepted").inc()
            server.worker.notify()
        return schemas.DeletionAccepted(id=entry.id, status=entry.status, idempotency_key=entry.idempotency_key,
                                        received_at=entry.received_at, replayed=not created)

    @app.get("/v1/deletions/{request_id}", response_model=schemas.DeletionStatus, responses=ERRORS,
             summary="A deletion request's status, certificate and model hash")
    def get_deletion(request: Request, request_id: str = IdParam, _: Identity = Depends(require("read"))):
        return _status(_entry(_server(request), request_id))

    @app.get("/v1/deletions/{request_id}/receipt", response_model=schemas.Receipt, responses=ERRORS,
             summary="The Ed25519-signed receipt of a completed deletion")
    def get_receipt(request: Request, request_id: str = IdParam, _: Identity = Depends(require("read"))):
        server = _server(request)
        entry = _entry(server, request_id)
        if entry.status != "done":
            raise ApiError(409, f"request {entry.id} is {entry.status}; a receipt exists once it is done")
        return JSONResponse(receipts.sign(_receipt_fields(server, entry), server.key))


def _check_names(server: Server, body: schemas.DeletionCreate, names: list) -> None:
    """Refuse, before anything is stored, names the run does not know (422 naming one)."""
    run = server.run
    if body.keys is not None:
        request_rows(run, keys=names)  # InputError naming the unknown keys -> 422; held-out-only keys are accepted
        return
    rows = np.asarray(names, dtype=np.int64)
    bad = rows[rows >= run.n_train]
    if bad.size:
        raise ApiError(422, f"rows: {bad.size} row number(s) out of range 0..{run.n_train - 1}, e.g. {int(bad[0])}")
    unique, counts = np.unique(rows, return_counts=True)
    if (counts > 1).any():
        raise ApiError(422, f"rows: row {int(unique[counts > 1][0])} is named more than once")


def _entry(server: Server, request_id: str):
    entry = server.queue.get(request_id)
    if entry is None:
        raise ApiError(404, f"no deletion request {request_id!r} on this server")
    return entry


def _status(entry) -> dict:
    result = entry.result
    answer = {"id": entry.id, "status": entry.status, "idempotency_key": entry.idempotency_key,
              "received_at": entry.received_at, "started_at": entry.started_at, "done_at": entry.done_at,
              "requested_by": entry.requested_by, "error": entry.error}
    if entry.status in ("queued", "running"):
        answer["n_named"] = len(entry.names)
    for name in ("n_keys", "n_rows", "method", "tol", "certificate", "certified_relative", "release", "model_sha256",
                 "model_sha256_before", "ledger_request", "coalesced_requests", "timings", "note"):
        if name in result:
            answer[name] = result[name]
    return answer


def _receipt_fields(server: Server, entry) -> dict:
    """The signed fields of a done request (receipts module docstring); no raw key appears."""
    r = entry.result
    return {"run": server.run_id(), "request_id": entry.id, "idempotency_key": entry.idempotency_key,
            "requested_by": entry.requested_by, "token_name": entry.token_name, "key_sha256": r["key_sha256"],
            "n_keys": r["n_keys"], "n_rows": r["n_rows"], "received_at": entry.received_at, "done_at": entry.done_at,
            "method": r["method"], "tol": r["tol"], "certificate": r["certificate"],
            "certified_relative": r["certified_relative"], "release": r["release"],
            "model_sha256_before": r["model_sha256_before"], "model_sha256_after": r["model_sha256"],
            "ledger_request": r["ledger_request"], "ledger_row_sha256": r["ledger_row_sha256"],
            "coalesced_requests": r["coalesced_requests"], "note": r.get("note")}


# ---------------------------------------------------------------------------------------------- model
def _model_routes(app: FastAPI) -> None:
    @app.post("/v1/predict", response_model=schemas.PredictAnswer, responses=ERRORS,
              summary="Labels (and probabilities) of raw rows by feature name, with the model used")
    def predict(body: schemas.PredictRequest, request: Request, _: Identity = Depends(require("predict"))):
        server = _server(request)
        if len(body.rows) > server.config.max_predict_rows:
            raise ApiError(422, f"rows: {len(body.rows)} rows; at most {server.config.max_predict_rows} per request "
                                "(serve --max-predict-rows)")
        served = server.state.model  # one read: the whole answer comes from this model
        names = feature_names(served)
        X = _matrix(body.rows, names)
        logits = served.predictor.logits(X)
        bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
        if bad.size:
            raise ApiError(422, f"rows[{int(bad[0])}]: feature values so large that the model's scores overflow "
                                "(not finite)")
        classes = [_label(c) for c in served.predictor.preprocessing.classes]
        answer = {"labels": [_label(v) for v in served.predictor.labels(logits)], "classes": classes,
                  "model_sha256": served.sha256, "ledger_request": served.ledger_request}
        if body.proba:
            P = served.predictor.softmax(logits)
            answer["probabilities"] = [{str(c): float(p) for c, p in zip(classes, row)} for row in P]
        return answer

    @app.get("/v1/model", response_model=schemas.ModelInfo, responses=ERRORS, summary="The served model's metadata")
    def model_info(request: Request, _: Identity = Depends(require("read"))):
        served = _server(request).state.model
        return {**plain(served.metadata()), "feature_names": feature_names(served)}

    @app.get("/v1/model/download", responses={200: {"content": {"application/octet-stream": {}}}, **ERRORS},
             response_class=Response, summary="The served model's safetensors file")
    def model_download(request: Request, _: Identity = Depends(require("read"))):
        served = _server(request).state.model
        data = served.path.read_bytes()
        if hashlib.sha256(data).hexdigest() != served.sha256:
            raise ApiError(409, "the served model file changed on disk since it was loaded; ask again")
        return Response(data, media_type="application/octet-stream",
                        headers={"X-Model-SHA256": served.sha256,
                                 "Content-Disposition": f'attachment; filename="{MODEL_FILE}"'})

    @app.post("/v1/compact", responses=ERRORS, summary="Make the optimum on the kept rows the run's new base")
    def compact(request: Request, _: Identity = Depends(require("admin"))) -> dict:
        server = _server(request)
        try:
            return plain(server.worker.submit_compaction().result())
        except InputError as exc:  # e.g. nothing forgotten since the last compaction
            raise ApiError(409, str(exc).splitlines()[0]) from None

    @app.get("/healthz", response_model=schemas.Health, summary="200 when the run is loaded and requests are served")
    def healthz(request: Request):
        server = _server(request)
        return {"status": "ok", "model_sha256": server.state.model.sha256, "queue_depth": server.queue.depth(),
                "base_generation": server.run.generation}

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}, **ERRORS},
             summary="Prometheus metrics")
    def metrics(request: Request, _: Identity = Depends(require("read"))):
        server = _server(request)
        return Response(server.metrics.render(server.queue.depth()), media_type=server.metrics.content_type)


def feature_names(served) -> list[str]:
    """The names rows are given by: the data's feature names, else ``x0``, ``x1``, ..."""
    names = served.predictor.preprocessing.feature_names
    return [str(n) for n in names] if names is not None else [f"x{i}" for i in range(served.predictor.model.n_features)]


def _matrix(rows: list[dict], names: list[str]) -> np.ndarray:
    """Rows by feature name -> an (n, d) array; a missing or unknown name is a 422 naming it."""
    index = {name: i for i, name in enumerate(names)}
    X = np.empty((len(rows), len(names)), dtype=np.float64)
    for r, row in enumerate(rows):
        unknown = [k for k in row if k not in index]
        if unknown:
            raise ApiError(422, f"rows[{r}]: unknown feature {unknown[0][:80]!r} (GET /v1/model lists the "
                                f"{len(names)} feature names)")
        if len(row) != len(names):
            missing = next(n for n in names if n not in row)
            raise ApiError(422, f"rows[{r}]: feature {missing!r} is missing ({len(row)} of {len(names)} given)")
        X[r] = [row[n] for n in names]
    return X


def _label(value):
    value = value.item() if hasattr(value, "item") else value
    return value
