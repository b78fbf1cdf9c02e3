"""Large tabular sets: Covtype (scikit-learn's fetcher or a local file) and HIGGS.

HIGGS (11,000,000 x 28, binary) is read from HIGGS.csv(.gz) in chunks straight into float32
memory maps (:mod:`miniunlearn.data.memmap_cache`), so no float64 copy of the data ever exists;
without the file, a seeded synthetic set of the same shape is generated the same way and
labelled synthetic everywhere.
"""

from __future__ import annotations

import gzip
import hashlib
from numbers import Integral
from pathlib import Path
from typing import Iterator

import numpy as np

from miniunlearn.core.errors import DataError
from miniunlearn.core.params import Interval, Param, Text
from miniunlearn.data.dataset import Dataset, as_labels, check_finite, register_dataset, standardize
from miniunlearn.data.memmap_cache import build_memmap_dataset, folder_preprocessing, open_memmaps

COVTYPE_HINT = ("Covtype needs the network once (scikit-learn's fetch_covtype caches it under ~/scikit_learn_data) "
                "or a local copy of the UCI file: pass `covtype:path=covtype.data.gz`.")
HIGGS_HINT = ("Download HIGGS.csv.gz from the UCI repository and pass `higgs:path=HIGGS.csv.gz`, "
              "or use the seeded stand-in `higgs-synthetic`.")
HIGGS_TEST_ROWS = 500_000  # the UCI convention: the last 500k rows are the test set
HIGGS_FEATURES = 28
_CHUNK = 1 << 17

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
    # imported here: scikit-learn takes ~1.5 s to load; only covtype needs it
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
    # imported here: scikit-learn takes ~1.5 s to load; only covtype needs it
    from sklearn.datasets import fetch_covtype

    try:
        bunch = fetch_covtype(download_if_missing=bool(download))
    except (OSError, ValueError) as exc:  # URLError is an OSError
        raise DataError(f"covtype: could not fetch it ({exc}). {COVTYPE_HINT}") from exc
    return _split_covtype(bunch.data, bunch.target, "sklearn.datasets.fetch_covtype")


def _dataset_from_folder(name: str, spec: str, folder: Path, meta: dict, source: str, synthetic: bool) -> Dataset:
    arrays = open_memmaps(folder)
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
