"""Pass one over a data file: every value checked, labels and keys collected, test rows drawn.

:func:`scan` reads a file's :class:`~miniunlearn.data.readers.Reader` chunk by chunk (so a file
larger than memory is fine): it counts the rows, flags each as held out or not (the caller's
draw, :mod:`miniunlearn.data.split`), collects the distinct labels (text labels become numbers when
every one of them is a number) and the keys, and accumulates the training rows' feature
statistics. :mod:`miniunlearn.data.files` then writes the rows into memory maps in a second pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from miniunlearn.core.errors import DataError
from miniunlearn.core.progress import progress_bar
from miniunlearn.data.keys import normalize_keys
from miniunlearn.data.preprocessing import RunningMoments, class_labels
from miniunlearn.data.readers import Chunk, Reader, preview


@dataclass
class Scan:
    """What the first pass over a file learns."""

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

    n_features = readers[0][0].n_features
    moments = RunningMoments(n_features)
    masks, distinct, key_parts, total = [], set(), [], 0
    with progress_bar(f"{where}: checking rows", None) as advance:
        for reader, held_out in readers:
            if reader.n_features != n_features:
                raise DataError(f"{reader.where}: {reader.n_features} features, but the training file has {n_features}")
            if not reader.has_labels:
                columns = f"; its columns: {preview(reader.feature_names)}" if reader.feature_names else ""
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
    # imported here: pandas takes ~0.35 s to load; only file scans need it
    import pandas as pd

    return [v.item() if isinstance(v, np.generic) else v for v in pd.unique(pd.Series(labels, dtype=object))]


def label_codes_of(labels: np.ndarray, label_codes: dict) -> np.ndarray:
    """Raw labels of a chunk as class numbers (``Scan.label_codes``)."""
    return np.fromiter((label_codes[v] for v in labels.tolist()), dtype=np.int64, count=len(labels))
