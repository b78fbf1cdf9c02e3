"""The cache of float32 memory maps that large and user-file datasets are read into.

:func:`build_memmap_dataset` fills ``X_train``, ``y_train``, ``X_test`` and ``y_test`` memory
maps (standardised float32 features, class numbers) from chunks of raw rows, in one folder of
the cache directory (``MINIUNLEARN_CACHE``, default ``~/.cache/miniunlearn``) named by a key
that covers the source and the options; a complete folder is reused by :func:`cached_folder`.
No float64 copy of the data ever exists, so sets larger than memory train.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from miniunlearn.core.errors import DataError
from miniunlearn.core.progress import progress_bar
from miniunlearn.core.storage import atomic_write_json
from miniunlearn.data.preprocessing import STANDARDIZE, Preprocessing, RunningMoments


def cache_dir() -> Path:
    return Path(os.environ.get("MINIUNLEARN_CACHE", Path.home() / ".cache" / "miniunlearn"))



def open_memmaps(folder: Path) -> dict[str, np.ndarray]:
    """The four memory maps of a complete cache folder, read-only."""
    return {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            for name in ("X_train", "y_train", "X_test", "y_test")}


def _train_moments(chunks, n_features: int, n_train: int, test_rows: np.ndarray | None, progress: str):
    """Mean and scale of the training rows of ``chunks()`` (one pass; see RunningMoments)."""

    moments, row = RunningMoments(n_features), 0
    with progress_bar(f"{progress}: feature statistics", n_train) as advance:
        for X, _ in chunks():
            rows = slice(row, row + len(X))
            train = ~test_rows[rows] if test_rows is not None else np.arange(rows.start, rows.stop) < n_train
            moments.update(X[train])
            row = rows.stop
            advance(int(train.sum()))
            if test_rows is None and row >= n_train:
                break
    return moments.mean_and_scale()


def build_memmap_dataset(key: str, n_rows: int, n_test: int, n_features: int,
                         chunks: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]],
                         standardize_features: bool, progress: str, *, test_rows: np.ndarray | None = None,
                         scaler: tuple[np.ndarray, np.ndarray] | None = None,
                         arrays: dict[str, np.ndarray] | None = None, meta: dict | None = None) -> tuple[Path, dict]:
    """Fill float32 memory maps from ``chunks()`` -- raw features and class numbers, in row order -- and cache them.

    Test rows are the last ``n_test`` rows, or those flagged in ``test_rows`` (one bool per row).
    With ``standardize_features`` the features are mapped by the training rows' mean and scale:
    ``scaler`` when the caller computed them already, else from a first pass over ``chunks()``.
    ``arrays`` (e.g. row keys) are saved beside the maps and ``meta`` is merged into ``meta.json``,
    which also records the mean and scale (exact in JSON: floats round-trip).

    The folder is complete only once ``meta.json`` exists; it is built under a temporary name
    and renamed, so an interrupted build is simply redone.
    """

    folder = cache_dir() / key
    if (found := cached_folder(key)) is not None:
        return found
    tmp = folder.with_name(folder.name + f".building-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    n_train = n_rows - n_test
    mean, scale = np.zeros(n_features), np.ones(n_features)
    if standardize_features:
        mean, scale = scaler if scaler is not None else _train_moments(chunks, n_features, n_train, test_rows, progress)
    maps = {
        "X_train": np.lib.format.open_memmap(tmp / "X_train.npy", "w+", np.float32, (n_train, n_features)),
        "y_train": np.lib.format.open_memmap(tmp / "y_train.npy", "w+", np.int64, (n_train,)),
        "X_test": np.lib.format.open_memmap(tmp / "X_test.npy", "w+", np.float32, (n_test, n_features)),
        "y_test": np.lib.format.open_memmap(tmp / "y_test.npy", "w+", np.int64, (n_test,)),
    }
    row, filled = 0, {"train": 0, "test": 0}
    with progress_bar(f"{progress}: writing float32 memory map", n_rows) as advance:
        for X, y in chunks():
            if not np.isfinite(X).all():
                raise DataError(f"{progress}: NaN or infinite feature values near row {row}")
            X = ((X - mean) / scale).astype(np.float32)
            test = (test_rows[row:row + len(y)] if test_rows is not None
                    else np.arange(row, row + len(y)) >= n_train)
            for part, rows in (("train", ~test), ("test", test)):
                start, count = filled[part], int(rows.sum())
                if start + count > maps[f"y_{part}"].shape[0]:
                    raise DataError(f"{progress}: more rows than the {n_rows} expected")
                maps[f"X_{part}"][start:start + count] = X[rows]
                maps[f"y_{part}"][start:start + count] = y[rows]
                filled[part] += count
            row += len(y)
            advance(len(y))
    if row != n_rows:
        raise DataError(f"{progress}: expected {n_rows} rows, read {row}")
    for array in maps.values():
        array.flush()
    del maps
    for name, array in (arrays or {}).items():
        np.save(tmp / f"{name}.npy", array, allow_pickle=False)
    split = (f"last {n_test} rows are the test set" if test_rows is None else f"{n_test} seeded random test rows")
    record = {"rows": n_rows, "n_test": n_test, "n_features": n_features,
              "preprocessing": {"features": f"{STANDARDIZE}, stored as float32"
                                if standardize_features else "as given, stored as float32", "split": split},
              "mean": mean.tolist() if standardize_features else None,
              "scale": scale.tolist() if standardize_features else None, **(meta or {})}
    atomic_write_json(tmp / "meta.json", record)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder, json.loads((folder / "meta.json").read_text())


def cached_folder(key: str) -> tuple[Path, dict] | None:
    """``(folder, meta)`` of a complete cached memory-map folder, or None."""
    folder = cache_dir() / key
    if not (folder / "meta.json").is_file():
        return None
    return folder, json.loads((folder / "meta.json").read_text())


def folder_preprocessing(meta: dict, classes, feature_names=None) -> Preprocessing:
    """The :class:`Preprocessing` record of a memory-mapped folder's ``meta.json``."""
    scaled = meta.get("mean") is not None
    return Preprocessing(tuple(classes), np.asarray(meta["mean"]) if scaled else None,
                         np.asarray(meta["scale"]) if scaled else None, feature_names,
                         meta["preprocessing"]["features"], meta["preprocessing"]["split"])
