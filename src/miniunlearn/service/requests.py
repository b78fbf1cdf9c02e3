"""Forget requests: reading and validating files of 0-based training-row ids or of row keys."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from miniunlearn.core.errors import InputError
from miniunlearn.core.storage import atomic_write_bytes
from miniunlearn.data.keys import keys_without_training_rows

_ID = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: no "1_000", no other scripts' digits
_MAX_DIGITS = 18  # every int64 row id fits; longer numbers are out of range for any data set


def parse_ids(text: str, source: str = "ids") -> np.ndarray:
    """Parse one integer per line (blank lines and ``#`` comments allowed), naming the first bad line.

    Ids are ASCII decimal integers with an optional sign; anything else (``1.5``, ``1_000``,
    non-ASCII digits, numbers beyond int64) is refused with the line number.
    """
    values: list[int] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not _ID.fullmatch(line):
            raise InputError(f"{source}, line {number}: {raw.strip()[:40]!r} is not an integer row id")
        if len(line.lstrip("+-")) > _MAX_DIGITS:
            raise InputError(f"{source}, line {number}: row id {line[:24]}... is out of range (too large)")
        values.append(int(line))
    return np.asarray(values, dtype=np.int64)


def _read_text(path: str | Path, what: str, expected: str) -> str:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file not found: {path}")
    try:
        return path.read_bytes().decode("utf-8-sig")  # tolerate a byte-order mark
    except UnicodeDecodeError:
        raise InputError(f"{what} file {path} is not text (expected {expected})") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None


def read_ids_file(path: str | Path) -> np.ndarray:
    return parse_ids(_read_text(path, "ids", "one integer per line"), str(path))


def read_keys_file(path: str | Path) -> list[str]:
    """One key per line (the run's id column values; surrounding spaces removed, blank lines skipped).

    Keys are arbitrary text, so there are no comments: a line ``# 12`` is the key ``# 12``.
    """
    text = _read_text(path, "keys", "one key per line")
    if "\x00" in text:
        raise InputError(f"keys file {path} holds a NUL character; expected one key per line")
    keys = [line.strip() for line in text.splitlines()]
    keys = [k for k in keys if k]
    if not keys:
        raise InputError(f"keys file {path} holds no keys; nothing to forget")
    return keys


@dataclass(frozen=True)
class Named:
    """What a forget request names: training rows, whether it named rows or keys, and the keys it named
    whose rows were all held out for testing (the model never trained on them: nothing to unlearn)."""

    rows: np.ndarray
    by: str = "rows"
    keys_without_training_rows: tuple[str, ...] = ()

    @property
    def unchanged(self) -> bool:
        """True when every key named is held out only: the request changes no model."""
        return self.rows.size == 0 and bool(self.keys_without_training_rows)

    def stats(self) -> dict:
        """What result.json and the ledger record about the naming (requests by key only)."""
        return {"keys_without_training_rows": list(self.keys_without_training_rows)} if self.by == "keys" else {}


def request_rows(run, forget_ids=None, keys=None) -> Named:
    """The training rows a request names -- by row ids or by keys (exactly one).

    Keys whose rows were all held out for testing are accepted and listed (a person asking to be
    forgotten does not know which side of the split their rows fell on); keys that name no row at
    all are an :class:`InputError`.
    """
    if (forget_ids is None) == (keys is None):
        raise InputError("a forget request names rows (ids) or keys, exactly one of them")
    if keys is None:
        return Named(np.asarray(forget_ids))
    if isinstance(keys, (str, bytes)):
        raise InputError("keys must be a list of keys, not one string")
    texts = [str(k).strip() for k in keys]
    if not texts:
        raise InputError("forget request: no keys given; nothing to forget")
    held = keys_without_training_rows(run.keys(), texts, run.dataset.test_keys)
    named = [t for t in texts if t not in set(held)]
    rows = run.rows_for_keys(named) if named else np.zeros(0, dtype=np.int64)
    return Named(rows, "keys", tuple(held))


def validate_forget_ids(ids: np.ndarray, n_train: int, already_forgotten: np.ndarray | None = None,
                        source: str = "forget request") -> np.ndarray:
    """Check a forget set against the training rows; return it sorted.

    Refuses: an empty set, ids outside ``0..n_train-1``, duplicates, every row of the
    training set, and rows already forgotten.
    """
    ids = np.asarray(ids)
    if ids.size == 0:
        raise InputError(f"{source}: no row ids given; nothing to forget")
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"{source}: row ids must be a flat list of integers")
    ids = ids.astype(np.int64)
    bad = ids[(ids < 0) | (ids >= n_train)]
    if bad.size:
        raise InputError(f"{source}: {bad.size} id(s) out of range 0..{n_train - 1}, e.g. {int(bad[0])}")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = unique[counts > 1]
        raise InputError(f"{source}: {dup.size} duplicated id(s), e.g. {int(dup[0])}")
    previous = np.zeros(0, dtype=np.int64) if already_forgotten is None else np.asarray(already_forgotten, np.int64)
    again = np.intersect1d(unique, previous)
    if again.size:
        raise InputError(f"{source}: {again.size} row(s) are already forgotten, e.g. {int(again[0])}")
    if unique.size + previous.size >= n_train:
        raise InputError(f"{source}: forgetting these {unique.size} rows would remove every training row "
                         f"({n_train}); at least one must remain")
    return unique


def write_ids_file(path: str | Path, ids: np.ndarray) -> None:
    atomic_write_bytes(path, ("\n".join(str(int(i)) for i in ids) + "\n").encode())


def write_keys_file(path: str | Path, keys: list[str]) -> None:
    """One key per line (what :func:`read_keys_file` reads back)."""
    atomic_write_bytes(path, "".join(f"{k}\n" for k in keys).encode("utf-8"))


def random_forget_ids(n_train: int, ratio: float, seed: int) -> np.ndarray:
    """A seeded uniformly random forget set of ``round(ratio * n_train)`` rows (at least one)."""
    if not 0 < ratio < 1:
        raise InputError(f"forget ratio must lie in (0, 1), got {ratio}")
    r = max(1, int(round(ratio * n_train)))
    return np.sort(np.random.default_rng([seed, 7919]).choice(n_train, size=r, replace=False))
