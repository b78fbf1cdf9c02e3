"""A user's own files: csv, parquet, npz and svmlight specs, checked against pandas, numpy and
scikit-learn reading the same files."""

import os

import numpy as np
import pandas as pd
import pytest

from miniunlearn.core.errors import DataError
from miniunlearn.data import load_dataset
from miniunlearn.data.split import held_out_rows
from miniunlearn.data.keys import canonical


def _table(rng, n=600, labels=("bird", "cat", "dog")):
    frame = pd.DataFrame({"user": [f"u{i % 150}" for i in range(n)], "a": rng.normal(size=n),
                          "b": rng.normal(5.0, 3.0, size=n), "c": rng.integers(0, 9, size=n)})
    frame["label"] = np.asarray(labels)[(frame.a > 0).astype(int) + (frame.b > 5).astype(int)]
    frame["row"] = np.arange(n)  # a unique id, to find every row after the split
    return frame


@pytest.fixture
def table(tmp_path, rng):
    """(frame, path): the table without its text column "user", as a CSV file."""
    frame = _table(rng).drop(columns=["user"])
    path = tmp_path / "own.csv"
    frame.to_csv(path, index=False)
    return frame, path


def test_csv_rows_split_standardisation_and_labels_match_pandas(table):
    frame, path = table
    ds = load_dataset(f"csv:path={path},target=label,id=row")
    train_rows = frame.set_index("row").loc[ds.keys]
    test_rows = frame.set_index("row").loc[ds.test_keys]
    # every row is in exactly one split, in file order
    assert sorted(np.concatenate([ds.keys, ds.test_keys]).tolist()) == list(range(len(frame)))
    assert np.all(np.diff(ds.keys) > 0) and 0.1 < ds.n_test / len(frame) < 0.3
    features = ["a", "b", "c"]
    raw = train_rows[features].to_numpy(dtype=np.float64)
    mean, std = raw.mean(axis=0), raw.std(axis=0)
    expected = ((raw - mean) / std).astype(np.float32)
    assert ds.X_train.dtype == np.float32 and np.array_equal(np.asarray(ds.X_train), expected)
    assert np.allclose(ds.preprocessing.mean, mean, rtol=1e-12) and np.allclose(ds.preprocessing.scale, std, rtol=1e-12)
    assert np.array_equal(np.asarray(ds.X_test), ((test_rows[features].to_numpy() - mean) / std).astype(np.float32))
    assert ds.preprocessing.classes == ("bird", "cat", "dog") and ds.preprocessing.feature_names == ("a", "b", "c")
    assert ds.preprocessing.decode(np.asarray(ds.y_train)).tolist() == train_rows.label.tolist()
    assert ds.spec == f"csv:path={path.resolve()},target=label,id=row,split=key"


def test_without_an_id_column_keys_are_file_row_numbers(table):
    _, path = table
    ds = load_dataset(f"csv:path={path},target=label")
    # the key of a training row is its data row number: the "row" feature column holds the same number
    raw_row = np.asarray(ds.X_train)[:, 3] * ds.preprocessing.scale[3] + ds.preprocessing.mean[3]
    assert np.allclose(raw_row, ds.keys, atol=1e-3)


def test_string_keys_are_kept_as_text_and_shared_by_rows(tmp_path, rng):
    frame = _table(rng)
    path = tmp_path / "users.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"line 2, column 'user': 'u0' is not a number"):
        load_dataset(f"csv:path={path},target=label,id=row")  # text columns cannot be features
    ds = load_dataset(f"csv:path={path},target=label,id=user")
    assert ds.keys.dtype.kind == "S"
    all_keys = canonical(np.concatenate([ds.keys, ds.test_keys]))
    assert sorted(all_keys) == sorted(frame.user)  # each of the 150 users has 4 rows, split between the sets


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.assign(b=f.b.astype(object).where(f.index != 6, "abc")), r"line 8, column 'b': 'abc' is not a number"),
    (lambda f: f.assign(a=f.a.where(f.index != 3, np.nan)), r"line 5, column 'a' is empty \(a missing value\)"),
    (lambda f: f.assign(c=f.c.astype(float).where(f.index != 0, np.inf)), r"line 2, column 'c' is inf \(not finite\)"),
    (lambda f: f.assign(label=f.label.where(f.index != 9, None)), r"line 11, column 'label': no label"),
    (lambda f: f.assign(label="only"), "classification needs at least two classes"),
    (lambda f: f.iloc[:0], "no data rows"),
])
def test_bad_values_name_their_line_and_column(table, tmp_path, edit, message):
    frame, _ = table
    path = tmp_path / "bad.csv"
    edit(frame).to_csv(path, index=False)
    with pytest.raises(DataError, match=message):
        load_dataset(f"csv:path={path},target=label,id=row")


def test_bad_specs_are_refused_by_name(table, tmp_path):
    _, path = table
    with pytest.raises(DataError, match="no column 'y' for target="):
        load_dataset(f"csv:path={path},target=y")
    with pytest.raises(DataError, match="target and id columns are both"):
        load_dataset(f"csv:path={path},target=label,id=label")
    with pytest.raises(DataError, match="give test=FILE or test_size, not both"):
        load_dataset(f"csv:path={path},target=label,id=row,test={path},test_size=0.1")
    with pytest.raises(DataError, match="not found"):
        load_dataset(f"csv:path={tmp_path / 'none.csv'},target=label")
    with pytest.raises(DataError, match="test_size must be a finite number in"):
        load_dataset(f"csv:path={path},target=label,test_size=0.95")
    with pytest.raises(DataError, match="name the label column to train on"):
        load_dataset(str(path))  # a bare csv path: the format is known, the label column is not
    with pytest.raises(DataError, match="csv:path=FILE"):
        load_dataset("own")  # unknown names point to the file formats


def test_a_test_file_parquet_and_the_same_rows_as_csv(table, tmp_path):
    frame, path = table
    frame.iloc[:450].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[450:].to_csv(tmp_path / "test.csv", index=False)
    ds = load_dataset(f"csv:path={tmp_path / 'train.csv'},target=label,id=row,test={tmp_path / 'test.csv'}")
    assert (ds.n_train, ds.n_test) == (450, 150) and ds.test_keys.tolist() == list(range(450, 600))
    frame.to_parquet(tmp_path / "own.parquet", index=False)
    from_parquet = load_dataset(f"parquet:path={tmp_path / 'own.parquet'},target=label,id=row")
    from_csv = load_dataset(f"csv:path={path},target=label,id=row")
    # two readers, one file content: the same rows, split, scaling and labels
    assert from_parquet.fingerprint() == from_csv.fingerprint()
    assert np.array_equal(from_parquet.keys, from_csv.keys)


def test_cache_is_reused_until_the_file_changes(table):
    frame, path = table
    first = load_dataset(f"csv:path={path},target=label,id=row")
    again = load_dataset(f"csv:path={path},target=label,id=row")
    assert os.path.samefile(first.X_train.filename, again.X_train.filename)
    frame.assign(a=frame.a + frame.b).to_csv(path, index=False)
    changed = load_dataset(f"csv:path={path},target=label,id=row")
    assert changed.fingerprint() != first.fingerprint()


def test_npz_both_layouts_bare_path_and_object_arrays_refused(tmp_path, rng):
    X, y = rng.normal(size=(80, 3)), rng.integers(0, 3, 80)
    np.savez(tmp_path / "xy.npz", X=X, y=y, ids=np.arange(100, 180))
    ds = load_dataset(str(tmp_path / "xy.npz"))
    assert ds.spec == f"npz:path={(tmp_path / 'xy.npz').resolve()},split=key"  # keys: held out by key
    assert sorted(np.concatenate([ds.keys, ds.test_keys]).tolist()) == list(range(100, 180))
    np.savez(tmp_path / "split.npz", X_train=X[:60], y_train=y[:60], X_test=X[60:], y_test=y[60:])
    split = load_dataset(f"npz:path={tmp_path / 'split.npz'},standardize=0")
    assert np.array_equal(np.asarray(split.X_train), X[:60].astype(np.float32)) and split.n_test == 20
    assert split.keys.tolist() == list(range(60)) and split.preprocessing.mean is None
    np.savez(tmp_path / "objects.npz", X=X, y=np.array([{"a": 1}] * 80, dtype=object))
    with pytest.raises(DataError, match="Python objects, which are never loaded"):
        load_dataset(f"npz:path={tmp_path / 'objects.npz'}")
    np.savez(tmp_path / "wrong.npz", features=X)
    with pytest.raises(DataError, match="needs arrays X and y"):
        load_dataset(f"npz:path={tmp_path / 'wrong.npz'}")


def test_svmlight_matches_scikit_learns_reader(tmp_path, rng):
    from sklearn.datasets import dump_svmlight_file, load_svmlight_file

    X = rng.normal(size=(70, 5)) * (rng.random((70, 5)) < 0.5)
    y = np.where(rng.random(70) < 0.5, -1, 1)
    dump_svmlight_file(X, y, str(tmp_path / "data.svm"))
    ds = load_dataset(f"svmlight:path={tmp_path / 'data.svm'},standardize=0,test_size=0")
    X_ref, y_ref = load_svmlight_file(str(tmp_path / "data.svm"))
    assert np.array_equal(np.asarray(ds.X_train), X_ref.toarray().astype(np.float32)) and ds.n_test == 0
    assert ds.preprocessing.classes == (-1, 1) and ds.preprocessing.decode(np.asarray(ds.y_train)).tolist() == y_ref.tolist()


def test_held_out_draw_does_not_depend_on_chunking():
    whole = held_out_rows(0, 200_000, 0.2, seed=3)
    pieces = np.concatenate([held_out_rows(s, min(7919, 200_000 - s), 0.2, 3) for s in range(0, 200_000, 7919)])
    assert np.array_equal(whole, pieces)
    # a Bernoulli(0.2) share of 200000 rows: standard deviation 0.0009, so 0.005 is over five of them
    assert abs(whole.mean() - 0.2) < 0.005
    assert not held_out_rows(0, 100, 0.0, 3).any()


def test_an_export_reads_back_with_its_keys(table, tmp_path):
    from miniunlearn.data import export_dataset

    _, path = table
    ds = load_dataset(f"csv:path={path},target=label,id=row")
    export_dataset(ds, tmp_path / "export.npz")
    again = load_dataset(f"npz:path={tmp_path / 'export.npz'},standardize=0")
    assert np.array_equal(again.keys, ds.keys) and np.array_equal(again.test_keys, ds.test_keys)
    assert np.array_equal(np.asarray(again.X_train), np.asarray(ds.X_train)) and np.array_equal(again.y_train, ds.y_train)
