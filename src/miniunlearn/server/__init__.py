"""The deletion service: ``miniunlearn serve RUN`` keeps one run open and warm behind an HTTP API.

``auth`` (bearer tokens: hashed storage, scopes, constant-time comparison), ``schemas`` (the
request and answer shapes, pydantic), ``queue`` (durable queue of deletion requests, SQLite),
``receipts`` (Ed25519-signed receipts), ``state`` (the run kept warm and the served model,
swapped atomically), ``worker`` (one thread solving queued requests in coalesced batches through
:func:`miniunlearn.service.forget`), ``metrics`` (Prometheus), ``app`` (FastAPI routes) and
``runner`` (uvicorn, start-up checks, signals). docs/service.md describes the contract.
"""

from miniunlearn.server.config import ServeConfig

# The FastAPI app (create_app, in server.app) is not imported here: the CLI imports this package for its
# token and receipt commands, and FastAPI would add ~0.25 s to every command's start-up.
__all__ = ["ServeConfig"]
