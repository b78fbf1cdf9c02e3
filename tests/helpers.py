"""Helpers used by several tests: independent reference computations (numpy/scipy only, no
miniunlearn code), the in-process command line, and fresh copies of trained runs."""

from __future__ import annotations

import numpy as np
import scipy.optimize


def softmax_objective(X: np.ndarray, y: np.ndarray, n_classes: int, l2: float):
    """F(w) = mean cross-entropy + (l2/2)||w||^2 with w the rows of [W | b], and its gradient."""
    n, d = X.shape
    Xa = np.hstack([X, np.ones((n, 1))])
    Y = np.eye(n_classes)[y]

    def f(w):
        Z = Xa @ w.reshape(n_classes, d + 1).T
        Z = Z - Z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(Z).sum(axis=1))
        P = np.exp(Z - lse[:, None])
        value = np.mean(lse - (Z * Y).sum(axis=1)) + 0.5 * l2 * w @ w
        grad = ((P - Y).T @ Xa / n).ravel() + l2 * w
        return value, grad

    return f


def scipy_optimum(X: np.ndarray, y: np.ndarray, n_classes: int, l2: float) -> np.ndarray:
    """The minimiser of the objective above by scipy's L-BFGS-B, to a tight gradient tolerance."""
    f = softmax_objective(X, y, n_classes, l2)
    w0 = np.zeros(n_classes * (X.shape[1] + 1))
    res = scipy.optimize.minimize(f, w0, jac=True, method="L-BFGS-B",
                                  options={"maxiter": 200000, "maxfun": 400000, "gtol": 1e-13, "ftol": 1e-300,
                                           "maxcor": 50})
    assert np.linalg.norm(f(res.x)[1]) < 1e-8, "reference solver did not converge"
    return res.x


def write_idx(path, array: np.ndarray, gz: bool = True) -> None:
    """Write an idx file (big-endian header, uint8 data) the way the MNIST files are laid out."""
    import gzip

    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    opener = gzip.open if gz else open
    with opener(path, "wb") as handle:
        handle.write(data)


def run_cli(capsys, *args):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    from miniunlearn.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fresh_run(trained, tmp_path):
    """A copy of the run directory ``trained`` under ``tmp_path`` (so its ledger starts empty), opened."""
    import shutil

    from miniunlearn.runs.run import open_run

    path = tmp_path / "run"
    shutil.copytree(trained, path)
    return open_run(path)
