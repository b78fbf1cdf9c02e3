"""Fingerprints tie a run's history to the exact training data it was computed on."""

from __future__ import annotations

import contextlib
import hashlib

import numpy as np

from miniunlearn.core.progress import progress_bar

_CHUNK_ROWS = 1 << 16
_PROGRESS_ROWS = 1 << 22  # show a progress bar for sets this large (HIGGS: ~10 s of hashing)


def fingerprint_arrays(X: np.ndarray, y: np.ndarray, n_classes: int) -> str:
    """SHA-256 of the shapes, the labels (row order = ids) and the features in float64.

    Labels and features are hashed in row chunks (the digest is that of the concatenated
    bytes either way), so a memory-mapped set is never copied whole.
    """

    digest = hashlib.sha256()
    digest.update(f"rows={X.shape[0]};features={X.shape[1]};classes={n_classes};".encode())
    label_chunk = _CHUNK_ROWS * 16
    for start in range(0, len(y), label_chunk):
        digest.update(np.ascontiguousarray(y[start:start + label_chunk], dtype=np.int64).tobytes())
    bar = (progress_bar("fingerprint of the training data", X.shape[0]) if X.shape[0] >= _PROGRESS_ROWS
           else contextlib.nullcontext(lambda amount=1, **_: None))
    with bar as advance:
        for start in range(0, X.shape[0], _CHUNK_ROWS):
            chunk = np.ascontiguousarray(X[start:start + _CHUNK_ROWS], dtype=np.float64)
            digest.update(chunk.tobytes())
            advance(len(chunk))
    return "sha256:" + digest.hexdigest()
