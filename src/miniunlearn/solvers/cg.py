"""Preconditioned conjugate gradients for a symmetric positive definite operator given by products."""

from __future__ import annotations

from typing import Callable

import torch


def preconditioned_cg(hvp: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor,
                      precondition: Callable[[torch.Tensor], torch.Tensor], rtol: float,
                      max_iter: int) -> tuple[torch.Tensor, int]:
    """Solve ``H x = rhs`` from x = 0 until ``||H x - rhs|| <= rtol ||rhs||`` or ``max_iter`` products.

    ``precondition(r)`` applies an approximation of H^-1 (symmetric positive definite).
    Returns ``(x, products used)``.
    """
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = precondition(r)
    p = z.clone()
    rz = float(r @ z)
    target = rtol * float(rhs.norm())
    for k in range(1, max_iter + 1):
        hp = hvp(p)
        alpha = rz / float(p @ hp)
        x += alpha * p
        r -= alpha * hp
        if float(r.norm()) <= target:
            return x, k
        z = precondition(r)
        rz_new = float(r @ z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, max_iter
