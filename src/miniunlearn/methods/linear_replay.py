"""Linearised replay of an SGD trajectory (trajectory-mode runs): the deviation recursion.

This method needs DeltaGrad's full per-iteration history (w_t and g_t for every iteration), so it
is not a minimal-history method; it is here as the trajectory-mode counterpart of the converged
fixed point, and to measure how much of the trajectory a recent window needs.

With w_{t+1} = w_t - eta_t (g_t + lambda w_t) the original trajectory and w^R_t the retrained one
(same batches, forgotten rows removed), the deviation delta_t = w^R_t - w_t obeys, to first order,

    delta_{t+1} = (I - eta_t (H^R_t + lambda I)) delta_t - eta_t (g^R_t(w_t) - g_t),

where H^R_t is the retained batch's mean loss Hessian at w_t and

    g^R_t(w_t) - g_t = (u_t g_t - sum_{i in U cap B_t} grad l_i(w_t)) / (|B_t| - u_t),  u_t = |U cap B_t|,

depends only on the forgotten members of batch t at the recorded w_t (parallel over t). The factor
I - eta (H + lambda I) is the contraction that damps old terms, so a recent ``window`` of W
iterations (delta = 0 before it) may suffice when the contraction is strong (large lambda eta W);
the whole history (window = T) is the full linearised recursion. Reads w_t and g_t for the
window from DeltaGrad's per-iteration history, and the retained rows of the window's batches
(for the Hessian-vector products).
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch

from miniunlearn.core.errors import InputError
from miniunlearn.core.params import Interval, Param
from miniunlearn.methods.interface import UnlearnContext, UnlearningMethod, register


@register
class LinearReplay(UnlearningMethod):
    """The linearised deviation recursion over the last ``window`` SGD iterations (see the module docstring)."""

    name = "linear-replay"
    summary = "linearised replay of the SGD trajectory's deviation (reads DeltaGrad's full history)"
    modes = ("trajectory",)
    parameters = {
        "window": Param(None, Interval(Integral, 1, 10**9), None,
                        help="SGD iterations replayed, the most recent ones; None: all"),
    }

    def unlearn(self, ctx: UnlearnContext):
        return replay_window(ctx, self.window)


def replay_window(ctx: UnlearnContext, window: int | None):
    history = ctx.deltagrad_history()
    schedule = ctx.run.schedule()
    model, lam = ctx.model, ctx.l2
    ds = ctx.dataset
    n = ds.n_train
    T = history.n_iterations
    if T != schedule.n_iterations(n):
        raise InputError(f"DeltaGrad history holds {T} iterations but the schedule has {schedule.n_iterations(n)}")
    W = T if window is None else min(int(window), T)
    start = T - W
    forgotten = np.zeros(n, dtype=bool)
    forgotten[ctx.forget_ids] = True
    X = torch.from_numpy(np.ascontiguousarray(ds.X_train, dtype=np.float64))
    y = torch.from_numpy(np.ascontiguousarray(ds.y_train, dtype=np.int64))
    delta = torch.zeros(model.n_params, dtype=torch.float64)
    rows_forget = rows_retained = 0
    for t, (_, lr, ids) in enumerate(schedule.batches(n)):
        if t < start:
            continue
        w_t, g_t = history.weights[t], history.grads[t]
        gone = ids[forgotten[ids]]
        kept = ids[~forgotten[ids]]
        if len(kept):
            Xk = X[torch.from_numpy(kept)]
            hess_delta = model.hvp_sum(Xk, model.probabilities(w_t, Xk), delta) / len(kept)
            rows_retained += len(kept)
        else:
            hess_delta = torch.zeros_like(delta)
        if len(gone) and len(kept):
            forgotten_sum = model.grad_sum(w_t, X[torch.from_numpy(gone)], y[torch.from_numpy(gone)])
            drift = (len(gone) * g_t - forgotten_sum) / len(kept)
            rows_forget += len(gone)
        elif len(gone):  # the whole batch is forgotten: the retrained step applies weight decay alone
            drift = -g_t
        else:
            drift = torch.zeros_like(delta)
        delta = delta - lr * (hess_delta + lam * delta + drift)
    theta = ctx.original_theta() + delta
    ctx.forget_rows.rows_read += rows_forget
    ctx.retained_rows.rows_read += rows_retained
    ctx.note_history_bytes(history.nbytes * W // max(T, 1))  # only the window was read
    return theta, {"mode": "trajectory", "window": W, "iterations": T}
