import gzip

import numpy as np
import pytest

from miniunlearn.core.errors import DataError
from miniunlearn.data import export_dataset, load_dataset, read_idx
from tests.helpers import write_idx


def test_digits_and_breast_cancer_shapes_and_preprocessing():
    digits = load_dataset("digits")
    assert digits.X_train.shape[1] == 64 and digits.n_classes == 10
    assert digits.n_train + digits.n_test == 1797
    assert digits.X_train.dtype == np.float64 and digits.y_train.dtype == np.int64
    # standardized on the training rows: zero mean, unit (or zero, for constant pixels) std
    assert np.allclose(digits.X_train.mean(axis=0), 0, atol=1e-12)
    assert set(np.round(digits.X_train.std(axis=0), 8)) <= {0.0, 1.0}
    cancer = load_dataset("breast_cancer")
    assert cancer.n_classes == 2 and cancer.n_train + cancer.n_test == 569 and cancer.n_features == 30


def test_loading_is_deterministic_and_fingerprint_tracks_data():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert np.array_equal(a.X_train, b.X_train) and a.fingerprint() == b.fingerprint()
    s1 = load_dataset("synthetic:n_samples=500,n_features=5,n_classes=3,seed=1")
    s2 = load_dataset("synthetic:n_samples=500,n_features=5,n_classes=3,seed=2")
    assert s1.fingerprint() != s2.fingerprint()
    assert s1.X_train.shape == (400, 5) and s1.n_classes == 3 and s1.synthetic


def test_bad_specs_and_options_are_refused_by_name():
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        load_dataset("nope")
    with pytest.raises(DataError, match="has no option colour"):
        load_dataset("digits:colour=1")
    with pytest.raises(DataError, match="should look like key=value"):
        load_dataset("synthetic:n_samples")
    with pytest.raises(DataError, match=r"n_samples must be an integer in \[10, 1e\+08\], got 5"):
        load_dataset("synthetic:n_samples=5")
    with pytest.raises(DataError, match="label_noise must be a finite number in"):
        load_dataset("synthetic:label_noise=nan")


def _idx_folder(folder, rng, n_train=30, n_test=10, gz=True):
    folder.mkdir()
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, size=(n, 4, 3)), gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, gz)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_loads_as_fashion_mnist_and_mnist(tmp_path, rng, gz):
    _idx_folder(tmp_path / "idx", rng, gz=gz)
    for name in ("fashion-mnist", "mnist"):
        ds = load_dataset(f"{name}:path={tmp_path / 'idx'}")
        assert ds.X_train.shape == (30, 12) and ds.X_test.shape == (10, 12) and ds.n_classes == 10
        assert ds.X_train.min() >= 0 and ds.X_train.max() <= 1
    raw = read_idx(tmp_path / "idx" / f"train-images-idx3-ubyte{'.gz' if gz else ''}")
    assert np.allclose(ds.X_train, raw.reshape(30, -1) / 255.0)


def test_idx_errors_name_the_problem(tmp_path, rng):
    with pytest.raises(DataError, match="does not exist.*apt-get install dataset-fashion-mnist"):
        load_dataset(f"fashion-mnist:path={tmp_path / 'missing'}")
    _idx_folder(tmp_path / "idx", rng)
    bad = tmp_path / "idx" / "train-labels-idx1-ubyte.gz"
    with gzip.open(bad, "wb") as handle:
        handle.write(b"\x12\x34\x08\x01garbage")
    with pytest.raises(DataError, match="bad magic number"):
        load_dataset(f"fashion-mnist:path={tmp_path / 'idx'}")
    write_idx(bad, np.arange(30) % 10)
    truncated = tmp_path / "idx" / "t10k-images-idx3-ubyte.gz"
    with gzip.open(truncated, "rb") as handle:
        data = handle.read()
    with gzip.open(truncated, "wb") as handle:
        handle.write(data[:-5])
    with pytest.raises(DataError, match="malformed"):
        load_dataset(f"fashion-mnist:path={tmp_path / 'idx'}")
    with pytest.raises(DataError, match="no folder given"):
        load_dataset("mnist")


def test_covtype_local_file_and_offline_error(tmp_path, rng):
    table = np.hstack([rng.normal(size=(50, 54)), rng.integers(1, 8, size=(50, 1))])
    np.savetxt(tmp_path / "covtype.data.gz", table, delimiter=",")
    ds = load_dataset(f"covtype:path={tmp_path / 'covtype.data.gz'}")
    assert ds.n_train == 40 and ds.n_test == 10 and ds.n_features == 54
    assert ds.y_train.min() >= 0 and ds.y_train.max() < ds.n_classes
    with pytest.raises(DataError, match="not found"):
        load_dataset(f"covtype:path={tmp_path / 'nothing.gz'}")
    np.savetxt(tmp_path / "short.csv", table[:, :10], delimiter=",")
    with pytest.raises(DataError, match="55 columns"):
        load_dataset(f"covtype:path={tmp_path / 'short.csv'}")


def test_higgs_csv_gz_into_float32_memmap(tmp_path, rng):
    n = 200
    table = np.hstack([rng.integers(0, 2, size=(n, 1)), rng.normal(loc=3.0, scale=2.0, size=(n, 28))])
    path = tmp_path / "HIGGS.csv.gz"
    with gzip.open(path, "wt") as handle:
        np.savetxt(handle, table, delimiter=",", fmt="%.8e")
    ds = load_dataset(f"higgs:path={path},n_rows={n}")
    assert isinstance(ds.X_train, np.memmap) and ds.X_train.dtype == np.float32
    assert ds.n_train + ds.n_test == n and ds.n_test == 20 and ds.n_classes == 2
    expected = (table[:180, 1:] - table[:180, 1:].mean(0)) / table[:180, 1:].std(0)
    assert np.allclose(ds.X_train, expected, atol=1e-5)
    assert np.array_equal(ds.y_train, table[:180, 0].astype(int))
    again = load_dataset(f"higgs:path={path},n_rows={n}")  # served from the cache
    assert again.fingerprint() == ds.fingerprint()
    with pytest.raises(DataError, match="HIGGS.csv.gz"):
        load_dataset("higgs")


def test_higgs_synthetic_is_seeded_memmap():
    a = load_dataset("higgs-synthetic:n_rows=5000,seed=3")
    b = load_dataset("higgs-synthetic:n_rows=5000,seed=3")
    assert a.X_train.dtype == np.float32 and a.X_train.shape == (4500, 28) and a.synthetic
    assert a.fingerprint() == b.fingerprint()
    assert 0.2 < a.y_train.mean() < 0.8


def test_export_writes_what_training_sees(tmp_path):
    ds = load_dataset("breast_cancer")
    export_dataset(ds, tmp_path / "bc.npz")
    with np.load(tmp_path / "bc.npz", allow_pickle=False) as npz:
        assert np.array_equal(npz["X_train"], ds.X_train) and npz["X_train"].dtype == np.float64
        assert np.array_equal(npz["y_test"], ds.y_test) and npz["y_test"].dtype == np.int64


def test_nan_in_local_data_is_refused(tmp_path, rng):
    table = np.hstack([rng.normal(size=(20, 54)), rng.integers(1, 8, size=(20, 1))])
    table[3, 5] = np.nan
    np.savetxt(tmp_path / "c.csv", table, delimiter=",")
    with pytest.raises(DataError, match="NaN"):
        load_dataset(f"covtype:path={tmp_path / 'c.csv'}")


def test_idx_train_rows_keeps_the_first_training_rows_and_the_whole_test_file(tmp_path, rng):
    _idx_folder(tmp_path / "idx", rng, gz=False)
    whole = load_dataset(f"fashion-mnist:path={tmp_path / 'idx'}")
    cut = load_dataset(f"fashion-mnist:path={tmp_path / 'idx'},train_rows=12")
    raw = read_idx(tmp_path / "idx" / "train-images-idx3-ubyte")
    assert np.array_equal(cut.X_train, raw.reshape(30, -1)[:12] / 255.0)
    assert np.array_equal(cut.y_train, np.arange(12) % 10)
    assert np.array_equal(cut.X_test, whole.X_test) and cut.n_classes == 10
    assert cut.fingerprint() != whole.fingerprint()
    with pytest.raises(DataError, match="train_rows=31 but the training file holds 30 rows"):
        load_dataset(f"fashion-mnist:path={tmp_path / 'idx'},train_rows=31")
    with pytest.raises(DataError, match="option train_rows must be an integer in \\[10, 1e\\+08\\] or None, got 3"):
        load_dataset(f"fashion-mnist:path={tmp_path / 'idx'},train_rows=3")
