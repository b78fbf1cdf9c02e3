"""Your own data files as datasets: every format of :data:`~miniunlearn.data.readers.FORMATS`,
registered as ``NAME:path=FILE[,...]`` (and as a bare file name by its suffix).

Every format streams the same way, in chunks of rows, so a file larger than memory trains:

1. :func:`~miniunlearn.data.scan.scan` checks every value (a missing, non-numeric or infinite
   feature is an error naming its line or row and column), collects the labels and keys, draws
   the held-out rows (:mod:`miniunlearn.data.split`: by key when the data have keys, else by row
   position) and accumulates the training rows' feature statistics;
2. :func:`~miniunlearn.data.memmap_cache.build_memmap_dataset` writes the standardised float32
   memory maps into the cache directory (``MINIUNLEARN_CACHE``), keyed by the file's path,
   size, modification time and the options -- later loads of an unchanged file open the maps.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from miniunlearn.core.errors import DataError
from miniunlearn.data.dataset import Dataset, parse_dataset_spec, register_dataset
from miniunlearn.data.memmap_cache import build_memmap_dataset, cached_folder, folder_preprocessing
from miniunlearn.data.readers import FORMATS, Chunk, FileFormat, Reader, data_file
from miniunlearn.data.scan import label_codes_of, scan
from miniunlearn.data.split import DEFAULT_TEST_SIZE, SPLIT_RULES, held_out_keys, held_out_rows, split_rule

CACHE_VERSION = "files-v1"


def table_dataset(name: str, spec: str, train: Reader, test: Reader | None, test_size: float | None, seed: int,
                  standardize: bool, fingerprint_of_source: str, statistics=None, split: str | None = None) -> Dataset:
    """Scan the file(s), write (or open the cached) float32 memory maps, and return the :class:`Dataset`.

    The cache key covers the spec (file, columns, split, scaling), the files' size and
    modification time, and given ``statistics`` (a :class:`Preprocessing` whose means and scales
    standardise the rows instead of the training rows' own), so an edited file is read again.
    """
    rule = split_rule(train.where, train.key_column is not None, test is not None, test_size, split)
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
                where = f"{train.where}: keys" + (f" (counting rows from {chunk.start})" if chunk.start else "")
                return held_out_keys(chunk.keys, share, seed, where)
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
                    yield chunk.X, label_codes_of(chunk.labels, summary.label_codes)

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


def _loader(fmt: FileFormat):
    """``load(**options)`` of a format: open its readers, record the spec, build the dataset.

    The recorded spec names the files by absolute path and leaves out default values; a drawn
    split of keyed data names its rule (``split=key`` or ``split=row``), so the spec reloads the
    same rows whatever the default."""

    def load(statistics=None, **options) -> Dataset:
        main = data_file(options.get("path"), fmt.name)
        test_file = None if options.get("test") is None else data_file(options["test"], f"{fmt.name} test")
        train, test = fmt.open({**options, "path": main, "test": test_file})
        if test_file is not None and options.get("split") is not None:
            raise DataError(f"{train.where}: split= chooses the held-out draw; with test=FILE there is none")
        split = None if test is not None else options.get("split")  # (npz test arrays: no draw either)
        rule = split_rule(train.where, train.key_column is not None, test is not None, options.get("test_size"), split)
        recorded = {**options, "path": main, "test": test_file, "seed": options.get("seed") or None,
                    "standardize": None if options.get("standardize", 1) else 0,
                    "split": rule if rule in SPLIT_RULES and train.key_column is not None else None}
        spec = f"{fmt.name}:" + ",".join(f"{k}={recorded[k]}" for k in fmt.recorded if recorded.get(k) is not None)
        return table_dataset(fmt.name, spec, train, test, options.get("test_size"), options.get("seed", 0),
                             bool(options.get("standardize", 1)), _source_identity(main, test_file), statistics, split)

    return load


for _format in FORMATS.values():
    register_dataset(_format.name, _format.summary, parameters=_format.parameters, suffixes=_format.suffixes,
                     available=lambda f=_format: (True, f"{f.name}:path=FILE" + (",target=COLUMN" if "target" in
                                                                                 f.parameters else "")),
                     )(_loader(_format))


def raw_reader(spec: str, feature_names: list[str] | None, n_features: int) -> Reader | None:
    """Every row of a data file named by ``spec``, as raw features in the model's column order.

    Tables select the model's feature columns by name (extra columns are ignored; ``id=`` names
    the key column, ``target=`` a label column). npz files give ``X`` (or ``X_test``) with ``ids``
    and ``y`` when present, svmlight files every row. Returns None when ``spec`` is not a file
    format (a registered dataset).
    """
    info, options = parse_dataset_spec(spec)
    if info.name not in FORMATS:
        return None
    reader = FORMATS[info.name].every_row(options, feature_names, n_features)
    if reader.n_features != n_features:
        raise DataError(f"{reader.where}: {reader.n_features} features per row, the model expects {n_features}")
    return reader
