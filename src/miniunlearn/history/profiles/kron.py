"""``kron``: exact curvature in the top-k directions of the features, class-coupled curvature in the rest.

With x~_i = [x_i, 1], A_i = diag(p_i) - p_i p_i^T and U (d1 x d1, d1 = d + 1) the eigenvectors of
the curvature-weighted Gram G = sum_i tr(A_i) x~_i x~_i^T (largest first), the Hessian in the
rotated coordinates W = Theta U is sum_i A_i (x) z_i z_i^T with z_i = U^T x~_i. The profile keeps

    top  = ((1/n) sum_i A_i (x) z_i[:k] z_i[:k]^T + lambda I)^-1       (C k x C k, packed)
    tail = ((1/n) sum_i A_i z_ij^2 + lambda I)^-1,  j = k .. d1 - 1      (one C x C matrix each, packed)

and drops the coupling between different rotated directions outside the top block. Bytes:
``s (d1^2 + Ck(Ck+1)/2 + (d1-k) C(C+1)/2)`` for itemsize s; k = 0 is an eigenbasis K-FAC (EK-FAC).
Every kept block has zero row sums in the class index before lambda is added, so the softmax's
flat direction (one vector added to every class) is handled exactly. Applying P costs two
(C x d1)(d1 x d1) products, one (Ck)^2 matrix-vector product and d1 - k tiny C x C ones.

Build (at most ``max_rows`` rows, evenly spaced): one weighted Gram (n d1^2), the rotation
(n d1^2), the top block (n (Ck)^2) and the tail (n d1 C^2); float32 products, float64 sums.
"""

from __future__ import annotations

import math
from numbers import Integral

import torch

from miniunlearn.core.params import Interval, Param
from miniunlearn.history.profiles.interface import (
    DTYPE_OPTION,
    CurvatureProfile,
    itemsize,
    pack_symmetric,
    packed_side,
    packed_size,
    register,
    torch_dtype,
    unpack_symmetric,
)

MAX_TOP = 2800  # the top block's side C k at most, unless k is given (build n (Ck)^2, bytes (Ck)^2)
SUB_CHUNK = 1024  # rows per product in the build (the tail's n x C^2 outer products stay small)
F64, F32 = torch.float64, torch.float32


def _triu(C: int) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.triu_indices(C, C))


@register
class KronProfile(CurvatureProfile):
    name = "kron"
    summary = "exact curvature in the top-k feature directions, one C x C block per other direction"
    preference = 50
    parameters = {
        "k": Param(None, Interval(Integral, 0, 1 << 20), None,
                   help=f"feature directions kept with exact curvature; None: as many as C k <= {MAX_TOP}"),
        "dtype": Param("float16", DTYPE_OPTION, help="storage precision (float16 costs nothing measurable)"),
        "max_rows": Param(32768, Interval(Integral, 1, 1 << 40), None,
                          help="build from at most this many rows, evenly spaced (None: all)"),
    }
    tensor_names = ("basis", "top", "tail", "scales")

    def top_k(self, model) -> int:
        d1 = model.n_features + 1
        return min(d1, MAX_TOP // model.n_classes if self.k is None else self.k)

    @staticmethod
    def bytes_for(model, k: int, dtype: str) -> int:
        C, d1 = model.n_classes, model.n_features + 1
        return itemsize(dtype) * (d1 * d1 + packed_size(C * k) + (d1 - k) * packed_size(C)) + 16

    def stored_bytes(self, model) -> int:
        return self.bytes_for(model, self.top_k(model), self.dtype)

    def build_bytes(self, model) -> int:
        C, d1, k = model.n_classes, model.n_features + 1, self.top_k(model)
        return 8 * (3 * d1 * d1 + 2 * (C * k) ** 2 + 2 * (d1 - k) * C * C) + 4 * SUB_CHUNK * (C * C + C * k + d1)

    @classmethod
    def fit_budget(cls, model, budget, memory_budget):
        most = cls().top_k(model)
        for k in range(most, -1, -1):
            if cls.bytes_for(model, k, "float16") <= budget:
                profile = cls(k=k)
                if profile.build_bytes(model) <= memory_budget:
                    return profile
        return None

    def build(self, objective, theta):
        model, rows = objective.model, objective.rows
        C, d1, k = model.n_classes, model.n_features + 1, self.top_k(model)
        stride = 1 if self.max_rows is None else max(1, math.ceil(len(rows) / self.max_rows))

        def chunks():
            for X, _ in rows.iter_chunks():
                X = X[::stride]
                Xa = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1)
                for s in range(0, len(X), SUB_CHUNK):
                    part = Xa[s:s + SUB_CHUNK]
                    yield part, model.probabilities(theta, part[:, :-1])

        gram = torch.zeros(d1, d1, dtype=F64)
        used = 0
        for Xa, P in chunks():
            S = (Xa * (P * (1.0 - P)).sum(dim=1, keepdim=True).sqrt()).to(F32)
            gram += (S.T @ S).to(F64)
            used += len(Xa)
        rows.rows_read += used
        _, U = torch.linalg.eigh(gram)
        U = U.flip(1).contiguous()
        U32 = U.to(F32)
        q = C * k
        top = torch.zeros(q, q, dtype=F64)
        top_diag = torch.zeros(k, q, dtype=F64)
        tail = torch.zeros(d1 - k, C * C, dtype=F64)
        tail_diag = torch.zeros(d1 - k, C, dtype=F64)
        for Xa, P in chunks():
            Z = Xa.to(F32) @ U32
            P32 = P.to(F32)
            if k:
                Zk = Z[:, :k]
                kron = (P32[:, :, None] * Zk[:, None, :]).reshape(len(Z), q)
                top -= (kron.T @ kron).to(F64)
                top_diag += (Zk.T @ kron).to(F64)
            Z2 = Z[:, k:].square()
            tail_diag += (Z2.T @ P32).to(F64)
            tail -= (Z2.T @ (P32[:, :, None] * P32[:, None, :]).reshape(len(Z), C * C)).to(F64)
        rows.rows_read += used
        l2 = objective.penalty.l2
        tail = tail.view(d1 - k, C, C) + torch.diag_embed(tail_diag)
        tail = tail / used + l2 * torch.eye(C, dtype=F64)
        tail_inv = torch.linalg.inv(tail)
        tail_inv = 0.5 * (tail_inv + tail_inv.transpose(1, 2))
        iu = _triu(C)
        tail_packed = tail_inv[:, iu[0], iu[1]]
        if k:
            for c in range(C):
                top[c * k:(c + 1) * k, c * k:(c + 1) * k] += top_diag[:, c * k:(c + 1) * k]
            top /= used
            top.diagonal().add_(l2)
            top_inv = torch.cholesky_inverse(torch.linalg.cholesky(top))
            top_inv = 0.5 * (top_inv + top_inv.T)
            top_scale = float(top_inv.abs().max())
        else:
            top_inv, top_scale = torch.zeros(0, 0, dtype=F64), 1.0
        tail_scale = float(tail_packed.abs().max()) if tail_packed.numel() else 1.0
        dtype = torch_dtype(self.dtype)
        self.info = {"k": k, "rows_used": used}
        return {"basis": U.to(dtype), "top": pack_symmetric(top_inv / top_scale, dtype),
                "tail": (tail_packed / tail_scale).to(dtype),
                "scales": torch.tensor([top_scale, tail_scale], dtype=F64)}

    def preconditioner(self, tensors, penalty):
        U = tensors["basis"].to(F64)
        d1 = U.shape[0]
        top_scale, tail_scale = (float(s) for s in tensors["scales"])
        top = unpack_symmetric(tensors["top"]) * top_scale
        packed_tail = tensors["tail"].to(F64) * tail_scale
        C = packed_side(packed_tail.shape[1])
        k = top.shape[0] // C
        tail = torch.empty(d1 - k, C, C, dtype=F64)
        iu = _triu(C)
        tail[:, iu[0], iu[1]] = packed_tail
        tail[:, iu[1], iu[0]] = packed_tail

        def apply(v: torch.Tensor) -> torch.Tensor:
            W = v.view(C, d1) @ U
            out = torch.empty_like(W)
            if k:
                out[:, :k] = (top @ W[:, :k].reshape(-1)).view(C, k)
            out[:, k:] = torch.bmm(tail, W[:, k:].T.unsqueeze(2)).squeeze(2).T
            return (out @ U.T).reshape(-1)

        return apply
