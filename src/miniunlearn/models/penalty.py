"""The L2 penalty of the objective: on every parameter (weight decay), or on the weights alone.

    P(theta) = (lambda/2) theta^T M theta,   M = I            (the default: biases are penalised too)
                                             M = diag(mask)   (mask 0 at the C biases: an unpenalised
                                                               intercept, as scikit-learn fits it)

The penalty's gradient and Hessian-vector product are both ``lambda M v``. With every parameter
penalised the objective is lambda-strongly convex; without the biases it is strongly convex only
through the data's curvature in the bias directions (see docs/mini-unlearning.md, certificates).
"""

from __future__ import annotations

import torch


class Penalty:
    """``(l2/2) theta^T M theta`` for a model's parameter layout."""

    def __init__(self, model, l2: float, penalize_intercept: bool = True):
        self.l2 = float(l2)
        self.penalize_intercept = bool(penalize_intercept)
        self.mask = None if penalize_intercept else model.weight_mask()

    def grad(self, v: torch.Tensor) -> torch.Tensor:
        """``l2 M v`` (v of shape (p,) or (p, k)); also the penalty's Hessian times v."""
        if self.mask is None:
            return self.l2 * v
        mask = self.mask if v.dim() == 1 else self.mask[:, None]
        return self.l2 * (mask * v)

    def value(self, theta: torch.Tensor) -> float:
        if self.mask is None:
            return 0.5 * self.l2 * float(theta @ theta)
        return 0.5 * self.l2 * float((self.mask * theta) @ theta)

    def diagonal(self, p: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The diagonal of ``l2 M`` as a (p,) tensor."""
        if self.mask is None:
            return torch.full((p,), self.l2, dtype=dtype)
        return (self.l2 * self.mask).to(dtype)

    def project(self, v: torch.Tensor) -> torch.Tensor:
        """Remove the common shift of the biases when they are not penalised (identity otherwise).

        Adding the same number to every class's bias changes no softmax probability and, with a
        free intercept, no penalty either: the objective is flat along that direction. Its
        minimiser is unique on the subspace of zero-mean biases (the gauge this package fixes).
        """
        if self.mask is None:
            return v
        biases = (1.0 - self.mask).bool()
        out = v.clone()
        out[biases] -= v[biases].mean()
        return out

    def gauge(self) -> torch.Tensor | None:
        """The unit vector of the common bias shift (None when every parameter is penalised)."""
        if self.mask is None:
            return None
        direction = 1.0 - self.mask
        return direction / direction.norm()

    @property
    def strong_convexity(self) -> float:
        """The penalty's own strong-convexity constant: l2, or 0 when the biases are free."""
        return self.l2 if self.mask is None else 0.0

    def describe(self) -> dict:
        return {"l2": self.l2, "penalize_intercept": self.penalize_intercept}
