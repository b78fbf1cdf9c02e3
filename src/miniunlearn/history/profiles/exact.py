"""``exact``: the inverse of the dense regularised Hessian, ``P = (H_D + lambda M)^-1`` (p x p).

Stored dense (``packed=False``, p^2 numbers) or as its upper triangle (``packed=True``,
p (p+1)/2 numbers, applied by BLAS spmv without unpacking), in float64 or float32. With P the
retained Hessian is ``n P^-1 - H_U - r lambda M`` exactly, so step 0 is the exact Newton step on F_R
from w_T. Build: the dense Hessian (reference-class elimination, float32 Gram products accumulated
in float64 with ``fast_build``, the default from p = 4096 on), a Cholesky factorisation and its inverse (p^3); peak memory two
float64 p x p matrices.
"""

from __future__ import annotations

import torch

from miniunlearn.core.params import Boolean, Param
from miniunlearn.history.profiles.base import (
    CurvatureProfile,
    Options,
    itemsize,
    pack_symmetric,
    packed_matvec,
    packed_size,
    register,
    torch_dtype,
)


def exact_inverse(objective, theta: torch.Tensor, gemm_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``(H_D + lambda M)^-1`` in float64, exactly symmetric (a free intercept's flat direction lifted)."""
    precond = objective.hessian_loss_mean(theta, dtype=torch.float64, gemm_dtype=gemm_dtype)
    precond.diagonal().add_(objective.penalty.diagonal(precond.shape[0]))
    gauge = objective.penalty.gauge()
    if gauge is not None:  # a free intercept: lift the flat common-bias direction so P exists (it acts on
        precond += float(precond.diagonal().mean()) * torch.outer(gauge, gauge)  # zero-mean biases exactly)
    factor = torch.linalg.cholesky(precond)
    del precond
    precond = torch.cholesky_inverse(factor)
    del factor
    precond += precond.T.clone()  # exact symmetry, so the fixed-point map is self-adjoint
    precond *= 0.5
    return precond


FAST_BUILD_MIN_PARAMS = 4096  # below this the build takes seconds at most: keep it exact to float64 rounding


@register
class ExactProfile(CurvatureProfile):
    name = "exact"
    summary = "P = (H_D + lambda M)^-1, dense or packed upper triangle, float64 or float32"
    rank = 100
    exact = True
    parameters = {
        "dtype": Param("float64", Options(("float64", "float32")), help="storage precision of P"),
        "packed": Param(False, Boolean(), help="store the upper triangle only (half the bytes, same numbers)"),
        "fast_build": Param(None, Boolean(), None,
                            help="float32 Gram products accumulated in float64 (about 2x faster, relative error "
                                 f"~1e-7 in H); None: when p >= {FAST_BUILD_MIN_PARAMS}"),
    }
    tensor_names = ("precond",)

    def stored_bytes(self, model) -> int:
        p = model.n_params
        return itemsize(self.dtype) * (packed_size(p) if self.packed else p * p)

    def build_bytes(self, model) -> int:
        return 2 * 8 * model.n_params ** 2

    @classmethod
    def fit_budget(cls, model, budget, memory_budget):
        for options in ({"dtype": "float64"}, {"dtype": "float64", "packed": True},
                        {"dtype": "float32", "packed": True}):
            profile = cls(**options)
            if profile.stored_bytes(model) <= budget and profile.build_bytes(model) <= memory_budget:
                return profile
        return None

    def build(self, objective, theta):
        fast = self.fast_build if self.fast_build is not None else objective.model.n_params >= FAST_BUILD_MIN_PARAMS
        precond = exact_inverse(objective, theta, torch.float32 if fast else None)
        dtype = torch_dtype(self.dtype)
        if self.packed:
            return {"precond": pack_symmetric(precond, dtype)}
        return {"precond": precond if dtype == torch.float64 else precond.to(dtype)}

    def preconditioner(self, tensors, penalty):
        P = tensors["precond"]
        if P.dim() == 1:
            return packed_matvec(P)
        if P.dtype == torch.float64:
            return lambda v: P @ v
        return lambda v: (P @ v.to(P.dtype)).to(torch.float64)
