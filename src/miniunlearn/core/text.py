"""Parsing what people type: ``key=value`` options, ``NAME:key=value,...`` specs, byte sizes; file-safe names.

Dataset specs (``synthetic:n_samples=5000``), method specs (``mini:refine=1``) and ``--set``
options all go through :func:`parse_key_values`, so they coerce values the same way.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from miniunlearn.core.errors import InputError

__all__ = ["coerce_scalar", "parse_key_values", "parse_spec", "parse_bytes", "slug"]

_BYTE_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
               "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


def coerce_scalar(value: str) -> Any:
    """``"5"`` -> 5, ``"1e-3"`` -> 0.001, ``"none"`` -> None, anything else stays a string."""
    if value.lower() in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def parse_key_values(items: Iterable[str], what: str) -> dict[str, Any]:
    """``["a=1", "b-c=x"]`` -> ``{"a": 1, "b_c": "x"}`` (dashes in keys become underscores)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"{what} {item!r} should look like key=value")
        out[key.replace("-", "_")] = coerce_scalar(value.strip())
    return out


def parse_spec(spec: str, what: str = "spec") -> tuple[str, dict[str, Any]]:
    """Split ``"name:key=value,key=value"`` into the name and typed options."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"empty {what}")
    name, _, rest = spec.strip().partition(":")
    items = [part.strip() for part in rest.split(",") if part.strip()]
    return name.strip(), parse_key_values(items, f"{what} option in {spec!r}:")


def parse_bytes(text: str) -> int:
    """``"4GiB"`` -> 4294967296, ``"500MB"`` -> 500000000, ``"1024"`` -> 1024."""
    raw = str(text).strip().lower()
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)", raw)
    if not match or match.group(2) not in _BYTE_UNITS:
        raise InputError(f"cannot read the size {text!r}; write e.g. 4GiB, 500MB or 1048576")
    size = float(match.group(1)) * _BYTE_UNITS[match.group(2)]
    if size > 2**62:
        raise InputError(f"the size {text!r} is too large")
    return int(size)


def slug(text: str, limit: int = 60) -> str:
    """A file-name-safe version of ``text``: every character but ASCII letters, digits and ``-_.``
    becomes ``-``; at most ``limit`` characters."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:limit].strip("-") or "x"
