"""One interface for every unlearning method, and the registry that names them.

A method is a subclass of :class:`UnlearningMethod` in its own module under
``miniunlearn.methods``; decorating it with :func:`register` makes it available to the
Python API, ``miniunlearn forget --method NAME`` and the benchmark. Every module in this
package is imported automatically, so adding a method is adding one file.

A method declares its options once, as ``parameters = {name: Param(default, *constraints,
help=...)}`` (:mod:`miniunlearn.core.params`); the constructor validates them, ``methods``
lists them, and ``options()`` records them in result.json and the ledger.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import torch

from miniunlearn.core.errors import InputError
from miniunlearn.core.params import Param, param_help, validate_params
from miniunlearn.models.penalty import Penalty
from miniunlearn.models.rows import Rows, RowsWithout, retained_ids

_REGISTRY: dict[str, type["UnlearningMethod"]] = {}


def register(cls: type["UnlearningMethod"]) -> type["UnlearningMethod"]:
    """Class decorator: register ``cls`` under ``cls.name``."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute `name`")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise TypeError(f"two unlearning methods are named {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a method from the registry (for methods registered at run time, e.g. in tests)."""
    _REGISTRY.pop(name, None)


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def get_method(name: str) -> type["UnlearningMethod"]:
    if name not in _REGISTRY:
        raise InputError(f"unknown unlearning method {name!r}; available: {', '.join(method_names())}")
    return _REGISTRY[name]


def make_method(name: str, **options) -> "UnlearningMethod":
    return get_method(name)(**options)


@dataclass
class UnlearnContext:
    """Everything a method may read: the run, its data, and the forget set.

    ``forget_ids`` are sorted 0-based training-row ids (already validated). Data access goes
    through :class:`Rows` so that passes over the forget and retained data are counted.
    """

    run: Any  # miniunlearn.runs.Run
    forget_ids: np.ndarray
    workers: int = 1
    progress: Any = None
    history_bytes_read: int = field(default=0, init=False)

    def __post_init__(self):
        self.forget_ids = np.asarray(self.forget_ids, dtype=np.int64)

    @property
    def model(self):
        return self.run.model

    @property
    def dataset(self):
        return self.run.dataset

    @property
    def l2(self) -> float:
        return self.run.l2

    @cached_property
    def penalty(self) -> Penalty:
        return Penalty(self.model, self.run.l2, self.run.penalize_intercept)

    @property
    def n_train(self) -> int:
        return self.run.n_train

    @property
    def chunk_rows(self) -> int:
        return int(self.run.config.get("chunk_rows", 8192))

    @cached_property
    def retained_ids(self) -> np.ndarray:
        return retained_ids(self.n_train, self.forget_ids)

    @cached_property
    def forget_rows(self) -> Rows:
        ds = self.dataset
        return Rows(ds.X_train, ds.y_train, self.forget_ids, chunk_rows=self.chunk_rows, workers=self.workers)

    @cached_property
    def retained_rows(self) -> Rows:
        ds = self.dataset
        return Rows(ds.X_train, ds.y_train, self.retained_ids, chunk_rows=self.chunk_rows, workers=self.workers)

    @property
    def passes_forget(self) -> float:
        rows = self.__dict__.get("forget_rows")
        return 0.0 if rows is None else rows.rows_read / max(1, len(self.forget_ids))

    @cached_property
    def retained_in_place(self) -> RowsWithout:
        """The retained rows read where they lie in the training set, the forgotten ones left out of every sum:
        no copy of R, but every sweep reads all n rows (for requests that forget few). Curvature passes only
        (:class:`RowsWithout`); its sweeps count as passes over R."""
        ds = self.dataset
        return RowsWithout(ds.X_train, ds.y_train, self.forget_ids, chunk_rows=self.chunk_rows, workers=self.workers)

    @property
    def passes_retained(self) -> float:
        read = sum(rows.rows_read for name in ("retained_rows", "retained_in_place")
                   if (rows := self.__dict__.get(name)) is not None)
        return read / max(1, len(self.retained_ids))

    def original_theta(self) -> torch.Tensor:
        return self.run.theta()

    def mini_history(self):
        history = self.run.mini_history()
        self.history_bytes_read += history.nbytes
        return history

    def deltagrad_history(self):
        """DeltaGrad's per-iteration history; the caller counts what it reads (:meth:`note_history_bytes`)."""
        return self.run.deltagrad_history()

    def note_history_bytes(self, nbytes: int) -> None:
        self.history_bytes_read += int(nbytes)


@dataclass
class UnlearnResult:
    """The unlearned parameters and what it took to get them."""

    theta: torch.Tensor
    method: str
    options: dict
    stats: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"method": self.method, "options": self.options, **self.stats}


class UnlearningMethod(ABC):
    """Base class. Subclasses set ``name``, ``summary``, ``modes`` and ``parameters`` and implement
    :meth:`unlearn`. Options are validated by the constructor and become attributes."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # which training modes the method supports
    modes: ClassVar[tuple[str, ...]] = ("converged", "trajectory")
    parameters: ClassVar[dict[str, Param]] = {}

    def __init__(self, **options):
        self._options = validate_params(f"method {self.name!r}", self.parameters, options)
        for key, value in self._options.items():
            setattr(self, key, value)

    def options(self) -> dict:
        """The method's options, defaults filled in (for result.json and the ledger)."""
        return dict(self._options)

    def check_run(self, run) -> None:
        if run.mode not in self.modes:
            raise InputError(f"method {self.name!r} does not support {run.mode}-mode runs "
                             f"(supports: {', '.join(self.modes)})")

    @abstractmethod
    def unlearn(self, ctx: UnlearnContext) -> torch.Tensor | tuple[torch.Tensor, dict]:
        """Return the unlearned parameters, optionally with method-specific statistics."""

    @classmethod
    def option_help(cls) -> dict[str, dict]:
        """``{option: {"default", "allowed", "help"}}``."""
        return param_help(cls.parameters)
