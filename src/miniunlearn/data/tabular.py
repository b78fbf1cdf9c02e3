"""Large tabular sets: Covtype (scikit-learn's fetcher or a local file) and HIGGS.

HIGGS (11,000,000 x 28, binary) is read from HIGGS.csv(.gz) in chunks straight into float32
memory maps, so no float64 copy of the data ever exists; without the file, a seeded synthetic
set of the same shape is generated the same way and labelled synthetic everywhere.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from numbers import Integral
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from miniunlearn.core.errors import DataError
from miniunlearn.core.params import Interval, Param, Text
from miniunlearn.core.storage import atomic_write_json
from miniunlearn.data.base import Dataset, as_labels, check_finite, register_dataset, standardize
from miniunlearn.data.preprocessing import STANDARDIZE, Preprocessing, RunningMoments

COVTYPE_HINT = ("Covtype needs the network once (scikit-learn's fetch_covtype caches it under ~/scikit_learn_data) "
                "or a local copy of the UCI file: pass `covtype:path=covtype.data.gz`.")
HIGGS_HINT = ("Download HIGGS.csv.gz from the UCI repository and pass `higgs:path=HIGGS.csv.gz`, "
              "or use the seeded stand-in `higgs-synthetic`.")
HIGGS_TEST_ROWS = 500_000  # the UCI convention: the last 500k rows are the test set
HIGGS_FEATURES = 28
_CHUNK = 1 << 17


def cache_dir() -> Path:
    return Path(os.environ.get("MINIUNLEARN_CACHE", Path.home() / ".cache" / "miniunlearn"))


def _split_covtype(X: np.ndarray, y: np.ndarray, source: str, seed: int = 0) -> Dataset:
    check_finite("covtype", X)
    y, classes = as_labels("covtype", y)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = len(y) // 5
    test, train = order[:n_test], order[n_test:]
    X_tr, X_te, record = standardize(X[train].astype(np.float64), X[test].astype(np.float64), classes,
                                     f"seeded permutation (seed {seed}), 20% test")
    return Dataset("covtype", "covtype", X_tr, y[train], X_te, y[test], len(classes), record, source)


def _covtype_cached() -> tuple[bool, str]:
    from sklearn.datasets import get_data_home

    folder = Path(get_data_home()) / "covertype"
    return (True, f"cached in {folder}") if folder.exists() else (False, "needs the network once, or covtype:path=FILE")


@register_dataset(
    "covtype",
    "forest cover type, 581012 x 54, 7 classes (scikit-learn's fetcher, or a local UCI file)",
    parameters={"path": Param(None, Text(), None, help="local covtype.data[.gz] (54 feature columns, then the label 1..7)"),
                "download": Param(1, Interval(Integral, 0, 1), help="1 lets scikit-learn download it")},
    available=lambda: _covtype_cached(),
)
def load_covtype(path: str | None = None, download: int = 1) -> Dataset:
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise DataError(f"covtype: file {file} not found. {COVTYPE_HINT}")
        try:
            table = np.loadtxt(file, delimiter=",", dtype=np.float64)
        except ValueError as exc:
            raise DataError(f"covtype: {file} is malformed ({exc}). {COVTYPE_HINT}") from exc
        if table.ndim != 2 or table.shape[1] != 55:
            raise DataError(f"covtype: {file} should have 55 columns (54 features + label), "
                            f"found {table.shape[1] if table.ndim == 2 else table.ndim}")
        return _split_covtype(table[:, :54], table[:, 54], f"local file {file}")
    from sklearn.datasets import fetch_covtype

    try:
        bunch = fetch_covtype(download_if_missing=bool(download))
    except (OSError, ValueError) as exc:  # URLError is an OSError
        raise DataError(f"covtype: could not fetch it ({exc}). {COVTYPE_HINT}") from exc
    return _split_covtype(bunch.data, bunch.target, "sklearn.datasets.fetch_covtype")


# ---------------------------------------------------------------------------------------------
# float32 memory maps


def _open_memmaps(folder: Path) -> dict[str, np.ndarray]:
    return {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            for name in ("X_train", "y_train", "X_test", "y_test")}


def _train_moments(chunks, n_features: int, n_train: int, test_rows: np.ndarray | None, progress: str):
    """Mean and scale of the training rows of ``chunks()`` (one pass; see RunningMoments)."""
    from miniunlearn.core.progress import progress_bar

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
    from miniunlearn.core.progress import progress_bar

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
        import shutil

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


def _dataset_from_folder(name: str, spec: str, folder: Path, meta: dict, source: str, synthetic: bool) -> Dataset:
    arrays = _open_memmaps(folder)
    classes = (0, 1)
    return Dataset(name, spec, arrays["X_train"], arrays["y_train"], arrays["X_test"], arrays["y_test"],
                   len(classes), folder_preprocessing(meta, classes), source, synthetic=synthetic)


def _higgs_csv_chunks(path: Path, n_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        read = 0
        while read < n_rows:
            want = min(_CHUNK, n_rows - read)
            try:
                table = np.loadtxt(handle, delimiter=",", dtype=np.float64, max_rows=want, ndmin=2)
            except ValueError as exc:
                raise DataError(f"higgs: {path} is malformed near row {read} ({exc})") from exc
            if table.size == 0:
                return
            if table.shape[1] != HIGGS_FEATURES + 1:
                raise DataError(f"higgs: {path} should have 29 columns (label + 28 features), found {table.shape[1]}")
            yield table[:, 1:], table[:, 0].astype(np.int64)
            read += len(table)


@register_dataset(
    "higgs",
    "HIGGS, 11000000 x 28, binary, from HIGGS.csv(.gz) into a float32 memory map",
    parameters={"path": Param(None, Text(), None, help="HIGGS.csv or HIGGS.csv.gz (required)"),
                "n_rows": Param(11_000_000, Interval(Integral, 20, 11_000_000), help="read only the first n_rows rows")},
    available=lambda: (False, "needs higgs:path=HIGGS.csv.gz"),
)
def load_higgs(path: str | None = None, n_rows: int = 11_000_000) -> Dataset:
    if path is None:
        raise DataError(f"higgs: no file given. {HIGGS_HINT}")
    file = Path(path)
    if not file.is_file():
        raise DataError(f"higgs: file {file} not found. {HIGGS_HINT}")
    n_rows = int(n_rows)
    n_test = min(HIGGS_TEST_ROWS, n_rows // 10) if n_rows < 11_000_000 else HIGGS_TEST_ROWS
    stat = file.stat()
    # v2: meta.json records the standardisation's mean and scale (the run's preprocessing record)
    key = "higgs-" + hashlib.sha256(f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{n_rows}|v2".encode()).hexdigest()[:16]
    folder, meta = build_memmap_dataset(key, n_rows, n_test, HIGGS_FEATURES,
                                        lambda: _higgs_csv_chunks(file, n_rows), True, "higgs")
    return _dataset_from_folder("higgs", "higgs", folder, meta, f"file {file}", synthetic=False)


def _synthetic_higgs_chunks(n_rows: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    teacher_rng = np.random.default_rng([seed, 0])
    teacher = teacher_rng.normal(size=HIGGS_FEATURES) / np.sqrt(HIGGS_FEATURES) * 1.5
    for index, start in enumerate(range(0, n_rows, _CHUNK)):
        rng = np.random.default_rng([seed, index + 1])
        rows = min(_CHUNK, n_rows - start)
        X = rng.standard_normal((rows, HIGGS_FEATURES), dtype=np.float32)
        # a mild nonlinearity and noisy labels keep the problem non-separable, like HIGGS (~64% linear accuracy)
        margin = X @ teacher.astype(np.float32) + 0.5 * (X[:, 0] * X[:, 1])
        y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-margin))).astype(np.int64)
        yield X, y


@register_dataset(
    "higgs-synthetic",
    "seeded HIGGS-shaped stand-in (default 11000000 x 28, binary), written straight to a float32 memory map",
    parameters={"n_rows": Param(11_000_000, Interval(Integral, 20, 10**9), help="rows in all, train + test"),
                "seed": Param(0, Interval(Integral, 0, 2**63 - 1), help="generator seed")},
)
def load_higgs_synthetic(n_rows: int = 11_000_000, seed: int = 0) -> Dataset:
    n_rows = int(n_rows)
    if n_rows < 20:
        raise DataError("higgs-synthetic needs n_rows >= 20")
    n_test = min(HIGGS_TEST_ROWS, n_rows // 10)
    key = f"higgs-synthetic-{n_rows}-{int(seed)}-v1"
    folder, meta = build_memmap_dataset(key, n_rows, n_test, HIGGS_FEATURES,
                                        lambda: _synthetic_higgs_chunks(n_rows, int(seed)), False, "higgs-synthetic")
    return _dataset_from_folder("higgs-synthetic", "higgs-synthetic", folder, meta,
                                f"seeded synthetic HIGGS-shaped set: n_rows={n_rows}, seed={seed}", synthetic=True)
