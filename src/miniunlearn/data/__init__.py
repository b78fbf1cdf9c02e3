"""Data loaders, dataset specs and training-data fingerprints.

``load_dataset("NAME[:key=value,...]")`` returns a :class:`Dataset`; ``dataset_names()``
lists what is registered. Every loader is deterministic: the same spec gives the same
rows, split and preprocessing, recorded in the dataset's ``preprocessing`` field (a
:class:`Preprocessing`). A user's own files are the formats ``csv``, ``parquet``, ``npz`` and
``svmlight`` (:mod:`miniunlearn.data.readers`, registered by :mod:`miniunlearn.data.files`); data
in memory is :func:`from_arrays` (also ``Dataset.from_arrays``).

Modules, each one job: ``dataset`` (the Dataset, specs, the loader registry), ``arrays`` (data in
memory), ``features`` (numeric columns, checked), ``readers`` (the file formats), ``split`` (the
held-out draw), ``scan`` (pass one over a file), ``files`` (file datasets: scan + cache),
``memmap_cache`` (the float32 memory-map cache), ``builtin``, ``idx``, ``large_sets`` (the
registered sets), ``keys``, ``preprocessing``, ``fingerprint``.
"""

import numpy as np

from miniunlearn.core.storage import atomic_write
from miniunlearn.data import builtin, files, idx, large_sets  # noqa: F401  (registers the loaders)
from miniunlearn.data.arrays import from_arrays
from miniunlearn.data.dataset import Dataset, dataset_info, dataset_names, load_dataset, recorded_spec
from miniunlearn.data.features import numeric_features
from miniunlearn.data.files import raw_reader
from miniunlearn.data.fingerprint import fingerprint_arrays
from miniunlearn.data.idx import read_idx
from miniunlearn.data.memmap_cache import build_memmap_dataset, cache_dir
from miniunlearn.data.preprocessing import Preprocessing
from miniunlearn.data.readers import FORMATS, Reader

# ``Dataset.from_arrays(...)`` stays the documented spelling; bound here, where both modules are
# loaded, so that dataset.py (the Dataset) need not import arrays.py (which builds one)
Dataset.from_arrays = staticmethod(from_arrays)

__all__ = ["Dataset", "Preprocessing", "dataset_info", "dataset_names", "load_dataset", "fingerprint_arrays",
           "read_idx", "export_dataset", "from_arrays", "numeric_features", "raw_reader", "recorded_spec",
           "build_memmap_dataset", "cache_dir", "FORMATS", "Reader"]


def export_dataset(dataset: Dataset, out: str) -> None:
    """Write ``X_train, y_train, X_test, y_test`` exactly as training sees them to an .npz file,
    with the rows' keys as ``ids_train`` and ``ids_test`` when the data have them (``npz:path=`` reads it back)."""
    keys = {}
    if dataset.keys is not None:
        keys["ids_train"] = dataset.keys
    if dataset.test_keys is not None:
        keys["ids_test"] = dataset.test_keys

    def write(tmp):
        with open(tmp, "wb") as handle:
            np.savez(handle, X_train=np.asarray(dataset.X_train, dtype=np.float64),
                     y_train=np.asarray(dataset.y_train, dtype=np.int64),
                     X_test=np.asarray(dataset.X_test, dtype=np.float64),
                     y_test=np.asarray(dataset.y_test, dtype=np.int64), **keys)

    atomic_write(out, write)
