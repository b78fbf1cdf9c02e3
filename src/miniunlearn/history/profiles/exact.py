"""``exact``: the inverse of the dense regularised Hessian, ``P = (H_D + lambda M)^-1`` (p x p).

Stored dense (``packed=False``, p^2 numbers) or as its upper triangle (``packed=True``,
p (p+1)/2 numbers, applied by BLAS spmv without unpacking), in float64 or float32. With P the
retained Hessian is ``n P^-1 - H_U - r lambda M`` exactly, so step 0 is the exact Newton step on F_R
from w_T. Build: the dense Hessian (reference-class elimination, float32 Gram products accumulated
in float64 with ``fast_build``, the default from p = 4096 on), a Cholesky factorisation and its inverse (p^3); peak memory two
float64 p x p matrices.
"""

from __future__ import annotations

import math

import torch

from miniunlearn.core.params import Boolean, Param
from miniunlearn.history.profiles.interface import (
    DEFECT,
    CurvatureProfile,
    Options,
    itemsize,
    pack_symmetric,
    packed_matvec,
    packed_size,
    register,
    torch_dtype,
)


def regularised_hessian(objective, theta: torch.Tensor, gemm_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``A = H_D + lambda M`` in float64 (a free intercept's flat direction lifted, so A is invertible)."""
    A = objective.hessian_loss_mean(theta, dtype=torch.float64, gemm_dtype=gemm_dtype)
    A.diagonal().add_(objective.penalty.diagonal(A.shape[0]))
    gauge = objective.penalty.gauge()
    if gauge is not None:  # a free intercept: lift the flat common-bias direction so P exists (it acts on
        A += float(A.diagonal().mean()) * torch.outer(gauge, gauge)  # zero-mean biases exactly)
    return A


def symmetric_inverse(A: torch.Tensor) -> torch.Tensor:
    """``A^-1`` of an SPD matrix by Cholesky, exactly symmetric (the fixed-point map is then self-adjoint)."""
    factor = torch.linalg.cholesky(A)
    precond = torch.cholesky_inverse(factor)
    del factor
    precond += precond.T.clone()
    precond *= 0.5
    return precond


def exact_inverse(objective, theta: torch.Tensor, gemm_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``(H_D + lambda M)^-1`` in float64, exactly symmetric."""
    return symmetric_inverse(regularised_hessian(objective, theta, gemm_dtype))


def inverse_defect(A: torch.Tensor, apply_P, block: int = 512) -> float:
    """An upper bound on ``||A P - I||_2`` for the stored P (applied by ``apply_P`` to a block of columns).

    ``||A P - I||_F`` computed column block by column block, plus the float64 rounding bound of that
    very computation (``gamma_p ||A||_F ||P||_F``, p the inner dimension): the no-pass certificate of a
    deletion (docs/mini-unlearning.md) trusts P only up to this number. Cost: p^3 multiply-adds.
    """
    p = A.shape[0]
    frob_sq, p_frob_sq = 0.0, 0.0
    for start in range(0, p, block):
        stop = min(start + block, p)
        eye = torch.zeros(p, stop - start, dtype=torch.float64)
        eye[torch.arange(start, stop), torch.arange(stop - start)] = 1.0
        columns = apply_P(eye)
        p_frob_sq += float((columns * columns).sum())
        F = A @ columns - eye
        frob_sq += float((F * F).sum())
    gamma = 1.01 * p * 2.0 ** -53
    return math.sqrt(frob_sq) + gamma * float(torch.linalg.matrix_norm(A)) * math.sqrt(p_frob_sq)


FAST_BUILD_MIN_PARAMS = 4096  # below this the build takes seconds at most: keep it exact to float64 rounding


@register
class ExactProfile(CurvatureProfile):
    name = "exact"
    summary = "P = (H_D + lambda M)^-1, dense or packed upper triangle, float64 or float32"
    preference = 100
    exact = True
    parameters = {
        "dtype": Param("float64", Options(("float64", "float32")), help="storage precision of P"),
        "packed": Param(False, Boolean(), help="store the upper triangle only (half the bytes, same numbers)"),
        "fast_build": Param(None, Boolean(), None,
                            help="float32 Gram products accumulated in float64 (about 2x faster, relative error "
                                 f"~1e-7 in H); None: when p >= {FAST_BUILD_MIN_PARAMS}"),
        "defect": Param(None, Boolean(), None,
                        help="measure ||A P - I|| at build (p^3; needs a float64 build): deletions may then be "
                             f"certified without a pass over the retained rows; None: when p < {FAST_BUILD_MIN_PARAMS}"),
    }
    tensor_names = ("precond",)

    def stored_bytes(self, model) -> int:
        p = model.n_params
        return itemsize(self.dtype) * (packed_size(p) if self.packed else p * p) + (8 if self._measures(p) else 0)

    def _fast(self, p: int) -> bool:
        return self.fast_build if self.fast_build is not None else p >= FAST_BUILD_MIN_PARAMS

    def _measures(self, p: int) -> bool:
        """Whether the build measures P's defect (a float64 build only: a float32 Gram's A is itself ~1e-7 off)."""
        return (self.defect if self.defect is not None else p < FAST_BUILD_MIN_PARAMS) and not self._fast(p)

    def build_bytes(self, model) -> int:
        return (3 if self.defect else 2) * 8 * model.n_params ** 2

    @classmethod
    def preferred(cls, model) -> "ExactProfile":
        """The storage ``auto`` picks: from p = FAST_BUILD_MIN_PARAMS on, the build's Gram products are
        float32 (P is then only about as accurate as float32 whichever way it is stored), so P is kept in
        float32, packed (a quarter of the bytes: on Fashion-MNIST every deletion took the same passes, and
        reading the history 0.06 s instead of 0.21 s); below, float64 dense, whose defect is measured and
        may certify without a pass."""
        if model.n_params >= FAST_BUILD_MIN_PARAMS:
            return cls(dtype="float32", packed=True)
        return cls()

    @classmethod
    def fit_budget(cls, model, budget, memory_budget):
        for profile in (cls.preferred(model), cls(dtype="float64", packed=True), cls(dtype="float32", packed=True)):
            if profile.stored_bytes(model) <= budget and profile.build_bytes(model) <= memory_budget:
                return profile
        return None

    def build(self, objective, theta):
        p = objective.model.n_params
        fast, measure = self._fast(p), self._measures(p)
        A = regularised_hessian(objective, theta, torch.float32 if fast else None)
        precond = symmetric_inverse(A)
        if not measure:
            del A
        dtype = torch_dtype(self.dtype)
        defect = None
        if measure:  # against P as stored (rounded to its dtype; packing keeps the numbers). A float32 Gram
            stored = precond if dtype == torch.float64 else precond.to(dtype).to(torch.float64)  # build is not
            defect = inverse_defect(A, lambda E: stored @ E)  # measured: its A is itself ~1e-7 off
            del A, stored
        if self.packed:
            tensors = {"precond": pack_symmetric(precond, dtype)}
        else:
            tensors = {"precond": precond if dtype == torch.float64 else precond.to(dtype)}
        if defect is not None:
            tensors[DEFECT] = torch.tensor(defect, dtype=torch.float64)
        return tensors

    def preconditioner(self, tensors, penalty):
        P = tensors["precond"]
        if P.dim() == 1:
            return packed_matvec(P)
        if P.dtype == torch.float64:
            return lambda v: P @ v
        return lambda v: (P @ v.to(P.dtype)).to(torch.float64)
