"""Durable file writes and safe reads.

Every file the project writes goes through :func:`atomic_write`: the bytes land in a
temporary file in the same directory, are fsync'ed, and only then renamed over the
target, so a crash, a kill or a full disk leaves either the old file or the new one,
never half of one. Tensors are stored as safetensors (no pickle: loading a file can
never execute code) and metadata as JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from miniunlearn.errors import RunError


def _fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry itself is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success fsync it and rename it over ``target``.

    On any exception the temporary file is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write(target: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp_path)`` and atomically move the result to ``target``."""
    with atomic_path(target) as tmp:
        write(tmp)


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    atomic_write(target, lambda tmp: tmp.write_bytes(data))


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


def to_json(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent, default=_json_default, allow_nan=True)


def atomic_write_json(target: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(target, (to_json(obj) + "\n").encode())


def read_json(path: str | os.PathLike, what: str = "file") -> dict:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{what} {path} is corrupted (not valid JSON: {exc})") from exc


def save_tensors(target: str | os.PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> int:
    """Atomically write torch tensors to a safetensors file; return its size in bytes."""
    from safetensors.torch import save_file

    contiguous = {name: t.detach().contiguous() for name, t in tensors.items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    atomic_write(target, lambda tmp: save_file(contiguous, str(tmp), metadata=meta))
    return Path(target).stat().st_size


def load_tensors(path: str | os.PathLike, what: str = "tensor file", names: list[str] | None = None) -> tuple[dict, dict]:
    """Read a safetensors file, returning (tensors, metadata).

    Raises :class:`RunError` naming the file when it is missing, truncated or corrupted.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise RunError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            keys = list(handle.keys()) if names is None else names
            missing = [k for k in keys if k not in handle.keys()]
            if missing:
                raise RunError(f"{what} {path} lacks tensor(s) {', '.join(missing)}")
            tensors = {k: handle.get_tensor(k) for k in keys}
    except SafetensorError as exc:
        raise RunError(f"{what} {path} is corrupted or truncated ({exc})") from exc
    except (OSError, ValueError, RuntimeError) as exc:
        raise RunError(f"{what} {path} could not be read ({exc})") from exc
    return tensors, metadata


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
