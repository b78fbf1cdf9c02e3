"""Fine-tuning on the retained rows: k epochs of mini-batch SGD on F_R, starting from w_T.

    w <- w - eta_k ( (1/|B|) sum_{i in B} grad l_i(w) + lambda w ),   B: batches of a seeded
                                                                       permutation of R, per epoch

with eta_k = eta (1 - k/K) over the K steps of the budget (``lr_schedule="linear"``, the default)
or eta_k = eta (``"constant"``).

This is the training objective restricted to R (the same update rule as trajectory training),
run for a fixed budget instead of to convergence: the usual "fine-tune" unlearning baseline.
It touches no forgotten row and needs no history, and it only removes the forgotten rows'
influence as fast as SGD on F_R contracts towards w_R: quickly along high-curvature directions,
slowly (rate ~ 1 - eta lambda per step) along the flat ones that a deletion mostly moves.
Along those flat directions SGD's gradient noise also accumulates like a random walk; with a
constant step of 1/L that noise exceeded the deletion's own effect on converged Fashion-MNIST
(residual > 1, test accuracy -2.6 points after 5 epochs at batch 256 or 1024), which is why the
default decays the step linearly to zero: the final iterate keeps the model's accuracy.

Options and defaults:
  ``epochs`` (5): passes over R.
  ``lr`` (None): the step size eta. None takes the run's own final SGD learning rate for
      trajectory-mode runs; for converged runs (trained by Newton-CG, so without an SGD step
      size) eta = 1 / L_hat, L_hat = lambda + lambda_max of the mean loss Hessian at w_T,
      estimated by 10 power iterations on a 4096-row subsample of R (the classical 1/L step).
  ``batch_size`` (None): the run's SGD batch size for trajectory runs, 256 otherwise.
  ``lr_schedule`` ("linear"): "linear" decays eta to 0 over the budget, "constant" keeps it.
  ``seed`` (0): the batch order, ``default_rng([seed, 0, epoch]).permutation(|R|)``.

Cost: ``epochs`` passes over R (plus the subsample products of the step-size estimate).
"""

from __future__ import annotations

from numbers import Integral

from miniunlearn.core.params import Interval, Options, Param
from miniunlearn.methods.interface import UnlearnContext, UnlearningMethod, register
from miniunlearn.methods.sgd import BATCH_SIZE, LR, SEED, epoch_batches, estimate_smoothness, take

DEFAULT_BATCH_SIZE = 256


def resolve_sgd_settings(ctx: UnlearnContext, lr: float | None, batch_size: int | None, rows, X, y, theta):
    """(lr, batch size, where lr came from): the options as given, else the run's SGD schedule
    (trajectory runs), else the 1/L step and DEFAULT_BATCH_SIZE (converged runs)."""
    source = "option"
    if ctx.run.mode == "trajectory":
        schedule = ctx.run.schedule()
        if lr is None:
            lr, source = schedule.lr_at(schedule.epochs - 1), "run's final SGD learning rate"
        if batch_size is None:
            batch_size = schedule.batch_size
    if batch_size is None:
        batch_size = DEFAULT_BATCH_SIZE
    if lr is None:
        lr = 1.0 / estimate_smoothness(ctx.model, rows, X, y, theta, ctx.l2)
        source = "1/L estimate"
    return float(lr), int(batch_size), source


@register
class FineTune(UnlearningMethod):
    """Fine-tune: ``epochs`` epochs of mini-batch SGD on the retained objective F_R from w_T
    (see the module docstring for the update and the defaults)."""

    name = "finetune"
    summary = "fine-tune: mini-batch SGD on the retained rows (objective F_R) from w_T for k epochs"

    parameters = {
        "epochs": Param(5, Interval(Integral, 1, 1000), help="passes over R"),
        "lr": LR,
        "batch_size": Param(None, BATCH_SIZE, None, help="rows per batch; None: the run's SGD batch size, or 256"),
        "lr_schedule": Param("linear", Options(("linear", "constant")), help="linear decays the step to 0"),
        "seed": SEED,
    }

    def unlearn(self, ctx: UnlearnContext):
        model, penalty = ctx.model, ctx.penalty
        rows = ctx.retained_rows
        X, y = rows.tensors()
        theta = ctx.original_theta()
        lr, batch_size, source = resolve_sgd_settings(ctx, self.lr, self.batch_size, rows, X, y, theta)
        total = self.epochs * -(-len(y) // batch_size)
        steps = 0
        for epoch in range(self.epochs):
            for positions in epoch_batches(len(y), batch_size, self.seed, epoch):
                Xb, yb = take(rows, X, y, positions)
                grad = model.grad_sum(theta, Xb, yb) / len(positions)
                step = lr * (1.0 - steps / total) if self.lr_schedule == "linear" else lr
                theta = theta - step * (grad + penalty.grad(theta))
                steps += 1
            if ctx.progress is not None:
                ctx.progress(1, info=f"epoch {epoch + 1}/{self.epochs}")
        return theta, {"lr_used": lr, "lr_source": source, "batch_size_used": batch_size, "sgd_steps": steps}
