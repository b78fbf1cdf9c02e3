"""Numeric feature columns of a pandas DataFrame, checked value by value.

Every reader of tables (:mod:`miniunlearn.data.readers`) and data given in memory
(:mod:`miniunlearn.data.arrays`) turns columns into float64 features here, so a missing,
non-numeric or infinite value is reported the same way everywhere: by its row (or CSV line) and column.
"""

from __future__ import annotations

import numpy as np

from miniunlearn.core.errors import DataError


def numeric_features(frame, names: list[str], start: int, where: str, line_offset: int) -> np.ndarray:
    """The columns ``names`` of a pandas DataFrame as float64, naming the first bad value's row and column.

    ``line_offset`` turns a 0-based row into what people look up: a CSV's line number (2 for the
    row after the header) or 0 for a 0-based row number.
    """
    # imported here: pandas takes ~0.35 s to load; only table rows (CSV, Parquet, DataFrames) come here
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
                raise DataError(f"{where}: {row_name(start + i, line_offset)}, column {name!r}: {values[i]!r} is not a number")
            values = numbers
        values = values.astype(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            problem = "is empty (a missing value)" if np.isnan(values[i]) else f"is {values[i]} (not finite)"
            raise DataError(f"{where}: {row_name(start + i, line_offset)}, column {name!r} {problem}")
        out[:, j] = values
    return out


def row_name(row: int, line_offset: int) -> str:
    """How people look a row up: ``line N`` of a CSV file (``line_offset`` 2: after the header), else ``row N``."""
    return f"line {row + line_offset}" if line_offset else f"row {row}"
