"""Handing a deletion request from rank 0 to the other processes of a torchrun job.

Rank 0 owns the deletion ledger and writes every file; the other ranks compute the same sums.
Rank 0 plans the request with the ledger and, when there is something to compute, sends the rows
(:func:`start_work`); the others wait for them (:func:`await_work`). :func:`leading` guarantees
that the other ranks always hear from rank 0 -- also when the request is served from the ledger
without computing, or fails -- so none waits in a sum that rank 0 will not join. The messages
travel through :mod:`miniunlearn.distributed` (JSON and int64 tensors, never pickle).
"""

from __future__ import annotations

import contextlib

import numpy as np

from miniunlearn import distributed
from miniunlearn.distributed import DistributedError

__all__ = ["leading", "start_work", "await_work"]

_lead_state: list[dict] = []


@contextlib.contextmanager
def leading():
    """Rank 0's side of a request: whatever happens inside, the other ranks learn whether to compute.

    Inside the block rank 0 calls :func:`start_work` once it knows the rows to forget (after the
    ledger has planned the request). If the block ends without it -- the request was served from
    the ledger, or it failed -- the other ranks are told there is nothing to compute (and the
    error message, if any), so they never wait in a sum that rank 0 will not join.
    """
    state = {"announced": False}
    _lead_state.append(state)
    try:
        yield
    except BaseException as exc:
        if distributed.active() and not state["announced"]:
            distributed.broadcast_json({"work": False, "error": f"{type(exc).__name__}: {exc}"})
        raise
    else:
        if distributed.active() and not state["announced"]:
            distributed.broadcast_json({"work": False})
    finally:
        _lead_state.pop()


def start_work(ids: np.ndarray, cumulative: np.ndarray) -> None:
    """Rank 0: tell the other ranks which rows this request forgets (no-op in one process / elsewhere)."""
    if not distributed.active() or not distributed.is_writer() or not _lead_state or _lead_state[-1]["announced"]:
        return
    _lead_state[-1]["announced"] = True
    distributed.broadcast_json({"work": True, "n_ids": int(len(ids)), "n_cumulative": int(len(cumulative))})
    distributed.broadcast_ids(ids, len(ids))
    distributed.broadcast_ids(cumulative, len(cumulative))


def await_work() -> tuple[np.ndarray, np.ndarray] | None:
    """Ranks > 0: wait for rank 0's :func:`start_work`; ``(ids, cumulative)``, or None when there is
    nothing to compute. Raises :class:`DistributedError` when rank 0 failed."""
    message = distributed.broadcast_json()
    if not message.get("work"):
        if message.get("error"):
            raise DistributedError(f"rank 0 stopped: {message['error']}")
        return None
    ids = distributed.broadcast_ids(None, int(message["n_ids"]))
    cumulative = distributed.broadcast_ids(None, int(message["n_cumulative"]))
    return ids, cumulative
