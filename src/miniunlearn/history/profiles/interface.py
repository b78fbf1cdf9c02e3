"""The curvature-profile interface, its registry and the choice of a profile by a byte budget.

A profile decides what Mini-Unlearning's history keeps about the curvature at w_T and how to apply
its approximation ``P ~= (H_D + lambda M)^-1`` (H_D the mean loss Hessian of all n rows). A new
profile is one module in this package: a :class:`CurvatureProfile` subclass decorated with
:func:`register`, with its options declared in ``parameters`` (validated by ``core.params``).

Whatever the profile, unlearning certifies with exact gradients and curvature of the retained rows:
the profile only chooses the start (step 0) and preconditions the certified Newton-CG passes, so
a coarse profile costs passes, never correctness.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from miniunlearn.core.errors import InputError
from miniunlearn.core.params import Options, Param, validate_params
from miniunlearn.core.text import parse_spec

_REGISTRY: dict[str, type["CurvatureProfile"]] = {}
DTYPES = ("float64", "float32", "float16")
DTYPE_OPTION = Options(DTYPES)
# An exact profile may store, beside P, a measured bound on ||(H_D + lambda M) P - I||_2 under this name.
DEFECT = "defect"


def register(cls: type["CurvatureProfile"]) -> type["CurvatureProfile"]:
    """Class decorator: register ``cls`` under ``cls.name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a name")
    _REGISTRY[cls.name] = cls
    return cls


def available_profiles() -> list[str]:
    """Registered profile names, most accurate first."""
    return sorted(_REGISTRY, key=lambda name: -_REGISTRY[name].preference)


def profile_class(name: str) -> type["CurvatureProfile"]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown history profile {name!r}; choose one of {', '.join(available_profiles())} "
                         "(or auto)") from None


def make_profile(spec: "str | CurvatureProfile", **options) -> "CurvatureProfile":
    """A profile from ``"name[:key=value,...]"`` (e.g. ``kron:k=200,dtype=float16``) or an instance."""
    if isinstance(spec, CurvatureProfile):
        return spec
    name, parsed = parse_spec(spec, "history profile")
    return profile_class(name)(**{**parsed, **options})


def choose_by_budget(model, budget: int, memory_budget: int) -> "CurvatureProfile":
    """The most accurate registered profile whose stored bytes fit ``budget`` and whose build fits
    ``memory_budget``."""
    for name in available_profiles():
        chosen = _REGISTRY[name].fit_budget(model, budget, memory_budget)
        if chosen is not None:
            return chosen
    smallest = min(_REGISTRY[n]().stored_bytes(model) for n in _REGISTRY if _REGISTRY[n].fit_budget is not None)
    raise InputError(f"no history profile fits {budget} bytes for {model.n_params} parameters "
                     f"(the smallest needs about {smallest} bytes besides w_T and G_D(w_T))")


def torch_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def itemsize(name: str) -> int:
    return torch.empty(0, dtype=torch_dtype(name)).element_size()


class CurvatureProfile:
    """Base class. Subclasses set ``name``, ``summary``, ``preference`` (higher: more accurate, preferred
    by the budget choice), ``parameters`` and ``tensor_names``, and implement the methods below."""

    name = ""
    summary = ""
    preference = 0
    exact = False  # the preconditioner is (H_D + lambda M)^-1 itself (step 0 may use the contraction)
    parameters: dict[str, Param] = {}
    tensor_names: tuple[str, ...] = ()

    def __init__(self, **options):
        self.options = validate_params(f"history profile {self.name!r}", self.parameters, options)
        for key, value in self.options.items():
            setattr(self, key, value)

    def spec(self) -> str:
        """``name:key=value,...`` with every option (what run.json records)."""
        items = ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in self.options.items())
        return f"{self.name}:{items}" if items else self.name

    # -- sizes -------------------------------------------------------------------------------------
    def stored_bytes(self, model) -> int:
        """Bytes of the profile's tensors in the history file (w_T and G_D(w_T) not counted)."""
        raise NotImplementedError

    def build_bytes(self, model) -> int:
        """Peak working memory of the build (besides the rows)."""
        return self.stored_bytes(model)

    @classmethod
    def fit_budget(cls, model, budget: int, memory_budget: int) -> "CurvatureProfile | None":
        """The most accurate configuration of this profile within the budgets, or None."""
        profile = cls()
        fits = profile.stored_bytes(model) <= budget and profile.build_bytes(model) <= memory_budget
        return profile if fits else None

    # -- work --------------------------------------------------------------------------------------
    def build(self, objective, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """The tensors to store, from the rows of ``objective`` at the optimum ``theta``."""
        raise NotImplementedError

    def preconditioner(self, tensors: dict[str, torch.Tensor], penalty) -> Callable[[torch.Tensor], torch.Tensor]:
        """``v -> P v`` (float64 in and out) from the stored tensors."""
        raise NotImplementedError


# -- packed symmetric storage (upper triangle, column-major: BLAS "U" packed format) ---------------------
def packed_size(n: int) -> int:
    return n * (n + 1) // 2


def packed_side(length: int) -> int:
    """The n of an n x n symmetric matrix packed into ``length`` numbers (the inverse of :func:`packed_size`)."""
    return (math.isqrt(8 * length + 1) - 1) // 2


def pack_symmetric(M: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The upper triangle of a symmetric ``M`` column by column (= its lower triangle row by row)."""
    n = M.shape[0]
    out = torch.empty(packed_size(n), dtype=dtype)
    start = 0
    for i in range(n):
        out[start:start + i + 1] = M[i, :i + 1]
        start += i + 1
    return out


def unpack_symmetric(packed: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    n = packed_side(packed.numel())
    out = torch.empty(n, n, dtype=dtype)
    start = 0
    for i in range(n):
        row = packed[start:start + i + 1].to(dtype)
        out[i, :i + 1] = row
        out[:i + 1, i] = row
        start += i + 1
    return out


def packed_matvec(packed: torch.Tensor, scale: float = 1.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> scale M v`` for M stored by :func:`pack_symmetric` in float64 or float32 (BLAS spmv, no unpacking)."""
    from scipy.linalg import blas

    ap = packed.numpy()
    n = packed_side(ap.size)
    spmv = blas.dspmv if ap.dtype == np.float64 else blas.sspmv

    def apply(v: torch.Tensor) -> torch.Tensor:
        out = spmv(n, scale, ap, v.numpy().astype(ap.dtype, copy=False))
        return torch.from_numpy(np.asarray(out, dtype=np.float64))

    return apply
