"""The preprocessing record: streaming moments, the affine map and its fold into the weights, labels."""

import json

import numpy as np
import pytest

from miniunlearn.core.errors import DataError
from miniunlearn.data.preprocessing import Preprocessing, RunningMoments, class_labels


def test_running_moments_equal_numpy_in_any_chunking_even_far_from_zero(rng):
    # a large offset is where E[x^2] - E[x]^2 loses every digit; Chan's update does not
    X = rng.normal(size=(5000, 4)) * [1.0, 1e-3, 10.0, 1.0] + [0.0, 1e6, -3.0, 1e8]
    moments = RunningMoments(4)
    for start, stop in [(0, 1), (1, 700), (700, 701), (701, 5000)]:
        moments.update(X[start:stop])
    mean, scale = moments.mean_and_scale()
    assert np.allclose(mean, X.mean(axis=0), rtol=1e-13) and np.allclose(scale, X.std(axis=0), rtol=1e-6)
    constant = RunningMoments(1)
    constant.update(np.full((10, 1), 3.0))
    assert constant.mean_and_scale()[1].tolist() == [1.0]  # constant features keep scale 1


def test_the_fold_into_raw_weights_equals_transform_then_linear(rng):
    X = rng.normal(3.0, 2.0, size=(50, 3))
    record = Preprocessing.fit(X, ["a", "b"], standardize=True)
    W, b = rng.normal(size=(2, 3)), rng.normal(size=2)
    W_raw, b_raw = record.raw_linear(W, b)
    assert np.allclose(X @ W_raw.T + b_raw, ((X - X.mean(0)) / X.std(0)) @ W.T + b, rtol=1e-12, atol=1e-12)


def test_labels_encode_decode_and_json_round_trip():
    record = Preprocessing(("cat", "dog"), np.array([1.0, 2.0]), np.array([0.5, 4.0]), ("x", "y"), "std", "split")
    codes = record.encode(np.array(["dog", "cat", "dog"]))
    assert codes.tolist() == [1, 0, 1] and record.decode(codes).tolist() == ["dog", "cat", "dog"]
    with pytest.raises(DataError, match="row 1 has the label 'cow'"):
        record.encode(["cat", "cow"])
    again = Preprocessing.from_json(json.loads(json.dumps(record.to_json())),
                                    {k: v for k, v in record.tensors().items()})
    assert again.same_as(record) and again.description == "std"
    assert Preprocessing((1, 2)).encode(np.array([2.0, 1.0])).tolist() == [1, 0]  # equal values match across types


@pytest.mark.parametrize("labels, message", [
    ([(1, 2), (3, 4)], "labels must be integers, numbers, strings or booleans"),
    ([1, "a"], "mix numbers and strings"),
    ([1.0, float("nan")], "missing .NaN. or infinite"),
    (["a", None], "row 1 has no label"),
])
def test_labels_json_cannot_hold_or_order_are_refused(labels, message):
    values = np.empty(len(labels), dtype=object)
    values[:] = labels
    with pytest.raises(DataError, match=message):
        class_labels(values if not isinstance(labels[0], float) else np.asarray(labels))


def test_class_labels_are_sorted_plain_values():
    assert class_labels(np.array(["b", "a", "b"])) == ["a", "b"]
    assert class_labels(np.array([3, 1, 3], dtype=np.int32)) == [1, 3] and type(class_labels(np.array([1]))[0]) is int
    assert class_labels(np.array([True, False])) == [False, True]
