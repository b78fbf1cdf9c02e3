"""``classblock``: the exact curvature of each class's own parameters, one (d+1) x (d+1) block per class.

With x~_i = [x_i, 1] and p_i the softmax probabilities at w_T, the mean loss Hessian's block of
class c with itself is ``B_c = (1/n) sum_i p_ic (1 - p_ic) x~_i x~_i^T``. The profile keeps
``(B_c + lambda I)^-1`` for every class and drops the coupling between classes, except along the
directions the softmax cannot see: adding one vector u to every class's weights changes no
probability, so on that subspace the Hessian is lambda I exactly. With F the class mean broadcast
((F v)_c = mean_c' v_c') and Q = I - F,

    P v = Q blockdiag((B_c + lambda I)^-1) Q v + F v / lambda.

Leaving F out costs most of what the blocks buy: the blocks see curvature sum_c p_c (1 - p_c) > 0
where the softmax has none, and CG then spends its iterations there.

Against ``kron``: ``kron`` keeps the class coupling but approximates the feature directions; this
profile keeps every feature direction of a class exactly. With many classes, where each class's
rows have their own covariance, it is the better preconditioner (docs/mini-unlearning.md, the
history frontier); the budget's choice follows that (:meth:`ClassBlockProfile.fit_budget`).
Bytes: ``s C (d+1)(d+2)/2`` for itemsize s. Like ``kron``, lambda is added to every coordinate,
the biases too when they are not penalised: P is a preconditioner there, never trusted.

Build: one pass finds each class's weight threshold, the ``rows``-th largest p_ic (1 - p_ic) (a
running top list, so memory does not grow with n), and a second adds each row to the blocks of
the classes whose threshold it reaches (every row when ``rows`` is None): ``C rows (d+1)^2``
multiply-adds in float32, float64 sums. A block summed from its heaviest rows is then scaled to
the trace of the block of all rows, so that it does not understate the curvature it stands for
(an understated block overshoots the influence step). The weights fall off fast away from a
class, so a class's heaviest rows carry most of its block (a uniform sample of the same size does
not: it keeps too few of them).
"""

from __future__ import annotations

from numbers import Integral

import torch

from miniunlearn.core.params import Interval, Param
from miniunlearn.history.profiles.interface import (
    DTYPE_OPTION,
    CurvatureProfile,
    itemsize,
    pack_symmetric,
    packed_matvec,
    packed_side,
    packed_size,
    register,
    torch_dtype,
)
from miniunlearn.history.profiles.kron import KronProfile

F64, F32 = torch.float64, torch.float32
KRON_COVERAGE = 0.25  # the budget prefers kron where its exact top block spans this share of the directions
MIN_CLASSES = 15  # ... and below this many classes (measured: 3 and 10 classes worse than kron, 15 and 100 better)


def pack_blocks(blocks: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric (C, m, m) blocks packed one by one (:func:`pack_symmetric`), each scaled to max |.| = 1."""
    scales = blocks.abs().amax(dim=(1, 2)).clamp_min(torch.finfo(F64).tiny)
    return torch.stack([pack_symmetric(block / scale, dtype) for block, scale in zip(blocks, scales)]), scales


@register
class ClassBlockProfile(CurvatureProfile):
    name = "classblock"
    summary = "exact curvature of each class's own weights, one (d+1) x (d+1) block per class"
    preference = 60
    parameters = {
        "dtype": Param("float32", DTYPE_OPTION, help="storage precision of the blocks"),
        "rows": Param(16384, Interval(Integral, 1, 1 << 40), None,
                      help="each class's block from at most this many rows, its heaviest (None: all)"),
    }
    tensor_names = ("blocks", "scales")

    def stored_bytes(self, model) -> int:
        C, d1 = model.n_classes, model.n_features + 1
        return itemsize(self.dtype) * C * packed_size(d1) + 8 * C

    def build_bytes(self, model) -> int:
        C, d1 = model.n_classes, model.n_features + 1
        # the C sums in float64, as much again while they are packed, one block's inversion; per chunk of rows
        # only its weights (the heaviest rows are found chunk by chunk, so nothing grows with n)
        return 16 * C * d1 * d1 + 24 * d1 * d1 + 8 * (self.rows or 0) * C

    @classmethod
    def fit_budget(cls, model, budget, memory_budget):
        # Few classes: kron's exact top block then spans a good part of the feature directions and keeps the
        # class coupling these blocks drop, and it needs fewer passes (Fashion-MNIST, C = 10: kron's top block
        # spans 280 of 785 directions, 7-10 passes against 14-16 here). With many classes it spans a sliver
        # (C = 100, d = 1,000: 28 of 1,001) and these blocks win (7-9 passes against 21-26). Dropping the
        # coupling also understates the curvature by up to a factor C / (C - 1) (2 for two classes), so
        # few classes never get these blocks, however many features.
        if model.n_classes < MIN_CLASSES or KronProfile().top_k(model) >= KRON_COVERAGE * (model.n_features + 1):
            return None
        for dtype in ("float32", "float16"):
            profile = cls(dtype=dtype)
            if profile.stored_bytes(model) <= budget and profile.build_bytes(model) <= memory_budget:
                return profile
        return None

    def build(self, objective, theta):
        model, rows = objective.model, objective.rows
        C, d1, n = model.n_classes, model.n_features + 1, len(rows)
        keep_all = self.rows is None or self.rows >= n

        def chunks():
            for X, _ in rows.iter_chunks():
                P = model.probabilities(theta, X)
                yield X, (P * (1.0 - P)).to(F32), X.to(F64).square().sum(dim=1) + 1.0

        # pass 1: each class's weight threshold (its rows-th largest, from a running top list) and the trace
        # of the block of all rows, sum_i w_ic ||x~_i||^2
        whole = torch.zeros(C, dtype=F64)
        top = torch.empty(0, C, dtype=F32)
        for _, weights, norms in chunks():
            whole += weights.to(F64).T @ norms
            if not keep_all:
                top = torch.cat([top, weights]).topk(min(self.rows, len(top) + len(weights)), dim=0).values
        rows.rows_read += n
        threshold = None if keep_all else top[-1]
        # pass 2: each class's block from the rows at or above its threshold, and their share of the trace
        sums = torch.zeros(C, d1, d1, dtype=F64)
        kept = torch.zeros(C, dtype=F64)
        used = torch.zeros(C, dtype=torch.long)
        for X, weights, norms in chunks():
            Xa = torch.cat([X.to(F32), torch.ones(len(X), 1, dtype=F32)], dim=1)
            chosen = torch.ones_like(weights, dtype=torch.bool) if keep_all else weights >= threshold
            kept += (weights * chosen).to(F64).T @ norms
            used += chosen.sum(dim=0)
            for c in range(C):
                take = chosen[:, c]
                Z = Xa[take] * weights[take, c, None].sqrt()
                if len(Z):
                    sums[c] += (Z.T @ Z).to(F64)
        rows.rows_read += n
        # a block summed from some rows understates its curvature (and overshoots the influence step):
        # scale it to the trace of the block of all rows
        scale = (whole / kept.clamp_min(torch.finfo(F64).tiny)).where(kept > 0, torch.ones_like(whole))
        identity = objective.penalty.l2 * torch.eye(d1, dtype=F64)
        for c in range(C):
            block = sums[c] * scale[c] / n + identity
            inverse = torch.cholesky_inverse(torch.linalg.cholesky(block))
            sums[c] = 0.5 * (inverse + inverse.T)
        packed, scales = pack_blocks(sums, torch_dtype(self.dtype))
        self.info = {"rows_per_class": int(used.max())}
        return {"blocks": packed, "scales": scales}

    def preconditioner(self, tensors, penalty):
        # One packed symmetric product (BLAS spmv) per class, straight from the stored triangles: unpacking
        # them first cost more than a whole solve's products (0.7 s for C = 100, d = 1,000).
        packed = tensors["blocks"]
        if packed.dtype == torch.float16:
            packed = packed.to(F32)
        products = [packed_matvec(block, scale) for block, scale in zip(packed, tensors["scales"].tolist())]
        C, d1, l2 = len(products), packed_side(packed.shape[1]), penalty.l2

        def apply(v: torch.Tensor) -> torch.Tensor:
            V = v.view(C, d1)
            shared = V.mean(dim=0, keepdim=True)
            rest = V - shared
            out = torch.stack([product(rest[c]) for c, product in enumerate(products)])
            return (out - out.mean(dim=0, keepdim=True) + shared / l2).reshape(-1)

        return apply
