import numpy as np
import pytest
import torch

from miniunlearn.models.rows import Rows, RowsWithout, max_squared_norm


def test_max_squared_norm_is_the_largest_row_norm_squared(rng):
    X = rng.normal(size=(300, 17)) * rng.uniform(0.1, 10.0, size=(300, 1))
    expected = max(float(row @ row) for row in X)  # row by row, in numpy
    assert abs(max_squared_norm(torch.from_numpy(X)) - expected) <= 1e-13 * expected


def test_max_squared_norm_of_no_rows_is_zero():
    assert max_squared_norm(torch.empty(0, 5, dtype=torch.float64)) == 0.0


@pytest.mark.parametrize("kind, image", [("squares", np.square), ("single", lambda X: X)])
def test_a_float32_image_of_a_set_in_memory_is_made_once_per_chunk_leaving_the_rows_as_they_are(rng, kind, image):
    """The squared features (``squares``) and the features themselves (``single``), in float32."""
    X, y = rng.normal(size=(50, 7)), rng.integers(0, 3, size=50)
    ids = np.sort(rng.choice(50, size=31, replace=False))
    rows = Rows(X, y, ids, chunk_rows=8)
    got = getattr(rows, kind)(5, 12)  # rows of chunks 0 and 1
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), image(X[ids[5:12]]), rtol=1e-6)
    np.testing.assert_array_equal(rows.chunk(0, 31)[0].numpy(), X[ids])  # the float64 rows are not written
    rows._X += 1.0  # from now on a chunk made afresh shows it
    whole = getattr(rows, kind)(0, 31)
    np.testing.assert_allclose(whole[:16].numpy(), image(X[ids[:16]]), rtol=1e-6)  # chunks 0, 1: kept, not redone
    np.testing.assert_allclose(whole[16:].numpy(), image(X[ids[16:]] + 1.0), rtol=1e-6)  # chunks 2, 3: made now


def test_squares_of_a_set_not_in_memory_are_left_to_the_caller(rng, tmp_path):
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float64, shape=(20, 4))
    X[:] = rng.normal(size=(20, 4))
    assert Rows(X, rng.integers(0, 3, size=20)).squares(0, 20) is None


def test_squares_are_not_kept_beyond_their_memory_cap(rng, monkeypatch):
    from miniunlearn.models import rows as rows_module

    X, y = rng.normal(size=(50, 7)), rng.integers(0, 3, size=50)
    monkeypatch.setattr(rows_module, "SQUARES_BYTES", 50 * 7 * 4 - 1)
    assert Rows(X, y).squares(0, 50) is None
    monkeypatch.setattr(rows_module, "SQUARES_BYTES", 50 * 7 * 4)
    assert Rows(X, y).squares(0, 50) is not None


def test_rows_without_serves_every_chunk_in_place_and_names_the_rows_left_out(rng):
    X, y = rng.normal(size=(50, 4)), rng.integers(0, 3, size=50)
    left = np.array([0, 7, 8, 9, 31, 49])
    rows = RowsWithout(X, y, left, chunk_rows=8)
    assert len(rows) == 44
    assert rows.chunk_bounds()[-1] == (48, 50)
    assert np.shares_memory(rows.chunk(0, 8)[0].numpy(), X)  # read where it lies, not copied
    found = [rows.left_out_in(a, b) for a, b in rows.chunk_bounds()]
    assert [None if f is None else f.tolist() for f in found] == [[0, 7], [0, 1], None, [7], None, None, [1]]
    with pytest.raises(TypeError, match="CachedCurvature"):
        rows.map_reduce(lambda X, y: X.sum())


def test_rows_without_refuses_ids_it_could_not_leave_out(rng):
    X, y = rng.normal(size=(20, 3)), rng.integers(0, 2, size=20)
    for bad in ([3, 1], [2, 2], [-1, 4], [5, 20]):
        with pytest.raises(ValueError, match="sorted, unique"):
            RowsWithout(X, y, np.array(bad))
    assert len(RowsWithout(X, y, np.array([], dtype=np.int64))) == 20


def test_single_of_a_set_not_in_memory_or_beyond_its_cap_is_cast_afresh_each_time(rng, tmp_path, monkeypatch):
    from miniunlearn.models import rows as rows_module

    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float64, shape=(20, 4))
    X[:] = rng.normal(size=(20, 4))
    mapped = Rows(X, rng.integers(0, 3, size=20))
    np.testing.assert_array_equal(mapped.single(3, 17).numpy(), np.asarray(X[3:17]).astype(np.float32))
    X[3:17] += 1.0
    np.testing.assert_array_equal(mapped.single(3, 17).numpy(), np.asarray(X[3:17]).astype(np.float32))
    monkeypatch.setattr(rows_module, "SINGLE_BYTES", 20 * 4 * 4 - 1)
    held = Rows(np.asarray(X).copy(), rng.integers(0, 3, size=20))
    held.single(0, 20)
    held._X += 1.0
    np.testing.assert_array_equal(held.single(0, 20).numpy(), (np.asarray(X) + 1.0).astype(np.float32))  # none kept
