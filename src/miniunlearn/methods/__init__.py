"""Unlearning methods behind one interface (see :mod:`miniunlearn.methods.base`).

``forget(run, ids, method="mini", out=DIR)`` validates the request, runs the method, measures
it and (optionally) writes ``DIR/model.safetensors`` and ``DIR/result.json``.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import numpy as np

from miniunlearn.methods.base import (UnlearnContext, UnlearningMethod, UnlearnResult, get_method, make_method,
                                      method_names, register)

__all__ = ["forget", "UnlearnContext", "UnlearningMethod", "UnlearnResult", "get_method", "make_method",
           "method_names", "register", "RESULT_JSON"]

RESULT_JSON = "result.json"

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base" and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")


def forget(run, forget_ids, method: str = "mini", out: str | Path | None = None, workers: int = 1,
           overwrite: bool = False, progress=None, already_forgotten: np.ndarray | None = None,
           **options) -> UnlearnResult:
    """Remove the training rows ``forget_ids`` from ``run``'s model with ``method``.

    ``run`` is a :class:`~miniunlearn.run.Run` or a run directory. Bad requests (empty, out of
    range, duplicated, every row, already forgotten) raise :class:`~miniunlearn.errors.InputError`
    before anything is computed or written.
    """
    import torch

    from miniunlearn.errors import InputError
    from miniunlearn.ids import validate_forget_ids
    from miniunlearn.measure import measure
    from miniunlearn.run import Run, prepare_output_dir, save_model
    from miniunlearn.storage import atomic_write_json

    if not isinstance(run, Run):
        run = Run(run)
    if int(workers) < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    ids = validate_forget_ids(np.asarray(forget_ids), run.n_train, already_forgotten)
    algorithm = make_method(method, **options)
    algorithm.check_run(run)
    if out is not None:
        out = prepare_output_dir(out, RESULT_JSON, overwrite)
    _ = run.dataset  # load and fingerprint-check the data before timing the method
    ctx = UnlearnContext(run, ids, workers=int(workers), progress=progress)
    with measure() as timing:
        produced = algorithm.unlearn(ctx)
    theta, extra = produced if isinstance(produced, tuple) else (produced, {})
    if not torch.isfinite(theta).all():
        raise InputError(f"method {method!r} produced non-finite parameters; try other options")
    stats = {
        "n_train": run.n_train,
        "n_forget": int(len(ids)),
        "ratio": len(ids) / run.n_train,
        **timing.as_dict(),
        "passes_forget": ctx.passes_forget,
        "passes_retained": ctx.passes_retained,
        "history_bytes_read": ctx.history_bytes_read,
        "threads": torch.get_num_threads(),
        "workers": int(workers),
        **extra,
    }
    result = UnlearnResult(theta, method, algorithm.options(), stats)
    if out is not None:
        save_model(out, run.model, theta, {"source": f"forget:{method}"})
        atomic_write_json(Path(out) / RESULT_JSON, {"run": str(run.path.resolve()), "forget_ids_sha256":
                                                    _ids_digest(ids), **result.summary()})
    return result


def _ids_digest(ids: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes()).hexdigest()
