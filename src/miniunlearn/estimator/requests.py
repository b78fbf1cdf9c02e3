"""A deletion request to the estimator -> the training rows it names, or a ``ValueError`` saying why not.

Rows are named by key (``keys=``: the values given to ``fit(..., keys=...)``; a scalar is one
key) or by row number (``rows=``: positions among the estimator's current training rows). An
estimator fitted without keys has no keys: ``keys=`` is refused rather than read as row numbers,
which would silently remove other people's rows.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import pandas as pd  # (loaded anyway by the estimator's scikit-learn transformers)

from miniunlearn.core.errors import InputError
from miniunlearn.data.keys import canonical, normalize_keys, rows_with_keys


def as_list(values, what: str) -> list:
    """A request's values as a list: a scalar (a number or a string) is a one-element request."""
    if isinstance(values, (str, bytes, Integral, np.generic)) or np.ndim(values) == 0:
        return [values]
    if isinstance(values, (pd.Series, pd.Index)):
        values = values.to_numpy()
    out = list(values.ravel()) if isinstance(values, np.ndarray) else list(values)
    if not out:
        raise InputError(f"{what}: empty; nothing to forget")
    return out


def _key_array(values: list) -> np.ndarray:
    """Requested keys as one array: integers stay int64 (the fast path), anything else is text."""
    if all(isinstance(v, (Integral, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values):
        return np.asarray(values, dtype=np.int64)
    return np.asarray(values, dtype=object)


def row_numbers(rows, n_rows: int) -> np.ndarray:
    """Checked row numbers 0..n_rows-1 (integers, no repeats), sorted."""
    values = as_list(rows, "rows")
    bad = [v for v in values if isinstance(v, (bool, np.bool_)) or not isinstance(v, (Integral, np.integer))]
    if bad:
        raise InputError(f"rows: row numbers must be integers, got {bad[0]!r}")
    ids = np.asarray(values, dtype=np.int64)
    outside = ids[(ids < 0) | (ids >= n_rows)]
    if len(outside):
        raise InputError(f"rows: {int(outside[0])} is not a row number of the {n_rows} training rows (0..{n_rows - 1})")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise InputError(f"rows: row {int(unique[counts > 1][0])} is named more than once")
    return unique


def requested_rows(rows, keys, train_keys: np.ndarray | None, n_rows: int, forgotten: np.ndarray) -> np.ndarray:
    """The rows a request names that are not forgotten yet (sorted), or a :class:`InputError` (a ValueError).

    ``train_keys`` is None when the estimator was fitted without keys. Rows named by number that
    are already forgotten are an error; so are keys all of whose rows are.
    """
    if (rows is None) == (keys is None):
        raise InputError("forget: name the rows to forget either by key (keys=...) or by row number (rows=...), "
                         "not both or neither")
    if keys is not None:
        if train_keys is None:
            raise InputError("forget(keys=...): this estimator was fitted without keys, so it has none; pass "
                             "keys=... to fit (user ids, one per row), or name row numbers with forget(rows=...)")
        texts = canonical(normalize_keys(_key_array(as_list(keys, "keys")), "keys"))
        ids = rows_with_keys(train_keys, texts, source="forget(keys=...)")
        fresh = np.setdiff1d(ids, forgotten)
        if len(fresh) == 0:
            shown = ", ".join(repr(t) for t in texts[:5])
            raise InputError(f"forget(keys=...): every row of {shown} is already forgotten")
        return fresh
    ids = row_numbers(rows, n_rows)
    again = np.intersect1d(ids, forgotten)
    if len(again):
        raise InputError(f"forget(rows=...): row {int(again[0])} is already forgotten ({len(again)} of the "
                         f"{len(ids)} rows named are)")
    return ids


def check_not_everything(ids: np.ndarray, forgotten: np.ndarray, n_rows: int) -> None:
    if len(np.union1d(ids, forgotten)) >= n_rows:
        raise InputError(f"forget: this request would leave no training row ({n_rows} in all); fit a new model instead")
