"""Gradient sums split across processes (and machines) with torch.distributed.

Every expensive quantity in this package is a sum over fixed chunks of rows,

    S = sum_{j = 0}^{m - 1} s_j,      s_j = f(rows of chunk j),

(gradient sums G_S(w), Hessian-vector products, Newton-CG's curvature, the forgotten rows'
G_U and H_U products). With W processes, process k takes the contiguous block of chunks
``[k m / W, (k + 1) m / W)`` (contiguous so that each process touches only its own part of a
memory map), sums its block in chunk order and the W partial sums are all-reduced:

    S = sum_k S_k,      S_k = sum_{j in block k} s_j.

Every process then holds the same S (the all-reduce hands every rank the same bits), so all
processes take the same solver decisions and end on the same parameters. The result equals the
one-process sum up to floating-point reassociation (relative differences ~1e-16 per sum; the
saved models agree to <= 1e-10 relative, checked by ``tests/distributed``).

The processes run the same program (SPMD): every rank must execute the same sequence of sums,
or the all-reduce waits forever. Only rank 0 writes files (models, result.json, the ledger);
:func:`broadcast_json` and :func:`broadcast_ids` carry its messages to the others (the deletion
service uses them to hand a request's rows over: :mod:`miniunlearn.service.handoff`).

In one process (no ``WORLD_SIZE`` > 1 in the environment, or no process group) every function
here is a no-op: :func:`shard` returns everything, :func:`all_reduce_sum` its argument.

Launch (see docs/scaling.md)::

    torchrun --standalone --nproc_per_node 2 -m miniunlearn forget RUN --ids FILE --out DIR
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from miniunlearn.core.errors import MiniUnlearnError

T = TypeVar("T")

__all__ = ["init_from_env", "require_one_process", "shutdown", "active", "world_size", "rank", "is_writer", "shard",
           "all_reduce_sum", "all_reduce_max", "broadcast_json", "broadcast_ids", "DistributedError"]

BACKENDS = ("gloo", "nccl")
DEFAULT_TIMEOUT_S = 3600  # a rank may wait this long for the others (e.g. while rank 0 fingerprints the data)


class DistributedError(MiniUnlearnError):
    """The process group cannot be set up, or another process stopped."""


def active() -> bool:
    """True when a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_writer() -> bool:
    """Only rank 0 writes files; in one process that is this process."""
    return rank() == 0


def _launched_world() -> int:
    """``$WORLD_SIZE`` as torchrun set it (1 when unset)."""
    raw = os.environ.get("WORLD_SIZE", "").strip() or "1"
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"WORLD_SIZE={raw!r} is not a number of processes") from None


def init_from_env(backend: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Join the process group that torchrun describes in the environment; False in one process.

    torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
    The backend is ``backend``, else ``$MINIUNLEARN_DIST_BACKEND``, else nccl when this machine
    has a GPU and gloo otherwise. Sums are computed on the CPU in float64 either way; with nccl
    they travel through the process's GPU (``cuda:LOCAL_RANK``).
    """
    world = _launched_world()
    if world <= 1:
        return False
    if not dist.is_available():
        raise DistributedError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    if dist.is_initialized():
        return True
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise DistributedError(f"WORLD_SIZE={world} but {', '.join(missing)} is not set; start the processes with "
                               "torchrun (see docs/scaling.md)")
    backend = backend or os.environ.get("MINIUNLEARN_DIST_BACKEND") or (
        "nccl" if torch.cuda.is_available() else "gloo")
    if backend not in BACKENDS:
        raise DistributedError(f"unknown torch.distributed backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise DistributedError("the nccl backend needs a GPU on every process; use gloo on CPUs")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as exc:
        raise DistributedError(f"cannot join the process group ({backend}, WORLD_SIZE={world}, "
                               f"MASTER_ADDR={os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}): {exc}") from exc
    return True


def require_one_process(command: str) -> None:
    """Refuse to run ``command`` as several torchrun processes (they would all write the same files)."""
    if _launched_world() > 1:
        raise DistributedError(f"`{command}` runs in one process; start it without torchrun. Across processes "
                               "run `forget` or `retrain` (see docs/scaling.md)")


def shutdown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence[T]) -> Sequence[T]:
    """This process's contiguous block of ``items``: ``items[k m / W : (k + 1) m / W]`` for rank k of W.

    Blocks depend only on ``len(items)`` and W; together they cover ``items`` exactly once.
    """
    W, k = world_size(), rank()
    m = len(items)
    return items[k * m // W:(k + 1) * m // W]


def _device() -> torch.device:
    # nccl moves tensors between GPUs only; gloo works on CPU tensors
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce_tensor(t: torch.Tensor, op: str = "SUM") -> torch.Tensor:
    work = t.detach().to(_device(), copy=True).contiguous()
    dist.all_reduce(work, op=getattr(dist.ReduceOp, op))
    return work.to(t.device)


def all_reduce_max(value: float) -> float:
    """``max_k value_k`` over the processes (a float), on every process; ``value`` itself in one process."""
    if not active():
        return float(value)
    return float(_all_reduce_tensor(torch.tensor(float(value), dtype=torch.float64), op="MAX"))


def all_reduce_sum(value: T) -> T:
    """``sum_k value_k`` over the processes, on every process; ``value`` itself in one process.

    ``value`` is a tensor, a Python number, or a tuple / list of them (e.g. ``(loss, grad)``),
    and must have the same shape and dtype on every process.
    """
    if not active():
        return value
    if isinstance(value, torch.Tensor):
        return _all_reduce_tensor(value)
    if isinstance(value, (tuple, list)):
        return type(value)(all_reduce_sum(v) for v in value)
    if isinstance(value, (bool, np.bool_)):
        raise TypeError("all_reduce_sum of a bool is ambiguous; sum a count instead")
    if isinstance(value, (int, np.integer)):
        return int(_all_reduce_tensor(torch.tensor(int(value), dtype=torch.int64)))
    if isinstance(value, (float, np.floating)):
        return float(_all_reduce_tensor(torch.tensor(float(value), dtype=torch.float64)))
    raise TypeError(f"all_reduce_sum cannot sum a {type(value).__name__}")


# -------------------------------------------------------------------------------------------
# rank 0 -> every rank: small messages, without pickle (a peer's bytes are parsed, not executed)


def _broadcast_bytes(payload: bytes | None) -> bytes:
    """Rank 0's ``payload`` on every rank: its length first, then the bytes as a uint8 tensor."""
    n = int(_broadcast_tensor(torch.tensor([len(payload) if is_writer() else 0], dtype=torch.int64)).item())
    if n == 0:
        return b""
    buffer = (torch.frombuffer(bytearray(payload), dtype=torch.uint8) if is_writer()
              else torch.zeros(n, dtype=torch.uint8))
    return _broadcast_tensor(buffer).numpy().tobytes()


def _broadcast_tensor(t: torch.Tensor) -> torch.Tensor:
    work = t.to(_device(), copy=True).contiguous()
    dist.broadcast(work, src=0)
    return work.to("cpu")


def broadcast_json(obj=None):
    """Rank 0's JSON-able ``obj`` on every rank (others pass nothing); ``obj`` in one process."""
    if not active():
        return obj
    data = _broadcast_bytes(json.dumps(obj).encode() if is_writer() else None)
    return json.loads(data.decode())


def broadcast_ids(ids: np.ndarray | None, count: int) -> np.ndarray:
    """Rank 0's int64 array of ``count`` ids on every rank (others pass None)."""
    if not active():
        return np.asarray(ids, dtype=np.int64)
    t = (torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)) if is_writer()
         else torch.zeros(count, dtype=torch.int64))
    return _broadcast_tensor(t).numpy()
