"""Your own data: CSV, Parquet, NumPy ``.npz`` and svmlight files as dataset specs.

    csv:path=F,target=COL[,id=COL][,test=F2]      header row, numeric features, any labels
    parquet:path=F,target=COL[,id=COL][,test=F2]  read with pyarrow
    npz:path=F                                     arrays X, y[, ids] or X_train, y_train, X_test, y_test[, ids_train, ids_test]
    svmlight:path=F[,test=F2]                      scikit-learn's reader (sparse rows, made dense)

Every other column of a table is a feature. Options common to all: ``test_size`` (share of the
rows held out for testing, default 0.2; with ``test=FILE`` the test rows are that file's),
``seed`` (of the held-out draw) and ``standardize`` (1: centre and scale every feature by the
training rows' mean and standard deviation, recorded in the run so the model applies to raw
features; 0: use the features as they are).

Every format streams the same way, in chunks of rows, so a file larger than memory trains:

1. a scan checks every value (a missing, non-numeric or infinite feature is an error naming its
   line or row and column), collects the labels and keys, draws the held-out rows and
   accumulates the training rows' feature statistics;
2. :func:`~miniunlearn.data.tabular.build_memmap_dataset` writes the standardised float32
   memory maps into the cache directory (``MINIUNLEARN_CACHE``), keyed by the file's path,
   size, modification time and the options -- later loads of an unchanged file open the maps.

The held-out rows are drawn per row, ``u_i < test_size`` with ``u_i`` uniform from a generator
seeded by ``(seed, block of 65536 rows)``: the draw of a row does not depend on how the file is
chunked, and no row count is needed before the scan. The share is therefore ``test_size`` up to
sampling noise, not exactly.

Row keys (:mod:`miniunlearn.data.keys`) come from the ``id`` column (npz: ``ids``); without one
a row's key is its 0-based row number in the file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from miniunlearn.core.errors import DataError
from miniunlearn.core.params import Interval, Options, Param, Text
from miniunlearn.data.base import Dataset, register_dataset
from miniunlearn.data.keys import normalize_keys
from miniunlearn.data.preprocessing import RunningMoments, class_labels
from miniunlearn.data.split import SPLIT_RULES, held_out_keys, held_out_rows
from miniunlearn.data.tabular import build_memmap_dataset, cached_folder, folder_preprocessing

CHUNK_ROWS = 1 << 16
DEFAULT_TEST_SIZE = 0.2
CACHE_VERSION = "files-v1"

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
    """A file's rows in chunks (see :func:`open_reader`)."""

    where: str
    feature_names: list[str] | None
    n_features: int
    key_column: str | None
    chunks: Callable[[], Iterator[Chunk]]
    has_labels: bool


# ---------------------------------------------------------------------------------------------- checks
def _file(path, what: str) -> Path:
    if path is None:
        raise DataError(f"{what}: no file given (path=FILE)")
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise DataError(f"{what}: file {file} not found")
    return file.resolve()


def numeric_features(frame, names: list[str], start: int, where: str, line_offset: int) -> np.ndarray:
    """The columns ``names`` of a pandas DataFrame as float64, naming the first bad value's row and column.

    ``line_offset`` turns a 0-based row into what people look up: a CSV's line number (2 for the
    row after the header) or 0 for a 0-based row number.
    """
    import pandas as pd

    out = np.empty((len(frame), len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        column = frame[name]
        values = column.to_numpy()
        if values.dtype.kind not in "biuf":
            numbers = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
            bad = np.isnan(numbers) & column.notna().to_numpy()
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(f"{where}: {_row(start + i, line_offset)}, column {name!r}: {values[i]!r} is not a number")
            values = numbers
        values = values.astype(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            problem = "is empty (a missing value)" if np.isnan(values[i]) else f"is {values[i]} (not finite)"
            raise DataError(f"{where}: {_row(start + i, line_offset)}, column {name!r} {problem}")
        out[:, j] = values
    return out


def _row(row: int, line_offset: int) -> str:
    return f"line {row + line_offset}" if line_offset else f"row {row}"


def _present(frame, name: str, start: int, where: str, line_offset: int, what: str) -> np.ndarray:
    values = frame[name].to_numpy()
    missing = frame[name].isna().to_numpy()
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise DataError(f"{where}: {_row(start + i, line_offset)}, column {name!r}: no {what} (missing value)")
    return values


def _columns(columns: list[str], target, key, features, where: str) -> tuple[list[str], str | None, str | None]:
    """The feature columns, target and key column of a table (given as names or numbers)."""
    target = None if target is None else str(target)
    key = None if key is None else str(key)
    for option, name in (("target", target), ("id", key)):
        if name is not None and name not in columns:
            raise DataError(f"{where}: no column {name!r} for {option}=; the columns are {_preview(columns)}")
    if target is not None and target == key:
        raise DataError(f"{where}: the target and id columns are both {target!r}")
    if features is None:
        features = [c for c in columns if c not in (target, key)]
    else:
        missing = [c for c in features if c not in columns]
        if missing:
            raise DataError(f"{where}: the model needs the feature column(s) {_preview(missing)}, which the file "
                            f"lacks; its columns are {_preview(columns)}")
    if not features:
        raise DataError(f"{where}: no feature columns (every column is the target or the id)")
    return list(features), target, key


def _preview(values, limit: int = 8) -> str:
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


# ---------------------------------------------------------------------------------------------- formats
def csv_reader(path, target=None, key=None, features=None) -> Reader:
    """A CSV file with a header row (comma-separated; pandas' parser)."""
    import pandas as pd

    file = _file(path, "csv")
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
    import pyarrow as pa
    import pyarrow.parquet as pq

    file = _file(path, "parquet")
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


def _array_reader(where: str, X: np.ndarray, y: np.ndarray | None, keys: np.ndarray | None,
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
    file = _file(path, "npz")
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


def _npz_readers(path) -> tuple[Reader, Reader | None]:
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
                        f"(as `miniunlearn data export` writes them); it holds {_preview(arrays) or 'none'}")
    key = "ids" if train[2] is not None else None
    train_reader = _array_reader(where, *train, key_column=key)
    test_reader = None if test is None else _array_reader(f"{where} (test arrays)", *test, key_column=key)
    return train_reader, test_reader


def svmlight_reader(path, n_features: int | None = None) -> Reader:
    """An svmlight / libsvm file (scikit-learn's reader); rows are made dense, labels are numbers."""
    from sklearn.datasets import load_svmlight_file

    file = _file(path, "svmlight")
    where = f"svmlight {file.name}"
    try:
        X, y = load_svmlight_file(str(file), n_features=n_features)
    except (ValueError, OSError) as exc:
        raise DataError(f"{where}: malformed ({exc})") from None
    labels = y.astype(np.int64) if np.all(y == np.round(y)) else y
    dense = _SparseRows(X)
    return _array_reader(where, dense, labels, None)


class _SparseRows:
    """A scipy sparse matrix sliced into dense row blocks (what :func:`_array_reader` reads)."""

    def __init__(self, matrix):
        self.matrix = matrix.tocsr()
        self.shape = self.matrix.shape
        self.ndim = 2
        self.dtype = np.dtype(np.float64)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows):
        return self.matrix[rows].toarray()


# ---------------------------------------------------------------------------------------------- the scan
@dataclass
class Scan:
    """What the first pass over a file learns (see the module docstring)."""

    n_rows: int
    test_rows: np.ndarray
    classes: list
    label_codes: dict
    keys: np.ndarray
    scaler: tuple[np.ndarray, np.ndarray] | None


def _promote(texts: list[str]) -> list:
    """Labels read as text (CSV): integers or numbers when every one of them is one, else the text."""
    for cast in (int, float):
        try:
            return [cast(t) for t in texts]
        except ValueError:
            continue
    return [t.strip() for t in texts]


def scan(readers: list[tuple[Reader, Callable[[Chunk], np.ndarray]]], standardize: bool, where: str) -> Scan:
    """Pass one: count rows, draw the test rows (``held_out(chunk)``: one bool per row of the chunk), collect
    labels and keys, and the training rows' statistics."""
    from miniunlearn.core.progress import progress_bar

    n_features = readers[0][0].n_features
    moments = RunningMoments(n_features)
    masks, distinct, key_parts, total = [], set(), [], 0
    with progress_bar(f"{where}: checking rows", None) as advance:
        for reader, held_out in readers:
            if reader.n_features != n_features:
                raise DataError(f"{reader.where}: {reader.n_features} features, but the training file has {n_features}")
            if not reader.has_labels:
                columns = f"; its columns: {_preview(reader.feature_names)}" if reader.feature_names else ""
                raise DataError(f"{where}: name the label column to train on, e.g. csv:path=FILE,target=COLUMN{columns}")
            for chunk in reader.chunks():
                test = held_out(chunk)
                if standardize:
                    moments.update(chunk.X[~test])
                distinct.update(_distinct(chunk.labels))
                key_parts.append(chunk.keys if chunk.keys is not None else
                                 np.arange(chunk.start, chunk.start + len(chunk.X), dtype=np.int64))
                masks.append(test)
                total += len(chunk.X)
                advance(len(chunk.X), rows_read=len(chunk.X))
    if total == 0:
        raise DataError(f"{where}: no data rows")
    test_rows = np.concatenate(masks)
    if test_rows.all():
        raise DataError(f"{where}: every row is held out for testing; lower test_size")
    raw = sorted(distinct, key=repr)
    typed = _promote(raw) if all(isinstance(v, str) for v in raw) else raw
    classes = class_labels(np.asarray(typed, dtype=object), f"{where}: labels")
    if len(classes) < 2:
        raise DataError(f"{where}: every row has the label {classes[0]!r}; classification needs at least two classes")
    code_of = {label: code for code, label in enumerate(classes)}
    label_codes = {raw_value: code_of[value] for raw_value, value in zip(raw, typed)}
    keys = normalize_keys(np.concatenate(key_parts), f"{where}: keys")
    scaler = moments.mean_and_scale() if standardize else None
    return Scan(total, test_rows, classes, label_codes, keys, scaler)


def _distinct(labels: np.ndarray) -> list:
    import pandas as pd

    return [v.item() if isinstance(v, np.generic) else v for v in pd.unique(pd.Series(labels, dtype=object))]


def _codes(labels: np.ndarray, label_codes: dict) -> np.ndarray:
    return np.fromiter((label_codes[v] for v in labels.tolist()), dtype=np.int64, count=len(labels))


# ---------------------------------------------------------------------------------------------- datasets
def split_rule(train: Reader, test: Reader | None, test_size: float | None, split: str | None) -> str:
    """The held-out rule of a file (:mod:`miniunlearn.data.split`): ``key`` or ``row`` for a drawn
    split, ``given`` when the test rows come from a test file (or the npz test arrays), ``none``
    with ``test_size=0``. ``split`` (the option) is None for the default: ``key`` when the data have keys."""
    if test is not None and test_size is not None:
        raise DataError(f"{train.where}: give test=FILE or test_size, not both")
    if test is not None:
        return "given"
    if split == "key" and train.key_column is None:
        raise DataError(f"{train.where}: split=key draws the held-out rows by key, but the data have no key "
                        "column (id=COLUMN; npz: an ids array)")
    if test_size is not None and float(test_size) == 0:
        return "none"
    return split or ("key" if train.key_column is not None else "row")


def _recorded_split(rule: str, train: Reader) -> str | None:
    """The ``split=`` a recorded spec names: every drawn split of keyed data names its rule, so the spec
    reloads the same rows whatever the default."""
    return rule if rule in SPLIT_RULES and train.key_column is not None else None


def table_dataset(name: str, spec: str, train: Reader, test: Reader | None, test_size: float | None, seed: int,
                  standardize: bool, fingerprint_of_source: str, statistics=None, split: str | None = None) -> Dataset:
    """Scan the file(s), write (or open the cached) float32 memory maps, and return the :class:`Dataset`.

    The cache key covers the spec (file, columns, split, scaling), the files' size and
    modification time, and given ``statistics`` (a :class:`Preprocessing` whose means and scales
    standardise the rows instead of the training rows' own), so an edited file is read again.
    """
    rule = split_rule(train, test, test_size, split)
    if statistics is not None and not (standardize and statistics.scaled):
        raise DataError(f"{train.where}: standardisation statistics given for data that is not standardised")
    share = 0.0 if test is not None else (DEFAULT_TEST_SIZE if test_size is None else float(test_size))
    given = "" if statistics is None else "|" + hashlib.sha256(statistics.mean.tobytes()
                                                               + statistics.scale.tobytes()).hexdigest()
    key = f"{name}-" + hashlib.sha256(f"{CACHE_VERSION}|{spec}|{fingerprint_of_source}{given}".encode()).hexdigest()[:24]
    found = cached_folder(key)
    if found is None:
        if rule == "key":
            def held_out(chunk: Chunk) -> np.ndarray:
                return held_out_keys(chunk.keys, share, seed, f"{train.where}: keys")
        else:
            def held_out(chunk: Chunk) -> np.ndarray:
                return held_out_rows(chunk.start, len(chunk.X), share, seed)
        readers = [(train, held_out)]
        if test is not None:
            readers.append((test, lambda chunk: np.ones(len(chunk.X), dtype=bool)))
        summary = scan(readers, standardize and statistics is None, train.where)
        if statistics is not None:
            summary.scaler = (statistics.mean, statistics.scale)
        n_test = int(summary.test_rows.sum())

        def coded():
            for reader, _ in readers:
                for chunk in reader.chunks():
                    yield chunk.X, _codes(chunk.labels, summary.label_codes)

        meta = {"classes": summary.classes, "feature_names": train.feature_names, "key_column": train.key_column,
                "source": fingerprint_of_source}
        found = build_memmap_dataset(key, summary.n_rows, n_test, train.n_features, coded, standardize, train.where,
                                     test_rows=summary.test_rows, scaler=summary.scaler,
                                     arrays={"keys_train": summary.keys[~summary.test_rows],
                                             "keys_test": summary.keys[summary.test_rows]}, meta=meta)
    folder, meta = found
    maps = {part: np.load(folder / f"{part}.npy", mmap_mode="r", allow_pickle=False)
            for part in ("X_train", "y_train", "X_test", "y_test")}
    keys = {part: np.load(folder / f"keys_{part}.npy", allow_pickle=False) for part in ("train", "test")}
    described = {"given": "the test file's rows", "none": "no test rows",
                 "key": f"{meta['n_test']} test rows drawn by key (seed {seed})",
                 "row": f"{meta['n_test']} test rows drawn by row position (seed {seed})"}[rule]
    record = folder_preprocessing({**meta, "preprocessing": {**meta["preprocessing"], "split": described}},
                                  meta["classes"], meta["feature_names"])
    return Dataset(name, spec, maps["X_train"], maps["y_train"], maps["X_test"], maps["y_test"], record.n_classes,
                   record, f"{train.where} (float32 memory map in {folder})", keys=keys["train"], test_keys=keys["test"],
                   split_rule=rule)


def _source_identity(*files: Path | None) -> str:
    parts = []
    for file in files:
        if file is not None:
            stat = file.stat()
            parts.append(f"{file}|{stat.st_size}|{stat.st_mtime_ns}")
    return ";".join(parts)


def _spec(name: str, **options) -> str:
    return f"{name}:" + ",".join(f"{k}={v}" for k, v in options.items() if v is not None)


def _table_loader(name: str, open_reader: Callable[..., Reader]):
    def load(path=None, target=None, id=None, test=None, test_size=None, seed=0, standardize=1,  # noqa: A002
             split=None, statistics=None) -> Dataset:
        reader = open_reader(path, target, id)
        main = _file(path, name)
        test_file = None if test is None else _file(test, f"{name} test")
        test_reader = None if test is None else open_reader(test_file, target, id, reader.feature_names)
        if test_reader is not None and split is not None:
            raise DataError(f"{reader.where}: split= chooses the held-out draw; with test=FILE there is none")
        rule = split_rule(reader, test_reader, test_size, split)
        spec = _spec(name, path=main, target=target, id=id, test=test_file, test_size=test_size,
                     seed=seed or None, standardize=None if standardize else 0, split=_recorded_split(rule, reader))
        return table_dataset(name, spec, reader, test_reader, test_size, seed, bool(standardize),
                             _source_identity(main, test_file), statistics, split)

    return load


register_dataset("csv", "your CSV file: header row, numeric features, a label column (target=) and optional key column (id=)",
                 parameters=TABLE, available=lambda: (True, "csv:path=FILE,target=COLUMN"),
                 suffixes=(".csv", ".csv.gz", ".tsv"))(_table_loader("csv", csv_reader))
register_dataset("parquet", "your Parquet file (pyarrow): numeric features, a label column (target=), optional key column (id=)",
                 parameters=TABLE, available=lambda: (True, "parquet:path=FILE,target=COLUMN"),
                 suffixes=(".parquet", ".pq"))(_table_loader("parquet", parquet_reader))


@register_dataset("npz", "your .npz file: arrays X, y[, ids], or X_train, y_train, X_test, y_test (as `data export` writes)",
                  parameters=COMMON, available=lambda: (True, "npz:path=FILE"), suffixes=(".npz",))
def load_npz(path=None, test_size=None, seed=0, standardize=1, split=None, statistics=None) -> Dataset:
    train, test = _npz_readers(path)
    main = _file(path, "npz")
    split = None if test is not None else split  # (the file's test arrays are the test rows: no draw)
    rule = split_rule(train, test, test_size, split)
    spec = _spec("npz", path=main, test_size=test_size, seed=seed or None, standardize=None if standardize else 0,
                 split=_recorded_split(rule, train))
    return table_dataset("npz", spec, train, test, test_size, seed, bool(standardize), _source_identity(main),
                         statistics, split)


@register_dataset("svmlight", "your svmlight / libsvm file (scikit-learn's reader; rows made dense)",
                  parameters={**COMMON, "test": Param(None, Text(), None, help="a second svmlight file: the test rows")},
                  available=lambda: (True, "svmlight:path=FILE"), suffixes=(".svm", ".svmlight", ".libsvm"))
def load_svmlight(path=None, test=None, test_size=None, seed=0, standardize=1, split=None,
                  statistics=None) -> Dataset:
    train = svmlight_reader(path)
    main = _file(path, "svmlight")
    test_file = None if test is None else _file(test, "svmlight test")
    test_reader = None if test_file is None else svmlight_reader(test_file, n_features=train.n_features)
    spec = _spec("svmlight", path=main, test=test_file, test_size=test_size, seed=seed or None,
                 standardize=None if standardize else 0)
    return table_dataset("svmlight", spec, train, test_reader, test_size, seed, bool(standardize),
                         _source_identity(main, test_file), statistics, None if test_file is not None else split)


# ---------------------------------------------------------------------------------------------- raw rows
def raw_reader(spec: str, feature_names: list[str] | None, n_features: int) -> Reader | None:
    """Every row of a data file named by ``spec``, as raw features in the model's column order.

    Tables select the model's feature columns by name (extra columns are ignored; ``id=`` names
    the key column, ``target=`` a label column). npz files give ``X`` (or ``X_test``) with ``ids``
    and ``y`` when present, svmlight files every row. Returns None when ``spec`` is not a file
    format (a registered dataset).
    """
    from miniunlearn.data.base import parse_dataset_spec

    info, options = parse_dataset_spec(spec)
    if not info.suffixes:
        return None
    path = options["path"]
    if info.name in ("csv", "parquet"):
        open_reader = csv_reader if info.name == "csv" else parquet_reader
        return _checked_width(open_reader(path, options.get("target"), options.get("id"), feature_names), n_features)
    if info.name == "npz":
        where, arrays = npz_arrays(path)
        X = arrays.get("X", arrays.get("X_test"))
        if X is None:
            raise DataError(f"{where}: needs an array X (or X_test) of rows to predict")
        ids = arrays.get("ids") if "X" in arrays else arrays.get("ids_test")
        labels = arrays.get("y") if "X" in arrays else arrays.get("y_test")
        return _checked_width(_array_reader(where, X, labels, ids, key_column=None if ids is None else "ids"), n_features)
    return _checked_width(svmlight_reader(path, n_features=n_features), n_features)


def _checked_width(reader: Reader, n_features: int) -> Reader:
    if reader.n_features != n_features:
        raise DataError(f"{reader.where}: {reader.n_features} features per row, the model expects {n_features}")
    return reader
