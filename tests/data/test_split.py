"""The held-out draw of data files: by key (the default with keys) or by row position.

The key rule is checked against the documented formula computed here with hashlib alone, and
against what matters to a deletion: every row of a key on one side, and deleting rows never moves
another row across the split.
"""

import numpy as np
import pandas as pd
import pytest

from miniunlearn.core.errors import DataError
from miniunlearn.data import load_dataset
from miniunlearn.data import recorded_spec
from miniunlearn.data.split import held_out_keys, held_out_rows
from tests.helpers import documented_u


@pytest.fixture
def users(tmp_path, rng):
    """(frame, path): 400 rows of 100 users (4 rows each, shuffled), with a unique row number."""
    n = 400
    frame = pd.DataFrame({"user": rng.permutation(np.repeat(np.arange(500, 600), 4)), "a": rng.normal(size=n),
                          "b": rng.normal(size=n)})
    frame["label"] = np.where(frame.a + rng.logistic(size=n) > 0, "yes", "no")
    frame["row"] = np.arange(n)
    path = tmp_path / "users.csv"
    frame.drop(columns=["row"]).to_csv(path, index=False)
    return frame, path


def test_keyed_rows_are_held_out_by_the_documented_hash_of_their_key(users):
    frame, path = users
    ds = load_dataset(f"csv:path={path},target=label,id=user,seed=5")
    expected = {u for u in frame.user.unique() if documented_u(str(u), 5) < 0.2}
    assert set(ds.test_keys.tolist()) == expected and set(ds.keys.tolist()).isdisjoint(expected)
    assert ds.n_test == 4 * len(expected) and ds.split_rule == "key"  # every row of a held-out user
    assert ds.spec.endswith(",seed=5,split=key")
    assert "drawn by key (seed 5)" in ds.preprocessing.split


def test_deleting_rows_never_moves_another_row_across_the_split(users, tmp_path):
    frame, path = users
    before = load_dataset(f"csv:path={path},target=label,id=user")
    leaving = [int(before.keys[0]), int(before.keys[7]), int(before.test_keys[0])]
    frame[~frame.user.isin(leaving)].drop(columns=["row"]).to_csv(path, index=False)
    after = load_dataset(f"csv:path={path},target=label,id=user")
    assert after.keys.tolist() == [k for k in before.keys.tolist() if k not in leaving]
    assert after.test_keys.tolist() == [k for k in before.test_keys.tolist() if k not in leaving]
    # the row rule, by contrast, moves rows: the same deletion changes which of the others are held out
    row = frame.copy()
    row.drop(columns=["row"]).to_csv(tmp_path / "r.csv", index=False)
    spec = f"csv:path={tmp_path / 'r.csv'},target=label,id=user,split=row"
    kept_before = set(load_dataset(spec).keys.tolist()) - set(leaving)
    row[~row.user.isin(leaving)].drop(columns=["row"]).to_csv(tmp_path / "r.csv", index=False)
    assert set(load_dataset(spec).keys.tolist()) != kept_before


def test_the_row_rule_stays_the_per_row_draw_and_needs_no_keys(users, tmp_path):
    frame, path = users
    by_row = load_dataset(f"csv:path={path},target=label,id=user,split=row")
    held = held_out_rows(0, len(frame), 0.2, 0)
    assert by_row.test_keys.tolist() == frame.user[held].tolist() and by_row.split_rule == "row"
    plain = load_dataset(f"csv:path={path},target=label")  # no keys: the row rule, recorded as before
    assert np.flatnonzero(held).tolist() == plain.test_keys.tolist() and "split=" not in plain.spec
    with pytest.raises(DataError, match="split=key .* no key column"):
        load_dataset(f"csv:path={path},target=label,split=key")
    frame.head(50).drop(columns=["row"]).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match="with test=FILE there is none"):
        load_dataset(f"csv:path={path},target=label,id=user,test={tmp_path / 't.csv'},split=key")


def test_the_key_draw_does_not_depend_on_chunking_or_the_key_type():
    keys = np.random.default_rng(1).integers(0, 50_000, size=30_000)
    whole = held_out_keys(keys, 0.3, 9)
    pieces = np.concatenate([held_out_keys(keys[s:s + 4099], 0.3, 9) for s in range(0, len(keys), 4099)])
    assert np.array_equal(whole, pieces)
    assert np.array_equal(whole, held_out_keys(np.char.mod("%d", keys), 0.3, 9))  # "17" is the key 17
    distinct = np.unique(keys)
    share = np.mean([documented_u(str(k), 9) < 0.3 for k in distinct])
    assert abs(share - 0.3) < 0.02  # ~26000 keys: standard deviation 0.003
    assert not held_out_keys(keys, 0.0, 9).any()


def test_a_run_recorded_before_the_key_rule_reloads_with_the_row_rule():
    old = {"spec": "csv:path=/data/u.csv,target=label,id=user", "fingerprint": "x", "n_train": 3}
    assert recorded_spec(old) == "csv:path=/data/u.csv,target=label,id=user,split=row"
    assert recorded_spec({**old, "split": "key"}) == old["spec"]
    given = {**old, "spec": "csv:path=/data/u.csv,target=label,id=user,test=/data/t.csv"}
    assert recorded_spec(given) == given["spec"]
    assert recorded_spec({**old, "spec": "digits"}) == "digits"
