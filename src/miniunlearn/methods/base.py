"""One interface for every unlearning method, and the registry that names them.

A method is a subclass of :class:`UnlearningMethod` in its own module under
``miniunlearn.methods``; decorating it with :func:`register` makes it available to the
Python API, ``miniunlearn forget --method NAME`` and the benchmark. Modules in this
package are imported automatically, so adding a method is adding one file.
"""

from __future__ import annotations

import dataclasses
import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import torch

from miniunlearn.errors import InputError
from miniunlearn.models.rows import Rows

_REGISTRY: dict[str, type["UnlearningMethod"]] = {}


def register(cls: type["UnlearningMethod"]) -> type["UnlearningMethod"]:
    """Class decorator: register ``cls`` under ``cls.name``."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute `name`")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise TypeError(f"two unlearning methods are named {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def get_method(name: str) -> type["UnlearningMethod"]:
    if name not in _REGISTRY:
        raise InputError(f"unknown unlearning method {name!r}; available: {', '.join(method_names())}")
    return _REGISTRY[name]


@dataclass
class UnlearnContext:
    """Everything a method may read: the run, its data, and the forget set.

    ``forget_ids`` are sorted 0-based training-row ids (already validated). Data access goes
    through :class:`Rows` so that passes over the forget and retained data are counted.
    """

    run: Any  # miniunlearn.run.Run
    forget_ids: np.ndarray
    workers: int = 1
    progress: Any = None

    def __post_init__(self):
        self.forget_ids = np.asarray(self.forget_ids, dtype=np.int64)
        self._history_bytes_read = 0

    @property
    def model(self):
        return self.run.model

    @property
    def dataset(self):
        return self.run.dataset

    @property
    def l2(self) -> float:
        return self.run.l2

    @property
    def n_train(self) -> int:
        return self.run.n_train

    @cached_property
    def retained_ids(self) -> np.ndarray:
        from miniunlearn.run import retained_ids

        return retained_ids(self.n_train, self.forget_ids)

    @cached_property
    def forget_rows(self) -> Rows:
        ds = self.dataset
        return Rows(ds.X_train, ds.y_train, self.forget_ids, chunk_rows=self.run.config.get("chunk_rows", 8192),
                    workers=self.workers)

    @cached_property
    def retained_rows(self) -> Rows:
        ds = self.dataset
        return Rows(ds.X_train, ds.y_train, self.retained_ids, chunk_rows=self.run.config.get("chunk_rows", 8192),
                    workers=self.workers)

    @property
    def passes_forget(self) -> float:
        rows = self.__dict__.get("forget_rows")
        return 0.0 if rows is None else rows.rows_read / max(1, len(self.forget_ids))

    @property
    def passes_retained(self) -> float:
        rows = self.__dict__.get("retained_rows")
        return 0.0 if rows is None else rows.rows_read / max(1, len(self.retained_ids))

    def original_theta(self) -> torch.Tensor:
        return self.run.theta()

    def mini_history(self):
        history = self.run.mini_history()
        self._history_bytes_read += history.nbytes
        return history

    def deltagrad_history(self):
        history = self.run.deltagrad_history()
        self._history_bytes_read += history.nbytes
        return history

    def note_history_bytes(self, nbytes: int) -> None:
        self._history_bytes_read += int(nbytes)

    @property
    def history_bytes_read(self) -> int:
        return self._history_bytes_read


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
    """Base class. Subclasses set ``name`` and ``summary``, declare options as keyword
    arguments of ``__init__`` (validated there) and implement :meth:`unlearn`.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # which training modes the method supports
    modes: ClassVar[tuple[str, ...]] = ("converged", "trajectory")

    def options(self) -> dict:
        """The method's options as passed (for result.json and the ledger)."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self" and hasattr(self, k)}

    def check_run(self, run) -> None:
        if run.mode not in self.modes:
            raise InputError(f"method {self.name!r} does not support {run.mode}-mode runs "
                             f"(supports: {', '.join(self.modes)})")

    @abstractmethod
    def unlearn(self, ctx: UnlearnContext) -> torch.Tensor | tuple[torch.Tensor, dict]:
        """Return the unlearned parameters, optionally with method-specific statistics."""

    @classmethod
    def option_help(cls) -> dict[str, str]:
        """Option name -> default, from the constructor's signature."""
        sig = inspect.signature(cls.__init__)
        return {k: repr(p.default) for k, p in sig.parameters.items()
                if k != "self" and p.default is not inspect.Parameter.empty}


def make_method(name: str, **options) -> UnlearningMethod:
    cls = get_method(name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise InputError(f"method {name!r} has no option {', '.join(unknown)}; its options: "
                         f"{', '.join(sorted(accepted)) or 'none'}")
    return cls(**options)


__all__ = ["UnlearningMethod", "UnlearnContext", "UnlearnResult", "register", "get_method", "method_names",
           "make_method", "dataclasses"]
