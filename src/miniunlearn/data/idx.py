"""MNIST-format (idx) image sets: Fashion-MNIST from Debian's ``dataset-fashion-mnist``, or MNIST.

The idx format (LeCun et al.): a big-endian header -- two zero bytes, a type code, the number
of dimensions -- then one big-endian uint32 per dimension, then the data. Files may be gzipped.
Images are read with numpy alone.
"""

from __future__ import annotations

import gzip
from numbers import Integral
from pathlib import Path

import numpy as np

from miniunlearn.core.errors import DataError
from miniunlearn.core.params import Interval, Param, Text
from miniunlearn.data.dataset import Dataset, check_finite, register_dataset
from miniunlearn.data.preprocessing import Preprocessing

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (optionally ``.gz``) into a numpy array, validating its header."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read idx file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an idx file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path} is malformed: truncated idx header")
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path} is malformed: header promises {shape} ({expected} bytes of data) "
                        f"but the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem, folder / stem.replace("-idx", ".idx")):
        if candidate.is_file():
            return candidate
    raise DataError(f"missing {stem}[.gz] in {folder}")


def load_idx_folder(folder: str | Path, name: str, hint: str, train_rows: int | None = None) -> Dataset:
    """Load the four standard idx files of an MNIST-format folder; pixels are scaled to [0, 1].

    ``train_rows`` keeps the first rows of the training file only (a smaller copy of the set for
    experiments that train many models); the test file is kept whole.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{name}: folder {folder} does not exist. {hint}")
    try:
        arrays = {split: (read_idx(_find(folder, images)), read_idx(_find(folder, labels)))
                  for split, (images, labels) in _SPLIT_FILES.items()}
    except DataError as exc:
        raise DataError(f"{name}: {exc}. {hint}") from exc
    out = {}
    for split, (images, labels) in arrays.items():
        if images.ndim < 2 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(f"{name}: {split} images {images.shape} and labels {labels.shape} do not match")
        out[split] = (images.reshape(images.shape[0], -1).astype(np.float64), labels.astype(np.int64))
    (X_tr, y_tr), (X_te, y_te) = out["train"], out["test"]
    if train_rows is not None:
        if train_rows > len(y_tr):
            raise DataError(f"{name}: train_rows={train_rows} but the training file holds {len(y_tr)} rows")
        X_tr, y_tr = X_tr[:train_rows], y_tr[:train_rows]
    if X_tr.shape[1] != X_te.shape[1]:
        raise DataError(f"{name}: train and test images differ in size ({X_tr.shape[1]} vs {X_te.shape[1]} pixels)")
    check_finite(name, X_tr, X_te)  # float idx files may hold NaN or inf
    if min(y_tr.min(initial=0), y_te.min(initial=0)) < 0 or len(y_tr) == 0 or len(y_te) == 0:
        raise DataError(f"{name}: labels must be class numbers 0, 1, 2, ... and both splits need rows")
    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    d = X_tr.shape[1]
    record = Preprocessing.class_numbers(n_classes, mean=np.zeros(d), scale=np.full(d, 255.0),
                                         description="pixels / 255 (no centring)", split=_split_note(train_rows))
    return Dataset(name, name, record.transform(X_tr), y_tr, record.transform(X_te), y_te, n_classes, record,
                   f"idx files in {folder}" + ("" if train_rows is None else f", first {train_rows} training rows"))


def _split_note(train_rows: int | None) -> str:
    if train_rows is None:
        return "the files' own train/test split"
    return f"the files' own train/test split, the first {train_rows} rows of the training file"


_TRAIN_ROWS = Param(None, Interval(Integral, 10, 10**8), None,
                    help="keep only the first train_rows rows of the training file (default: all of them)")


def _folder_available(folder: str) -> tuple[bool, str]:
    ok = Path(folder).is_dir()
    return ok, folder if ok else f"not found at {folder}"


@register_dataset(
    "fashion-mnist",
    "Fashion-MNIST, 70000 x 784, 10 classes (idx files; Debian package dataset-fashion-mnist)",
    parameters={"path": Param(FASHION_MNIST_DIR, Text(), help="folder of the four idx files"),
                "train_rows": _TRAIN_ROWS},
    available=lambda: _folder_available(FASHION_MNIST_DIR),
)
def load_fashion_mnist(path: str = FASHION_MNIST_DIR, train_rows: int | None = None) -> Dataset:
    hint = ("Install it with `apt-get install dataset-fashion-mnist` (files land in "
            f"{FASHION_MNIST_DIR}) or pass `fashion-mnist:path=DIR` for a folder with the four idx files.")
    return load_idx_folder(path, "fashion-mnist", hint, train_rows)


@register_dataset(
    "mnist",
    "MNIST handwritten digits, 70000 x 784, 10 classes (any folder of the four idx files)",
    parameters={"path": Param(None, Text(), None, help="folder of the four idx files (required)"),
                "train_rows": _TRAIN_ROWS},
    available=lambda: (False, "needs mnist:path=DIR"),
)
def load_mnist(path: str | None = None, train_rows: int | None = None) -> Dataset:
    hint = "Download the four MNIST idx files and pass `mnist:path=DIR`."
    if path is None:
        raise DataError(f"mnist: no folder given. {hint}")
    return load_idx_folder(path, "mnist", hint, train_rows)
