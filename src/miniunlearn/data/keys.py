"""Row keys: the identifiers a user names rows by ("delete user 4711"), not row numbers.

Every training row has a key: the value of the data's id column, or -- when there is none -- its
0-based row number in the original data. Several rows may share a key (one user, many rows);
forgetting a key forgets every row with it.

Keys are held as one of two numpy types, both stored as ``.npy`` without pickle:

* ``int64`` when every key is an integer (and written the canonical way: no sign, no leading zeros);
* ``S`` (UTF-8 bytes, fixed width) otherwise -- surrounding spaces removed; a key may not be
  empty or contain a line break or a NUL character (keys files hold one key per line).

The *canonical* text of a key is ``str(int)`` or the decoded string: the form in keys files,
in the deletion ledger and in ``ledger --forgotten-keys``.
"""

from __future__ import annotations

import re

import numpy as np

from miniunlearn.core.errors import DataError, InputError

_CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]{0,17}")


def normalize_keys(values, what: str = "keys") -> np.ndarray:
    """Keys from any array, list or pandas Series -> ``int64`` or UTF-8 ``S`` array (see the module docstring)."""
    # imported here: pandas takes ~0.35 s to load; used only to recognise a Series
    import pandas as pd

    array = values.to_numpy() if isinstance(values, (pd.Series, pd.Index)) else np.asarray(values)
    if array.ndim != 1:
        raise DataError(f"{what} must be one key per row (a 1-d array), got shape {array.shape}")
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    if array.dtype.kind == "S":
        array = np.char.decode(array, "utf-8")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            raise DataError(f"{what}: row {int(np.flatnonzero(bad)[0])} has the key {array[bad][0]!r}; "
                            "keys must be integers or text")
        return array.astype(np.int64)
    return _text_keys(array, what)


def _text_keys(array: np.ndarray, what: str) -> np.ndarray:
    # imported here: pandas takes ~0.35 s to load; only text keys need it
    import pandas as pd

    series = pd.Series(array, dtype=object)
    missing = series.isna().to_numpy()
    if missing.any():
        raise DataError(f"{what}: row {int(np.flatnonzero(missing)[0])} has no key (missing value)")
    text = series.astype(str).str.strip()
    bad = ((text.str.len() == 0) | text.str.contains(r"[\r\n\x00]", regex=True)).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{what}: row {row} has the key {array[row]!r}; a key must be non-empty text on one line")
    if text.str.fullmatch(_CANONICAL_INT.pattern).all():
        return text.astype(np.int64).to_numpy()
    return text.str.encode("utf-8").to_numpy().astype(np.bytes_)


def canonical(keys: np.ndarray) -> list[str]:
    """The canonical text of every key (``str(int)`` or the decoded UTF-8 string)."""
    keys = np.asarray(keys)
    if keys.dtype.kind in "iu":
        return [str(int(k)) for k in keys]
    return [k.decode("utf-8") for k in keys]


def parse_requested(texts: list[str], like: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Requested keys (text) in the type of ``like``; returns (keys, texts that cannot be keys of that type)."""
    if np.asarray(like).dtype.kind in "iu":
        good = [t for t in texts if _CANONICAL_INT.fullmatch(t)]
        impossible = [t for t in texts if not _CANONICAL_INT.fullmatch(t)]
        return np.asarray([int(t) for t in good], dtype=np.int64), impossible
    return np.asarray([t.encode("utf-8") for t in texts], dtype=np.bytes_), []


def rows_with_keys(train_keys: np.ndarray, requested: list[str], test_keys: np.ndarray | None = None,
                   source: str = "forget request") -> np.ndarray:
    """Every training row whose key is in ``requested`` (sorted row numbers).

    Keys that name no training row are an :class:`InputError` listing the first few (and saying
    how many of them name held-out test rows, which the model never trained on).
    """
    if not requested:
        raise InputError(f"{source}: no keys given; nothing to forget")
    unique_texts = list(dict.fromkeys(requested))
    wanted, impossible = parse_requested(unique_texts, train_keys)
    present = np.isin(wanted, train_keys)
    missing = set(impossible) | set(canonical(wanted[~present]))
    unknown = [t for t in unique_texts if t in missing]  # in the order asked
    if unknown:
        held_out = 0
        if test_keys is not None and len(test_keys):
            held_wanted, _ = parse_requested(unknown, test_keys)
            held_out = int(np.isin(held_wanted, test_keys).sum())
        note = f" ({held_out} of them name held-out test rows, which the model never trained on)" if held_out else ""
        shown = ", ".join(repr(k) for k in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise InputError(f"{source}: {len(unknown)} of {len(unique_texts)} key(s) name no training row: {shown}{note}")
    return np.flatnonzero(np.isin(train_keys, wanted))


def keys_without_training_rows(train_keys: np.ndarray, requested: list[str], test_keys: np.ndarray | None) -> list[str]:
    """The requested keys (canonical text, in the order asked, once each) that name held-out test rows
    but no training row: people the model never trained on, whom a deletion request may still name."""
    if test_keys is None or not len(test_keys) or not requested:
        return []
    texts = list(dict.fromkeys(requested))
    in_test, impossible = parse_requested(texts, test_keys)
    held = set(canonical(in_test[np.isin(in_test, test_keys)])) - set(impossible)
    if not held:
        return []
    as_train, _ = parse_requested(sorted(held), train_keys)
    held -= set(canonical(as_train[np.isin(as_train, train_keys)]))
    return [t for t in texts if t in held]
