"""What a run keeps of its data: the training rows' keys, and the data itself when nothing else can reload it.

    RUN/keys.npy           the training rows' keys (int64 or UTF-8 bytes; see miniunlearn.data.keys),
                           absent when the keys are the row numbers 0..n-1
    RUN/data/<sha256>.npy  features (float32) and class numbers (int64) of a run trained on data in
                           memory (Dataset.from_arrays, DataFrames, the estimator): X_train, y_train,
                           X_test, y_test, each named by the SHA-256 of its file (content address)

run.json's ``dataset`` section records them (``keys``: file and SHA-256; ``stored``: part -> file).
Files are ``.npy`` written atomically and read with ``allow_pickle=False``; a file whose bytes no
longer hash to its recorded SHA-256 is refused, and the stored training rows must also match
the run's fingerprint (:meth:`miniunlearn.runs.Run.check_dataset`).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from miniunlearn.core.errors import RunError
from miniunlearn.core.storage import atomic_write_bytes, file_sha256
from miniunlearn.data import Dataset
from miniunlearn.runs.layout import DATA_DIR, KEYS_FILE, RUN_JSON

PARTS = {"X_train": np.float32, "y_train": np.int64, "X_test": np.float32, "y_test": np.int64}


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def store_keys(run_dir: Path, keys: np.ndarray | None, name: str = KEYS_FILE) -> dict | None:
    """Write ``keys.npy`` (unless the keys are None: row numbers); return run.json's record of it."""
    if keys is None:
        return None
    data = _npy_bytes(keys)
    atomic_write_bytes(Path(run_dir) / name, data)
    return {"file": name, "sha256": hashlib.sha256(data).hexdigest(), "count": int(len(keys)),
            "dtype": "int64" if keys.dtype.kind in "iu" else "utf-8"}


def store_data(run_dir: Path, dataset: Dataset) -> dict:
    """Write the dataset's arrays as content-addressed ``.npy`` files; return run.json's ``stored`` record."""
    record = {}
    for part, dtype in PARTS.items():
        data = _npy_bytes(np.asarray(getattr(dataset, part), dtype=dtype))
        name = f"{DATA_DIR}/{hashlib.sha256(data).hexdigest()}.npy"
        target = Path(run_dir) / name
        if not (target.is_file() and file_sha256(target) == Path(name).stem):
            atomic_write_bytes(target, data)
        record[part] = name
    return record


def _load_checked(path: Path, sha256: str, what: str, mmap: bool = False) -> np.ndarray:
    if not path.is_file():
        raise RunError(f"{what} {path} is missing")
    digest = file_sha256(path)
    if digest != sha256:
        raise RunError(f"{what} {path} was changed or damaged (SHA-256 {digest[:16]}... != recorded {sha256[:16]}...)")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise RunError(f"{what} {path} cannot be read ({exc})") from None


def load_keys(run_dir: Path, record: dict | None, n_train: int | None) -> np.ndarray:
    """The training rows' keys (row numbers when the run stores none); ``n_train`` None: as many as recorded."""
    if record is None:
        return np.arange(n_train or 0, dtype=np.int64)
    count = int(record.get("count", -1)) if n_train is None else n_train
    keys = _load_checked(Path(run_dir) / record["file"], record["sha256"], "the run's keys file")
    if keys.ndim != 1 or len(keys) != count or keys.dtype.kind not in "iuS":
        raise RunError(f"the run's keys file {Path(run_dir) / record['file']} does not hold {count} keys")
    return keys


def load_stored(run_dir: Path, record: dict, n_classes: int, preprocessing, keys: np.ndarray | None) -> Dataset:
    """The data stored in a run or base folder (memory-mapped), described by its dataset ``record``
    (run.json's or base.json's); the caller checks it against the fingerprint."""
    arrays = {}
    for part, dtype in PARTS.items():
        name = record["stored"].get(part)
        if not isinstance(name, str):
            raise RunError(f"{RUN_JSON} in {run_dir} records no stored {part}")
        array = _load_checked(Path(run_dir) / name, Path(name).stem, f"the run's stored {part}", mmap=True)
        if array.dtype != np.dtype(dtype):
            raise RunError(f"the run's stored {part} ({run_dir / name}) has dtype {array.dtype}, not {np.dtype(dtype)}")
        arrays[part] = array
    return Dataset(str(record.get("name", "arrays")), record["spec"], arrays["X_train"], arrays["y_train"],
                   arrays["X_test"], arrays["y_test"], int(n_classes), preprocessing, f"stored in run {run_dir}",
                   keys=keys)
