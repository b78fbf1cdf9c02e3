"""The file formats: reading a user's file in chunks of rows, and each format's declaration.

    csv:path=F,target=COL[,id=COL][,test=F2]      header row, numeric features, any labels
    parquet:path=F,target=COL[,id=COL][,test=F2]  read with pyarrow
    npz:path=F                                     arrays X, y[, ids] or X_train, y_train, X_test, y_test[, ids_train, ids_test]
    svmlight:path=F[,test=F2]                      scikit-learn's reader (sparse rows, made dense)

Every other column of a table is a feature. Options common to all: ``test_size`` (share of the
rows held out for testing, default 0.2; with ``test=FILE`` the test rows are that file's),
``seed`` and ``split`` (of the held-out draw, :mod:`miniunlearn.data.split`) and ``standardize``
(1: centre and scale every feature by the training rows' mean and standard deviation, recorded
in the run so the model applies to raw features; 0: use the features as they are).

A format is a :class:`Reader` factory -- rows in chunks of raw float64 features, raw labels and
keys, every value checked -- and one :class:`FileFormat` entry in :data:`FORMATS`, which says
how a spec opens it for training and for prediction. Adding a format is adding its reader and
its entry here; :mod:`miniunlearn.data.files` registers every entry as a dataset.

Row keys (:mod:`miniunlearn.data.keys`) come from the ``id`` column (npz: ``ids``); without one
a row's key is its 0-based row number in the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from miniunlearn.core.errors import DataError
from miniunlearn.core.params import Interval, Options, Param, Text
from miniunlearn.data.features import numeric_features, row_name
from miniunlearn.data.split import DEFAULT_TEST_SIZE, SPLIT_RULES

CHUNK_ROWS = 1 << 16

_COLUMN = (Text(), Interval(Integral, 0, None))  # a column name (a number is a name too: "target=3")
COMMON = {
    "path": Param(None, Text(), None, help="the data file (required)"),
    "test_size": Param(None, Interval(Real, 0, 0.9), None,
                       help=f"share of rows held out for testing (default {DEFAULT_TEST_SIZE}; not with test=FILE)"),
    "seed": Param(0, Interval(Integral, 0, 2**63 - 1), help="seed of the held-out draw"),
    "split": Param(None, Options(SPLIT_RULES), None,
                   help="the held-out draw: key (by key and seed, every row of a key on one side; the default "
                        "with keys) or row (by row position; the only rule without keys)"),
    "standardize": Param(1, Interval(Integral, 0, 1), help="1: centre and scale features on the training rows"),
}
TABLE = {
    **COMMON,
    "target": Param(None, *_COLUMN, None, help="the label column (required to train)"),
    "id": Param(None, *_COLUMN, None, help="the key column (default: keys are row numbers)"),
    "test": Param(None, Text(), None, help="a second file of the same columns: the test rows"),
}


@dataclass
class Chunk:
    """Rows ``start .. start + len(X)`` of a file: raw float64 features, raw labels and keys (or None)."""

    start: int
    X: np.ndarray
    labels: np.ndarray | None
    keys: np.ndarray | None


@dataclass
class Reader:
    """A file's rows in chunks: ``chunks()`` starts a pass over them (as often as needed)."""

    where: str
    feature_names: list[str] | None
    n_features: int
    key_column: str | None
    chunks: Callable[[], Iterator[Chunk]]
    has_labels: bool


# ---------------------------------------------------------------------------------------------- checks
def data_file(path, what: str) -> Path:
    """The resolved path of an existing data file (``what`` names it in the error)."""
    if path is None:
        raise DataError(f"{what}: no file given (path=FILE)")
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise DataError(f"{what}: file {file} not found")
    return file.resolve()


def _present(frame, name: str, start: int, where: str, line_offset: int, what: str) -> np.ndarray:
    values = frame[name].to_numpy()
    missing = frame[name].isna().to_numpy()
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise DataError(f"{where}: {row_name(start + i, line_offset)}, column {name!r}: no {what} (missing value)")
    return values


def _columns(columns: list[str], target, key, features, where: str) -> tuple[list[str], str | None, str | None]:
    """The feature columns, target and key column of a table (given as names or numbers)."""
    target = None if target is None else str(target)
    key = None if key is None else str(key)
    for option, name in (("target", target), ("id", key)):
        if name is not None and name not in columns:
            raise DataError(f"{where}: no column {name!r} for {option}=; the columns are {preview(columns)}")
    if target is not None and target == key:
        raise DataError(f"{where}: the target and id columns are both {target!r}")
    if features is None:
        features = [c for c in columns if c not in (target, key)]
    else:
        missing = [c for c in features if c not in columns]
        if missing:
            raise DataError(f"{where}: the model needs the feature column(s) {preview(missing)}, which the file "
                            f"lacks; its columns are {preview(columns)}")
    if not features:
        raise DataError(f"{where}: no feature columns (every column is the target or the id)")
    return list(features), target, key


def preview(values, limit: int = 8) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _frame_chunks(frames: Callable[[], Iterator], features: list[str], target, key, where: str,
                  line_offset: int) -> Callable[[], Iterator[Chunk]]:
    def chunks() -> Iterator[Chunk]:
        start = 0
        for frame in frames():
            if len(frame) == 0:
                continue
            X = numeric_features(frame, features, start, where, line_offset)
            labels = None if target is None else _present(frame, target, start, where, line_offset, "label")
            keys = None if key is None else _present(frame, key, start, where, line_offset, "key")
            yield Chunk(start, X, labels, keys)
            start += len(frame)

    return chunks


def csv_reader(path, target=None, key=None, features=None) -> Reader:
    """A CSV file with a header row (comma-separated; pandas' parser)."""
    # imported here: pandas takes ~0.35 s to load; only CSV files need it
    import pandas as pd

    file = data_file(path, "csv")
    where = f"csv {file.name}"
    try:
        header = list(pd.read_csv(file, nrows=0).columns.astype(str))
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{where}: cannot read the header row ({exc})") from None
    features, target, key = _columns(header, target, key, features, where)
    text = {name: str for name in (target, key) if name is not None}

    def frames():
        try:
            with pd.read_csv(file, usecols=[*features, *text], dtype=text, chunksize=CHUNK_ROWS) as parts:
                for frame in parts:
                    frame.columns = frame.columns.astype(str)
                    yield frame
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise DataError(f"{where}: malformed ({str(exc).strip()})") from None

    return Reader(where, features, len(features), key, _frame_chunks(frames, features, target, key, where, 2),
                  target is not None)


def parquet_reader(path, target=None, key=None, features=None) -> Reader:
    """A Parquet file, read in record batches with pyarrow."""
    # imported here: pyarrow is needed only for Parquet files
    import pyarrow as pa
    import pyarrow.parquet as pq

    file = data_file(path, "parquet")
    where = f"parquet {file.name}"
    try:
        columns = list(pq.ParquetFile(file).schema_arrow.names)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{where}: not a readable Parquet file ({exc})") from None
    features, target, key = _columns(columns, target, key, features, where)

    def frames():
        try:
            handle = pq.ParquetFile(file)
            for batch in handle.iter_batches(batch_size=CHUNK_ROWS, columns=[*features, *filter(None, (target, key))]):
                yield batch.to_pandas()
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{where}: malformed ({exc})") from None

    return Reader(where, features, len(features), key, _frame_chunks(frames, features, target, key, where, 0),
                  target is not None)


def array_reader(where: str, X: np.ndarray, y: np.ndarray | None, keys: np.ndarray | None,
                  feature_names=None, key_column: str | None = None) -> Reader:
    """Arrays already in memory, served in chunks like a file (and checked the same way)."""
    if X.ndim != 2 or X.shape[1] < 1:
        raise DataError(f"{where}: features must be a 2-d array with at least one column, got shape {X.shape}")
    for name, array in (("labels", y), ("keys", keys)):
        if array is not None and (array.ndim != 1 or len(array) != len(X)):
            raise DataError(f"{where}: {len(X)} rows of features but {name} of shape {array.shape}")
    if X.dtype.kind not in "biuf":
        raise DataError(f"{where}: features must be numbers, found dtype {X.dtype}")

    def chunks() -> Iterator[Chunk]:
        for start in range(0, len(X), CHUNK_ROWS):
            part = np.asarray(X[start:start + CHUNK_ROWS], dtype=np.float64)
            bad = ~np.isfinite(part)
            if bad.any():
                i, j = (int(v[0]) for v in np.nonzero(bad))
                raise DataError(f"{where}: row {start + i}, feature {j} is {part[i, j]} (missing or not finite)")
            yield Chunk(start, part, None if y is None else y[start:start + CHUNK_ROWS],
                        None if keys is None else keys[start:start + CHUNK_ROWS])

    names = None if feature_names is None else [str(n) for n in feature_names]
    return Reader(where, names, int(X.shape[1]), key_column, chunks, y is not None)


def npz_arrays(path) -> tuple[str, dict[str, np.ndarray]]:
    """The arrays of an .npz file (never unpickled: object arrays are refused)."""
    file = data_file(path, "npz")
    where = f"npz {file.name}"
    try:
        with np.load(file, allow_pickle=False) as archive:
            names = list(archive.files)
            arrays = {}
            for name in names:
                try:
                    arrays[name] = archive[name]
                except ValueError:
                    raise DataError(f"{where}: array {name!r} holds Python objects, which are never loaded (no "
                                    "pickle); store labels and keys as numbers or fixed-width strings (np.str_)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{where}: not a readable .npz file ({exc})") from None
    return where, arrays


def npz_readers(path) -> tuple[Reader, Reader | None]:
    where, arrays = npz_arrays(path)
    if "X" in arrays:
        need = ("X", "y")
        train = (arrays.get("X"), arrays.get("y"), arrays.get("ids"))
        test = None
    else:
        need = ("X_train", "y_train", "X_test", "y_test")
        train = (arrays.get("X_train"), arrays.get("y_train"), arrays.get("ids_train"))
        test = (arrays.get("X_test"), arrays.get("y_test"), arrays.get("ids_test"))
    missing = [n for n in need if n not in arrays]
    if missing:
        raise DataError(f"{where}: needs arrays X and y (optionally ids), or X_train, y_train, X_test and y_test "
                        f"(as `miniunlearn data export` writes them); it holds {preview(arrays) or 'none'}")
    key = "ids" if train[2] is not None else None
    train_reader = array_reader(where, *train, key_column=key)
    test_reader = None if test is None else array_reader(f"{where} (test arrays)", *test, key_column=key)
    return train_reader, test_reader


def svmlight_reader(path, n_features: int | None = None) -> Reader:
    """An svmlight / libsvm file (scikit-learn's reader); rows are made dense, labels are numbers."""
    # imported here: scikit-learn takes ~1.5 s to load; only svmlight files need it
    from sklearn.datasets import load_svmlight_file

    file = data_file(path, "svmlight")
    where = f"svmlight {file.name}"
    try:
        X, y = load_svmlight_file(str(file), n_features=n_features)
    except (ValueError, OSError) as exc:
        raise DataError(f"{where}: malformed ({exc})") from None
    labels = y.astype(np.int64) if np.all(y == np.round(y)) else y
    dense = _SparseRows(X)
    return array_reader(where, dense, labels, None)


class _SparseRows:
    """A scipy sparse matrix sliced into dense row blocks (what :func:`array_reader` reads)."""

    def __init__(self, matrix):
        self.matrix = matrix.tocsr()
        self.shape = self.matrix.shape
        self.ndim = 2
        self.dtype = np.dtype(np.float64)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows):
        return self.matrix[rows].toarray()


# ---------------------------------------------------------------------------------------------- declarations
@dataclass(frozen=True)
class FileFormat:
    """A file format as a dataset spec names it.

    ``parameters``: its spec options. ``recorded``: the options a recorded spec keeps, in that
    order. ``open(options)``: the training rows and the file's own test rows (or None).
    ``every_row(options, feature_names, n_features)``: every row of a file, for prediction, in
    the model's feature columns.
    """

    name: str
    summary: str
    suffixes: tuple[str, ...]
    parameters: dict[str, Param]
    recorded: tuple[str, ...]
    open: Callable[[dict[str, Any]], tuple[Reader, Reader | None]]
    every_row: Callable[[dict[str, Any], list[str] | None, int], Reader]


def _table(name: str, summary: str, suffixes: tuple[str, ...], open_reader: Callable[..., Reader]) -> FileFormat:
    """A table format (CSV, Parquet): columns chosen by name, an optional test file of the same columns."""

    def open_(options):
        train = open_reader(options["path"], options.get("target"), options.get("id"))
        test = options.get("test")
        return train, None if test is None else open_reader(data_file(test, f"{name} test"), options.get("target"),
                                                            options.get("id"), train.feature_names)

    def every_row(options, feature_names, n_features):
        return open_reader(options["path"], options.get("target"), options.get("id"), feature_names)

    return FileFormat(name, summary, suffixes, TABLE,
                      ("path", "target", "id", "test", "test_size", "seed", "standardize", "split"), open_, every_row)


def _npz_rows(options, feature_names, n_features) -> Reader:
    where, arrays = npz_arrays(options["path"])
    X = arrays.get("X", arrays.get("X_test"))
    if X is None:
        raise DataError(f"{where}: needs an array X (or X_test) of rows to predict")
    ids = arrays.get("ids") if "X" in arrays else arrays.get("ids_test")
    labels = arrays.get("y") if "X" in arrays else arrays.get("y_test")
    return array_reader(where, X, labels, ids, key_column=None if ids is None else "ids")


def _svmlight_open(options):
    train = svmlight_reader(options["path"])
    test = options.get("test")
    return train, None if test is None else svmlight_reader(data_file(test, "svmlight test"), train.n_features)


FORMATS: dict[str, FileFormat] = {f.name: f for f in (
    _table("csv", "your CSV file: header row, numeric features, a label column (target=) and optional key column (id=)",
           (".csv", ".csv.gz", ".tsv"), csv_reader),
    _table("parquet", "your Parquet file (pyarrow): numeric features, a label column (target=), optional key column "
           "(id=)", (".parquet", ".pq"), parquet_reader),
    FileFormat("npz", "your .npz file: arrays X, y[, ids], or X_train, y_train, X_test, y_test (as `data export` "
               "writes)", (".npz",), COMMON, ("path", "test_size", "seed", "standardize", "split"),
               lambda options: npz_readers(options["path"]), _npz_rows),
    FileFormat("svmlight", "your svmlight / libsvm file (scikit-learn's reader; rows made dense)",
               (".svm", ".svmlight", ".libsvm"),
               {**COMMON, "test": Param(None, Text(), None, help="a second svmlight file: the test rows")},
               ("path", "test", "test_size", "seed", "standardize", "split"), _svmlight_open,
               lambda options, feature_names, n_features: svmlight_reader(options["path"], n_features=n_features)),
)}
