"""DeltaGrad (Wu, Dobriban & Davidson, "DeltaGrad: Rapid retraining of machine learning models",
ICML 2020, Algorithm 1 in its mini-batch form), for trajectory-mode runs.

Training recorded, for every SGD iteration t = 0..T-1, the iterate w_t and the batch-mean loss
gradient g_t = (1/|B_t|) sum_{i in B_t} grad l_i(w_t) over the FULL batch B_t (no regulariser).
The retrained trajectory replays the same batches without the forgotten rows U:

    w^R_{t+1} = w^R_t - eta_t ( g^R_t(w^R_t) + lambda w^R_t ),
    g^R_t(w)  = (1/|B_t \\ U|) sum_{i in B_t \\ U} grad l_i(w)          (0 if B_t \\ U is empty)

DeltaGrad follows it with iterates w^I_t (w^I_0 = w_0), computing g^R_t(w^I_t) in one of two ways:

* exact step (t < j0, and t = j0 + k T0 after the burn-in): the retained part of the batch is
  read; the full-batch gradient at w^I_t is formed from the retained and forgotten parts, and the
  pair  (s, y) = (w^I_t - w_t,  g_t^full(w^I_t) - g_t)  is kept (the last m pairs);
* approximate step (all other t): with B_t the compact L-BFGS matrix (Byrd, Nocedal & Schnabel
  1994) of the last m pairs, the full-batch gradient is approximated by g_t + B_t (w^I_t - w_t),
  and the forgotten members are removed exactly ("leave-r-out" formula):

      g^R_t ~ ( |B_t| (g_t + B_t (w^I_t - w_t)) - sum_{i in U n B_t} grad l_i(w^I_t) ) / (|B_t| - |U n B_t|)

  This reads only the forgotten rows of the batch.

Both steps then apply the training update with the same learning rate and weight decay, so with
every step exact (``t0=1``) DeltaGrad is retraining, to the last bit.

Numerical safeguards (the paper's L-BFGS is standard; these are the standard L-BFGS guards):

* A pair is kept only if ``s != 0`` and the curvature condition ``s.y > eps ||s|| ||y||`` holds
  (eps = ``CURVATURE_EPS``). The loss Hessian is positive semi-definite, so ``s.y >= 0`` holds in
  exact arithmetic; the guard drops degenerate pairs, above all the one at t = 0, where
  w^I_0 = w_0 gives s = y = 0, and pairs whose y is round-off.
* If no pair is available, or the compact form's 2k x 2k middle matrix is singular, the step is
  done exactly instead (counted in ``fallback_exact_steps``).
* The scale of B_0 = sigma I is sigma = y.s / s.s of the newest pair (as in the authors' code),
  positive by the curvature condition.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch

from miniunlearn.core.errors import RunError
from miniunlearn.core.params import Interval, Param
from miniunlearn.methods.interface import UnlearnContext, UnlearningMethod, register
from miniunlearn.methods.sgd import take

CURVATURE_EPS = 1e-10


class CompactLBFGS:
    """The L-BFGS Hessian approximation of ``k`` pairs in compact form (Byrd, Nocedal & Schnabel 1994,
    Theorem 2.3):

        B = sigma I - [sigma S  Y] M^{-1} [sigma S^T ; Y^T],   M = [[sigma S^T S, L], [L^T, -D]]

    with S = [s_1..s_k], Y = [y_1..y_k] (oldest first), L the strictly lower triangle of S^T Y
    (L_ij = s_i.y_j for i > j), D = diag(s_i.y_i). B equals k BFGS updates of B_0 = sigma I.
    A product ``B v`` costs O(p k) once the 2k x 2k matrix M is factored.
    """

    def __init__(self, S: torch.Tensor, Y: torch.Tensor, sigma: float | None = None):
        if S.shape != Y.shape or S.dim() != 2 or S.shape[1] < 1:
            raise ValueError(f"need S and Y of the same shape (p, k) with k >= 1, "
                             f"got {tuple(S.shape)} and {tuple(Y.shape)}")
        self.S, self.Y = S, Y
        if sigma is None:
            sigma = float(Y[:, -1] @ S[:, -1]) / float(S[:, -1] @ S[:, -1])
        self.sigma = float(sigma)
        SY = S.T @ Y
        L = torch.tril(SY, diagonal=-1)
        D = torch.diag(torch.diagonal(SY))
        M = torch.cat([torch.cat([self.sigma * (S.T @ S), L], dim=1), torch.cat([L.T, -D], dim=1)], dim=0)
        # M is 2k x 2k and indefinite; solve it once (LU) for its inverse, so that a product is two
        # thin matrix-vector products. torch.linalg.LinAlgError when M is singular.
        lu, pivots = torch.linalg.lu_factor(M)
        if not torch.isfinite(lu).all() or (torch.diagonal(lu).abs() == 0).any():
            raise torch.linalg.LinAlgError("compact L-BFGS middle matrix is singular")
        self._M_inv = torch.linalg.lu_solve(lu, pivots, torch.eye(M.shape[0], dtype=M.dtype))
        self._W = torch.cat([self.sigma * S, Y], dim=1).contiguous()  # [sigma S, Y], p x 2k

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``B v = sigma v - W M^{-1} W^T v`` with ``W = [sigma S, Y]``."""
        return self.sigma * v - self._W @ (self._M_inv @ (self._W.T @ v))


def is_exact_step(t: int, t0: int, j0: int) -> bool:
    """Algorithm 1's schedule: exact during the burn-in t < j0, then at t = j0, j0 + T0, j0 + 2 T0, ..."""
    return t < j0 or (t - j0) % t0 == 0


def curvature_ok(s: torch.Tensor, y: torch.Tensor, eps: float = CURVATURE_EPS) -> bool:
    """Keep the pair only if s != 0 and s.y > eps ||s|| ||y|| (see the module docstring)."""
    s_norm, y_norm = float(s.norm()), float(y.norm())
    return s_norm > 0.0 and y_norm > 0.0 and float(s @ y) > eps * s_norm * y_norm


def leave_r_out(g_full: torch.Tensor, gone_sum: torch.Tensor, batch: int, kept: int) -> torch.Tensor:
    """The retained mean gradient from the full-batch mean and the forgotten rows' sum:
    (|B| g_full - sum_{U n B} grad l_i) / (|B| - |U n B|); 0 for a batch with no retained row."""
    if kept == 0:
        return torch.zeros_like(g_full)
    return (batch * g_full - gone_sum) / kept


class PairMemory:
    """The last ``m`` accepted (s, y) pairs and the compact L-BFGS model built from them."""

    def __init__(self, m: int):
        self.m = m
        self.S: list[torch.Tensor] = []
        self.Y: list[torch.Tensor] = []
        self.model: CompactLBFGS | None = None
        self.kept = 0
        self.skipped = 0

    def add(self, s: torch.Tensor, y: torch.Tensor) -> None:
        if not curvature_ok(s, y):
            self.skipped += 1
            return
        self.S.append(s)
        self.Y.append(y)
        del self.S[:-self.m], self.Y[:-self.m]
        self.kept += 1
        try:
            self.model = CompactLBFGS(torch.stack(self.S, dim=1), torch.stack(self.Y, dim=1))
        except torch.linalg.LinAlgError:
            self.model = None  # singular middle matrix: the next steps are done exactly


def _gradient_sum(model, w: torch.Tensor, rows, X: torch.Tensor, y: torch.Tensor, row_ids: np.ndarray,
                  wanted: np.ndarray) -> torch.Tensor:
    """sum_{i in wanted} grad l_i(w) over the dataset ids ``wanted`` of a sorted id set ``row_ids``
    whose rows are ``(X, y)``; the reads are counted in ``rows``."""
    if len(wanted) == 0:
        return torch.zeros_like(w)
    Xb, yb = take(rows, X, y, np.searchsorted(row_ids, wanted))
    return model.grad_sum(w, Xb, yb)


@register
class DeltaGrad(UnlearningMethod):
    """DeltaGrad (Wu et al. 2020): replay the SGD trajectory without the forgotten rows, computing the
    retained gradient exactly every ``t0``-th iteration after ``j0`` burn-in iterations and from an
    L-BFGS model of the last ``m`` (Delta w, Delta g) pairs otherwise (see the module docstring).

    Options: ``t0`` (T0, period of exact steps, default 5; 1 = every step exact = retraining),
    ``j0`` (burn-in of exact steps, default 20), ``m`` (L-BFGS pairs kept, default 2).

    Cost: one pass over the full history (2 T p floats); the forgotten rows once per epoch;
    the retained rows of the batches at exact steps only (about
    (j0 + (T - j0) / T0) / T of retraining's passes).
    """

    name = "deltagrad"
    summary = "DeltaGrad (Wu et al. 2020): trajectory replay with L-BFGS approximated retained gradients"
    modes = ("trajectory",)

    parameters = {
        "t0": Param(5, Interval(Integral, 1, 1_000_000), help="period of exact steps (1 = every step = retraining)"),
        "j0": Param(20, Interval(Integral, 0, 1_000_000), help="burn-in of exact steps"),
        "m": Param(2, Interval(Integral, 1, 100), help="L-BFGS pairs kept"),
    }

    def unlearn(self, ctx: UnlearnContext):
        model, l2 = ctx.model, ctx.l2
        schedule = ctx.run.schedule()
        n = ctx.n_train
        history = ctx.deltagrad_history()
        ctx.note_history_bytes(history.nbytes)
        T = schedule.n_iterations(n)
        if history.n_iterations != T or history.weights.shape[1] != model.n_params:
            raise RunError(f"DeltaGrad history of run {ctx.run.path} holds {history.n_iterations} iterations of "
                           f"{history.weights.shape[1]} parameters, but the run's schedule has {T} iterations of "
                           f"{model.n_params}; the history is corrupted or belongs to another run")

        forget_rows, retained_rows = ctx.forget_rows, ctx.retained_rows
        X_U, y_U = forget_rows.tensors()
        X_R, y_R = retained_rows.tensors()
        forgotten = np.zeros(n, dtype=bool)
        forgotten[ctx.forget_ids] = True

        memory = PairMemory(self.m)
        counts = {"exact_steps": 0, "approximate_steps": 0, "fallback_exact_steps": 0}
        check_errors: list[float] = []  # ||B s - y|| / ||y|| at exact steps: a free diagnostic of the model

        w = history.weights[0].clone()
        for t, (epoch, lr, ids) in enumerate(schedule.batches(n)):
            gone_mask = forgotten[ids]
            kept_ids, gone_ids = ids[~gone_mask], ids[gone_mask]
            s, g_t = w - history.weights[t], history.grads[t]
            # the forgotten members of the batch are read in every step, exactly
            gone_sum = _gradient_sum(model, w, forget_rows, X_U, y_U, ctx.forget_ids, gone_ids)
            exact = is_exact_step(t, self.t0, self.j0)
            if not exact and memory.model is None:
                exact = True
                counts["fallback_exact_steps"] += 1
            if exact:
                counts["exact_steps"] += 1
                kept_sum = _gradient_sum(model, w, retained_rows, X_R, y_R, ctx.retained_ids, kept_ids)
                y = (kept_sum + gone_sum) / len(ids) - g_t  # full-batch gradient change, as g_t is full-batch
                if memory.model is not None and float(y.norm()) > 0:
                    check_errors.append(float((memory.model.matvec(s) - y).norm() / y.norm()))
                memory.add(s, y)
                g_retained = kept_sum / len(kept_ids) if len(kept_ids) else torch.zeros_like(w)
            else:
                counts["approximate_steps"] += 1
                g_retained = leave_r_out(g_t + memory.model.matvec(s), gone_sum, len(ids), len(kept_ids))
            w = w - lr * (g_retained + l2 * w)
            if ctx.progress is not None:
                ctx.progress(1, info=f"iteration {t + 1}/{T}")

        stats = {"iterations": T, **counts, "pairs_kept": memory.kept, "pairs_skipped": memory.skipped,
                 "t0": self.t0, "j0": self.j0, "m": self.m}
        if check_errors:
            stats["lbfgs_relative_error_median"] = float(np.median(check_errors))
            stats["lbfgs_relative_error_max"] = float(np.max(check_errors))
        return w, stats
