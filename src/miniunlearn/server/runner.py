"""Starting the server: the address check, uvicorn, and what a stop does.

Without a tokens file every request is served (all scopes), so the server then binds to loopback
addresses only: a host that is not (or does not resolve only to) a loopback address is refused
before anything is opened. TLS is uvicorn's (``ssl_certfile`` / ``ssl_keyfile``).

Signals: uvicorn turns SIGTERM and SIGINT into a graceful shutdown; the app's lifespan then stops
the solver thread, which finishes the solve it is running (its requests become ``done``) and
takes no new one. Requests still queued stay in the durable queue for the next start. After a
SIGKILL the next start settles an interrupted solve (:meth:`miniunlearn.server.worker.Worker.recover`).
"""

from __future__ import annotations

import ipaddress
import logging
import socket

import torch
import uvicorn

from miniunlearn.core.errors import InputError
from miniunlearn.server.app import create_app
from miniunlearn.server.config import ServeConfig


def is_loopback(host: str) -> bool:
    """True when ``host`` is a loopback address or a name resolving only to loopback addresses."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in found)


def check_address(host: str, port: int, tokens) -> None:
    if not 0 <= int(port) <= 65535:
        raise InputError(f"--port must lie in 0..65535, got {port}")
    if tokens is None and not is_loopback(host):
        raise InputError(f"refusing to serve on {host!r} without --tokens: without tokens every request is served, "
                         "so only loopback addresses (127.0.0.1, ::1, localhost) are allowed. Create a tokens file "
                         "with `miniunlearn tokens add FILE --name NAME --scopes ...`")


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, ssl_certfile=None, ssl_keyfile=None,
          log_level: str = "info") -> None:
    """Serve ``config.run`` until SIGTERM/SIGINT (blocking)."""
    check_address(host, port, config.tokens)
    if config.threads is not None:
        torch.set_num_threads(int(config.threads))
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(levelname)s: %(message)s")
    uvicorn.run(create_app(config), host=host, port=int(port), log_level=log_level, ssl_certfile=ssl_certfile,
                ssl_keyfile=ssl_keyfile, timeout_graceful_shutdown=None, server_header=False)
