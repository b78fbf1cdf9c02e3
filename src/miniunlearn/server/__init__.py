"""The deletion service: ``miniunlearn serve RUN`` keeps one run open and warm behind an HTTP API.

``auth`` (bearer tokens: hashed storage, scopes, constant-time comparison), ``schemas`` (the
request and answer shapes, pydantic), ``queue`` (durable queue of deletion requests, SQLite),
``receipts`` (Ed25519-signed receipts), ``state`` (the run kept warm and the served model,
swapped atomically), ``worker`` (one thread solving queued requests in coalesced batches through
:func:`miniunlearn.service.forget`), ``metrics`` (Prometheus), ``app`` (FastAPI routes) and
``runner`` (uvicorn, start-up checks, signals). docs/service.md describes the contract.
"""

from miniunlearn.server.app import create_app
from miniunlearn.server.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]
