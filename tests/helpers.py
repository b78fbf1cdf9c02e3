"""Helpers used by several tests: independent reference computations (numpy/scipy only, no
miniunlearn code), the in-process command line, and fresh copies of trained runs."""

from __future__ import annotations

import numpy as np
import scipy.optimize


def softmax_objective(X: np.ndarray, y: np.ndarray, n_classes: int, l2: float, penalize_intercept: bool = True):
    """F(w) = mean cross-entropy + (l2/2) w^T M w with w the rows of [W | b] (M = I, or zero at the
    biases), and its gradient."""
    n, d = X.shape
    Xa = np.hstack([X, np.ones((n, 1))])
    Y = np.eye(n_classes)[y]
    mask = np.ones((n_classes, d + 1))
    if not penalize_intercept:
        mask[:, -1] = 0.0
    mask = mask.ravel()

    def f(w):
        Z = Xa @ w.reshape(n_classes, d + 1).T
        Z = Z - Z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(Z).sum(axis=1))
        P = np.exp(Z - lse[:, None])
        value = np.mean(lse - (Z * Y).sum(axis=1)) + 0.5 * l2 * (mask * w) @ w
        grad = ((P - Y).T @ Xa / n).ravel() + l2 * mask * w
        return value, grad

    return f


def softmax_hessian(X: np.ndarray, n_classes: int, l2: float, w: np.ndarray, penalize_intercept: bool = True):
    """The dense Hessian of the objective above at w."""
    n, d = X.shape
    Xa = np.hstack([X, np.ones((n, 1))])
    Z = Xa @ w.reshape(n_classes, d + 1).T
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    d1 = d + 1
    H = np.zeros((n_classes * d1, n_classes * d1))
    for c in range(n_classes):
        for k in range(n_classes):
            weight = P[:, c] * ((c == k) - P[:, k])
            H[c * d1:(c + 1) * d1, k * d1:(k + 1) * d1] = (Xa * weight[:, None]).T @ Xa / n
    mask = np.ones((n_classes, d1))
    if not penalize_intercept:
        mask[:, -1] = 0.0
    return H + l2 * np.diag(mask.ravel())


def reference_optimum(X: np.ndarray, y: np.ndarray, n_classes: int, l2: float,
                      penalize_intercept: bool = True) -> tuple[np.ndarray, float]:
    """The minimiser by scipy's L-BFGS-B, polished by dense Newton steps; returns it with a bound
    on its own distance to the true minimiser (||grad F|| / l2, strong convexity).

    Without a penalised intercept the biases are only defined up to a common shift: the reference
    is the minimiser with zero-mean biases (which the steps keep), and its error bound uses the
    smallest eigenvalue of the Hessian on that subspace.
    """
    f = softmax_objective(X, y, n_classes, l2, penalize_intercept)
    C, d1 = n_classes, X.shape[1] + 1
    # L-BFGS-B to get close (capped: on near-separable data with a tiny l2 it crawls), then dense
    # Newton steps with backtracking, which converge quadratically from there
    res = scipy.optimize.minimize(f, np.zeros(C * d1), jac=True, method="L-BFGS-B",
                                  options={"maxiter": 300, "maxfun": 600, "gtol": 1e-13, "ftol": 1e-300,
                                           "maxcor": 50})
    w, (value, g) = res.x, f(res.x)
    gauge = np.zeros((C, d1))
    gauge[:, -1] = 1.0 / np.sqrt(C)
    gauge = gauge.ravel()  # the common bias shift, a null direction when the intercept is free
    for _ in range(300):
        if np.linalg.norm(g) <= 1e-14:
            break
        H = softmax_hessian(X, C, l2, w, penalize_intercept)
        if not penalize_intercept:
            H = H + np.outer(gauge, gauge)
        step = -np.linalg.solve(H, g)
        if not penalize_intercept:
            step -= gauge * (gauge @ step)
        t, improved = 1.0, False
        while t > 1e-10:
            value2, g2 = f(w + t * step)
            if value2 <= value + 1e-4 * t * (g @ step) or np.linalg.norm(g2) < np.linalg.norm(g):
                improved = True
                break
            t *= 0.5
        if not improved:
            break
        w, value, g = w + t * step, value2, g2
    if not penalize_intercept:
        w = w - gauge * (gauge @ w)
        H = softmax_hessian(X, C, l2, w, False) + np.outer(gauge, gauge)
        mu = np.linalg.eigvalsh(H)[0]
    else:
        mu = l2
    return w, float(np.linalg.norm(g)) / mu


def scipy_optimum(X: np.ndarray, y: np.ndarray, n_classes: int, l2: float) -> np.ndarray:
    """The minimiser of the objective above, polished to machine precision (see :func:`reference_optimum`)."""
    w, error = reference_optimum(X, y, n_classes, l2)
    assert error < 1e-6, f"reference solver did not converge (error bound {error:.2e})"
    return w


def documented_u(key: str, seed: int) -> float:
    """u(key) of the held-out draw by key, as docs/own-data.md and data/split.py state it: BLAKE2b with an
    8-byte digest of the key's text, keyed by the seed (8 bytes, little-endian), top 53 bits over 2^53.
    A key is held out when u(key) < test_size."""
    import hashlib

    digest = hashlib.blake2b(key.encode(), digest_size=8, key=int(seed).to_bytes(8, "little"),
                             person=b"miniunlearn-test").digest()
    return (int.from_bytes(digest, "big") >> 11) / 2.0**53


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

    from miniunlearn.runs import open_run

    path = tmp_path / "run"
    shutil.copytree(trained, path)
    return open_run(path)
