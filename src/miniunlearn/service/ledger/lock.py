"""The request lock of a run: an exclusive ``flock`` on ``RUN/ledger.lock``.

Requests on one run are serialised by this lock. The kernel releases it when its holder exits
or is killed, so a ``started`` request seen while holding it is certainly stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from miniunlearn.core.errors import RunError
from miniunlearn.runs import LOCK_FILE


@contextlib.contextmanager
def request_lock(run) -> Iterator[None]:
    """Hold ``run``'s request lock: an exclusive ``flock`` on ``RUN/ledger.lock``.

    Waits while another process works on a request for the same run. The kernel releases the
    lock when its holder exits or is killed, so a ``started`` request seen under the lock is stale.
    """
    lock_path = Path(run.path) / LOCK_FILE
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunError(f"cannot open the ledger lock {lock_path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def lock_held(run) -> bool:
    """True while another process holds ``run``'s request lock (a request is being computed)."""
    lock_path = Path(run.path) / LOCK_FILE
    if not lock_path.is_file():
        return False
    fd = os.open(lock_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
