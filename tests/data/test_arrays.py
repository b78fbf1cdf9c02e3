"""Datasets from memory: arrays and DataFrames, labels of any kind, features rounded to float32."""

import numpy as np
import pandas as pd
import pytest

from miniunlearn.core.errors import DataError
from miniunlearn.data import Dataset


def test_a_dataframe_with_string_labels_and_ids(rng):
    frame = pd.DataFrame({"x": rng.normal(size=30), "z": rng.normal(10, 3, size=30)})
    labels = pd.Series(np.where(frame.x > 0, "yes", "no"))
    ds = Dataset.from_arrays(frame, labels, ids=[f"id{i}" for i in range(30)])
    assert ds.preprocessing.classes == ("no", "yes") and ds.preprocessing.feature_names == ("x", "z")
    assert ds.n_test == 0 and ds.X_test.shape == (0, 2) and not ds.reloadable
    expected = ((frame.to_numpy() - frame.to_numpy().mean(0)) / frame.to_numpy().std(0)).astype(np.float32)
    assert np.array_equal(ds.X_train, expected.astype(np.float64))  # float32 values, held as float64
    assert ds.preprocessing.decode(ds.y_train).tolist() == labels.tolist()


def test_test_rows_use_the_training_statistics_and_unscaled_when_asked(rng):
    X, y = rng.normal(size=(20, 3)), rng.integers(0, 2, 20)
    ds = Dataset.from_arrays(X, y, X_test=X[:5] + 1, y_test=y[:5], standardize=False)
    assert np.array_equal(ds.X_test, (X[:5] + 1).astype(np.float32).astype(np.float64))
    assert ds.preprocessing.mean is None and ds.preprocessing.classes == (0, 1)


@pytest.mark.parametrize("X, y, message", [
    (np.array([[1.0, np.nan], [2.0, 3.0]]), [0, 1], r"row 0, feature 1 is nan"),
    (pd.DataFrame({"a": [1.0, 2.0], "b": ["x", 1.0]}), [0, 1], r"row 0, column 'b': 'x' is not a number"),
    (np.ones((3, 2)), [1, 1, 1], "classification needs at least two classes"),
    (np.ones((3, 2)), [0, 1], "3 rows of features but labels of shape"),
    (np.ones(3), [0, 1, 0], "must be a 2-d array"),
])
def test_bad_data_is_refused_with_its_row_and_column(X, y, message):
    with pytest.raises(DataError, match=message):
        Dataset.from_arrays(X, y)
