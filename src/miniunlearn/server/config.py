"""The service's limits and settings, declared once with their ranges (:mod:`miniunlearn.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from numbers import Integral, Real
from pathlib import Path

from miniunlearn.core.params import Interval, Param, validate_params

LIMITS = {
    "max_body_bytes": Param(1 << 20, Interval(Integral, 1024, 64 << 20),
                            help="largest request body accepted, in bytes (larger: 413)"),
    "max_names": Param(10_000, Interval(Integral, 1, 1_000_000),
                       help="most keys or rows one deletion request may name (more: 422)"),
    "max_batch": Param(64, Interval(Integral, 1, 10_000),
                       help="most queued requests one solve serves together (coalescing)"),
    "max_predict_rows": Param(10_000, Interval(Integral, 1, 1_000_000),
                              help="most rows one prediction request may hold (more: 422)"),
    "threads": Param(None, None, Interval(Integral, 1, 1024),
                     help="torch threads of the solver (None: torch's default)"),
    "default_tol": Param(1e-3, Interval(Real, 1e-12, 1, closed="right"),
                         help="tolerance of a request that gives none: certificate <= tol * ||w - w_T||"),
}


@dataclass
class ServeConfig:
    """What one server process serves and within which limits (see :data:`LIMITS`)."""

    run: Path
    tokens: Path | None = None
    max_body_bytes: int = LIMITS["max_body_bytes"].default
    max_names: int = LIMITS["max_names"].default
    max_batch: int = LIMITS["max_batch"].default
    max_predict_rows: int = LIMITS["max_predict_rows"].default
    threads: int | None = None
    default_tol: float = LIMITS["default_tol"].default

    @classmethod
    def build(cls, run, tokens=None, **limits) -> "ServeConfig":
        """A configuration with every limit checked against its range (InputError names the bad one)."""
        values = validate_params("serve", LIMITS, {k: v for k, v in limits.items() if v is not None})
        return cls(run=Path(run), tokens=None if tokens is None else Path(tokens), **values)

    def limits(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in LIMITS}
