"""miniunlearn: machine unlearning from a minimal training history.

Train a model while recording a minimal history, then remove any subset of its
training data fast and show that the result is what retraining would give.

The public API mirrors the command line:

>>> from miniunlearn import load_dataset, train, open_run           # doctest: +SKIP
>>> run = train(load_dataset("digits"), l2=1e-3, out="runs/digits")  # doctest: +SKIP
"""

from miniunlearn.errors import MiniUnlearnError

__version__ = "0.1.0"

__all__ = ["MiniUnlearnError", "__version__", "load_dataset", "train", "open_run", "forget"]


def __getattr__(name):
    # Lazy re-exports keep `import miniunlearn` (and `--help`) fast: torch loads on first use.
    if name == "load_dataset":
        from miniunlearn.data import load_dataset

        return load_dataset
    if name == "train":
        from miniunlearn.training import train

        return train
    if name == "open_run":
        from miniunlearn.run import open_run

        return open_run
    if name == "forget":
        from miniunlearn.methods import forget

        return forget
    raise AttributeError(f"module 'miniunlearn' has no attribute {name!r}")
