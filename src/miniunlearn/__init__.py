"""miniunlearn: machine unlearning from a minimal training history.

Train a model while recording a minimal history, then remove any subset of its training data
fast and show that the result is what retraining would give.

The public API mirrors the command line:

>>> from miniunlearn import load_dataset, train, forget               # doctest: +SKIP
>>> run = train(load_dataset("digits"), l2=1e-3, out="runs/digits")  # doctest: +SKIP
>>> result = forget(run, [0, 5, 9], method="mini", out="runs/digits-mini")  # doctest: +SKIP

Your own data: ``Dataset.from_arrays(X, y, ids=...)`` (arrays or DataFrames), the file specs
``csv:``, ``parquet:``, ``npz:``, ``svmlight:``, and the scikit-learn estimator
``UnlearningLogisticRegression`` (docs/own-data.md).
"""

from importlib import import_module

from miniunlearn.core.errors import MiniUnlearnError

__version__ = "0.1.0"

# name -> module: imported on first use, so `import miniunlearn` (and `--help`) stays fast
_LAZY = {
    "load_dataset": "miniunlearn.data",
    "Dataset": "miniunlearn.data",
    "UnlearningLogisticRegression": "miniunlearn.estimator",
    "UnlearningPipeline": "miniunlearn.estimator",
    "forget_pipeline": "miniunlearn.estimator",
    "train": "miniunlearn.runs",
    "open_run": "miniunlearn.runs",
    "forget": "miniunlearn.service",
}

__all__ = ["MiniUnlearnError", "__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'miniunlearn' has no attribute {name!r}")
