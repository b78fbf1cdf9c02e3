"""The held-out draw of a data file: which rows are test rows, decided while the file is read in chunks.

Two rules, both independent of how the file is chunked and needing no row count in advance:

``key`` (the default when the data have keys: an ``id`` column, npz ``ids``)
    A row is held out when ``u(key) < test_size`` with

        u(key) = int(BLAKE2b-64(canonical text of the key; key = seed)) >> 11, divided by 2^53,

    a number in [0, 1) that depends on the row's key and the seed only. Every row of one key
    falls on the same side (no person's rows on both sides), and deleting rows from the file
    never moves another row across the split: the rows a run trained on stay its training rows.
    The canonical text is the one of :mod:`miniunlearn.data.keys` (``"17"`` for the integer 17).

``row`` (the only rule without keys, and what every run trained before the key rule records)
    A row is held out when ``u_i < test_size`` with ``u_i`` uniform from a generator seeded by
    ``(seed, block of 65536 rows)``: the draw follows the row's position in the file, so
    deleting rows moves later rows between training and test.

Either way the held-out share is ``test_size`` up to sampling noise, not exactly (by key, the
share of keys; a key's rows move together).
"""

from __future__ import annotations

import hashlib

import numpy as np

from miniunlearn.core.errors import DataError
from miniunlearn.data.keys import canonical, normalize_keys

SPLIT_RULES = ("key", "row")
DEFAULT_TEST_SIZE = 0.2
SPLIT_BLOCK = 1 << 16
_PERSON = b"miniunlearn-test"  # BLAKE2b personalisation: this draw, not any other use of the seed


def held_out_rows(start: int, count: int, test_size: float, seed: int) -> np.ndarray:
    """Which of rows ``start .. start + count`` are held out by the ``row`` rule (module docstring)."""
    out = np.zeros(count, dtype=bool)
    if test_size <= 0 or count == 0:
        return out
    first, last = start // SPLIT_BLOCK, (start + count - 1) // SPLIT_BLOCK
    for block in range(first, last + 1):
        draws = np.random.default_rng([int(seed), 0x7E57, block]).random(SPLIT_BLOCK)
        lo, hi = max(start, block * SPLIT_BLOCK), min(start + count, (block + 1) * SPLIT_BLOCK)
        out[lo - start:hi - start] = draws[lo - block * SPLIT_BLOCK:hi - block * SPLIT_BLOCK] < test_size
    return out


def key_uniform(text: str, seed: int) -> float:
    """``u(key)`` of the ``key`` rule: a keyed BLAKE2b hash of the key's canonical text, mapped to [0, 1)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=int(seed).to_bytes(8, "little"),
                             person=_PERSON).digest()
    return (int.from_bytes(digest, "big") >> 11) / float(1 << 53)  # 53 bits: exact in float64


def held_out_keys(keys, test_size: float, seed: int, what: str = "keys") -> np.ndarray:
    """Which rows with ``keys`` (raw values of one chunk) are held out by the ``key`` rule."""
    keys = normalize_keys(keys, what)
    out = np.zeros(len(keys), dtype=bool)
    if test_size <= 0 or len(keys) == 0:
        return out
    distinct, inverse = np.unique(keys, return_inverse=True)  # hash each key once per chunk
    chosen = np.fromiter((key_uniform(text, seed) < test_size for text in canonical(distinct)),
                         dtype=bool, count=len(distinct))
    return chosen[inverse]


def split_rule(where: str, has_keys: bool, has_test_rows: bool, test_size: float | None, split: str | None) -> str:
    """How a file's test rows are chosen: ``key`` or ``row`` (drawn), ``given`` (a test file or the
    npz test arrays), ``none`` (``test_size=0``). ``split`` is the option: None for the default,
    ``key`` when the data have keys."""
    if has_test_rows and test_size is not None:
        raise DataError(f"{where}: give test=FILE or test_size, not both")
    if has_test_rows:
        return "given"
    if split == "key" and not has_keys:
        raise DataError(f"{where}: split=key draws the held-out rows by key, but the data have no key "
                        "column (id=COLUMN; npz: an ids array)")
    if test_size is not None and float(test_size) == 0:
        return "none"
    return split or ("key" if has_keys else "row")
