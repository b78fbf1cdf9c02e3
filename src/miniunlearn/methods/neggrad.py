"""Gradient ascent on the forget set (NegGrad), and its NegGrad+ variant.

NegGrad (the default, ``retain_weight = 0``) climbs the forgotten rows' mean loss from w_T:

    w <- w + eta (1/|B_U|) sum_{i in B_U} grad l_i(w),      B_U: batches of a seeded permutation of U

NegGrad+ (``retain_weight = alpha`` in (0, 1); Kurmanji et al. 2023) descends on a mix of the
retained objective and the negated forget loss, one retained batch per forget batch:

    w <- w - eta [ alpha ( (1/|B_R|) sum_{i in B_R} grad l_i(w) + lambda w )
                   - (1 - alpha) (1/|B_U|) sum_{i in B_U} grad l_i(w) ]

The forget loss is unbounded above, so NegGrad has no fixed point: the budget (``epochs``, ``lr``)
is what stops it, and it removes "enough" only by tuning. It is here because practitioners
compare against it, not because it targets w_R.

Options and defaults:
  ``epochs`` (1): passes over U.
  ``lr`` (None): eta. None takes the run's final SGD learning rate for trajectory runs; for
      converged runs 1 / L_hat, with L_hat estimated as in ``finetune`` on the rows the step
      reads (U for NegGrad, R for NegGrad+).
  ``batch_size`` (None): the whole forget set, i.e. one full-gradient ascent step per epoch,
      so the number of steps does not grow with r (with 256-row batches and a 1/L step, a 30 %
      forget set of Fashion-MNIST took 71 ascent steps and left a 10 %-accuracy model). The
      retained batches of NegGrad+ have the same size.
  ``seed`` (0): batch orders (forget: ``default_rng([seed, 0, epoch])``, retained:
      ``default_rng([seed, 1, k])``).
  ``retain_weight`` (0.0): alpha in [0, 1); 0 = plain NegGrad.

Cost: ``epochs`` passes over U; NegGrad+ also reads one retained batch per forget batch.
"""

from __future__ import annotations

import itertools
from numbers import Integral, Real

from miniunlearn.core.params import Interval, Param
from miniunlearn.methods.interface import UnlearnContext, UnlearningMethod, register
from miniunlearn.methods.finetune import resolve_sgd_settings
from miniunlearn.methods.sgd import BATCH_SIZE, LR, SEED, epoch_batches, take


def _endless_batches(n: int, batch_size: int, seed: int):
    """Batches of R for NegGrad+: epoch after epoch of seeded permutations (stream 1)."""
    for k in itertools.count():
        yield from epoch_batches(n, batch_size, seed, k, stream=1)


@register
class NegGrad(UnlearningMethod):
    """Gradient ascent on the forget set (NegGrad; NegGrad+ with ``retain_weight`` > 0), see the
    module docstring."""

    name = "neggrad"
    summary = "gradient ascent on the forgotten rows (NegGrad; retain_weight > 0: NegGrad+)"

    parameters = {
        "epochs": Param(1, Interval(Integral, 1, 1000), help="passes over U"),
        "lr": LR,
        "batch_size": Param(None, BATCH_SIZE, None, help="rows per batch; None: all of U"),
        "seed": SEED,
        "retain_weight": Param(0.0, Interval(Real, 0, 1, closed="left"), help="alpha of NegGrad+; 0 = NegGrad"),
    }

    def _batch(self, ctx: UnlearnContext) -> int:
        return len(ctx.forget_ids) if self.batch_size is None else self.batch_size

    def unlearn(self, ctx: UnlearnContext):
        model, penalty, alpha = ctx.model, ctx.penalty, self.retain_weight
        theta = ctx.original_theta()
        U = ctx.forget_rows
        X_U, y_U = U.tensors()
        if alpha > 0:
            R = ctx.retained_rows
            X_R, y_R = R.tensors()
            lr, batch_size, source = resolve_sgd_settings(ctx, self.lr, self._batch(ctx), R, X_R, y_R, theta)
            retained_batches = _endless_batches(len(y_R), batch_size, self.seed)
        else:
            lr, batch_size, source = resolve_sgd_settings(ctx, self.lr, self._batch(ctx), U, X_U, y_U, theta)
        steps = 0
        for epoch in range(self.epochs):
            for positions in epoch_batches(len(y_U), batch_size, self.seed, epoch):
                Xb, yb = take(U, X_U, y_U, positions)
                ascent = model.grad_sum(theta, Xb, yb) / len(positions)
                if alpha > 0:
                    retained_positions = next(retained_batches)
                    Xr, yr = take(R, X_R, y_R, retained_positions)
                    descent = model.grad_sum(theta, Xr, yr) / len(retained_positions) + penalty.grad(theta)
                    theta = theta - lr * (alpha * descent - (1.0 - alpha) * ascent)
                else:
                    theta = theta + lr * ascent
                steps += 1
            if ctx.progress is not None:
                ctx.progress(1, info=f"epoch {epoch + 1}/{self.epochs}")
        return theta, {"lr_used": lr, "lr_source": source, "batch_size_used": batch_size, "sgd_steps": steps,
                       "variant": "neggrad+" if alpha > 0 else "neggrad"}
