"""Row keys: integer and text keys, rows sharing a key, and what an unknown key says."""

import numpy as np
import pytest

from miniunlearn.core.errors import DataError, InputError
from miniunlearn.data.keys import canonical, keys_without_training_rows, normalize_keys, rows_with_keys


def test_keys_are_integers_only_when_written_as_integers():
    assert normalize_keys(["7", " 12 ", "0"]).dtype == np.int64
    padded = normalize_keys(["007", "12"])  # "007" is an identifier, not the number 7
    assert padded.dtype.kind == "S" and canonical(padded) == ["007", "12"]
    assert canonical(normalize_keys(np.array([4711.0, 3.0]))) == ["4711", "3"]
    assert canonical(normalize_keys(["é", "user 1"])) == ["é", "user 1"]
    with pytest.raises(DataError, match="row 1 has no key"):
        normalize_keys(["a", None])
    with pytest.raises(DataError, match="row 0 has the key"):
        normalize_keys(["a\nb"])
    with pytest.raises(DataError, match="keys must be integers or text"):
        normalize_keys(np.array([1.5]))


def test_every_row_of_a_key_and_unknown_keys_listed_with_held_out_ones_named():
    keys = normalize_keys(["u1", "u2", "u1", "u3", "u1"])
    assert rows_with_keys(keys, ["u1", "u3"]).tolist() == [0, 2, 3, 4]
    with pytest.raises(InputError, match=r"2 of 3 key\(s\) name no training row: 'x', 'u9' \(1 of them name "
                                         r"held-out test rows"):
        rows_with_keys(keys, ["x", "u1", "u9"], test_keys=normalize_keys(["u9"]))
    numbers = normalize_keys([10, 11, 12])
    assert rows_with_keys(numbers, ["12", "10"]).tolist() == [0, 2]
    with pytest.raises(InputError, match="'abc'"):
        rows_with_keys(numbers, ["abc"])


def test_keys_with_held_out_rows_only_are_told_apart_from_unknown_and_trained_ones():
    train, test = normalize_keys([10, 11, 12, 11]), normalize_keys([13, 14, 12])
    # 12 has rows on both sides (a per-row split): it was trained on; 99 and "x" name no row at all
    assert keys_without_training_rows(train, ["14", "12", "99", "x", "13", "14"], test) == ["14", "13"]
    assert keys_without_training_rows(train, ["13"], None) == []
    text = normalize_keys(["a", "b"])
    assert keys_without_training_rows(text, ["c", "a", "17"], normalize_keys(["c", "17"])) == ["c", "17"]
