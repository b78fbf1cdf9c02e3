"""Retraining: the gold standard every other method is measured against."""

from __future__ import annotations

from miniunlearn.methods.interface import UnlearnContext, UnlearningMethod, register
from miniunlearn.models.rows import Rows
from miniunlearn.training import TrainConfig, fit


@register
class Retrain(UnlearningMethod):
    """Run the run's own training configuration (zero init, same solver, tolerance or SGD schedule)
    on the retained rows: converged runs minimise F_R from scratch, trajectory runs replay the
    original batches without the forgotten rows."""

    name = "retrain"
    summary = "retrain from scratch on the retained rows with the original configuration"

    def unlearn(self, ctx: UnlearnContext):
        config = TrainConfig.from_dict(ctx.run.config)
        if config.mode == "converged":
            theta, info, _ = fit(ctx.model, ctx.retained_rows, config, progress=ctx.progress)
        else:
            ds = ctx.dataset
            rows = Rows(ds.X_train, ds.y_train, chunk_rows=config.chunk_rows)
            theta, info, _ = fit(ctx.model, rows, config, removed=ctx.forget_ids, progress=ctx.progress)
            # every retained row is read once per epoch (info["passes"] counts passes over all n rows)
            ctx.retained_rows.rows_read += config.sgd.epochs * len(ctx.retained_ids)
        return theta, {"solver": info}
