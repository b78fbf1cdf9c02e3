"""Runs keep what they need: the preprocessing with the model, the rows' keys, and data from memory."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from miniunlearn.core.errors import RunError
from miniunlearn.core.storage import file_sha256
from miniunlearn.data import Dataset, load_dataset
from miniunlearn.runs import open_run, train
from miniunlearn.runs import load_preprocessing


@pytest.fixture
def frame(rng):
    table = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(3.0, 2.0, size=200)})
    table["label"] = np.where(table.a + 0.3 * table.b > 1, "high", "low")
    table["user"] = [f"u{i % 60}" for i in range(200)]
    return table


def test_a_run_from_memory_stores_its_data_and_forgets_in_a_later_process(frame, tmp_path):
    data = Dataset.from_arrays(frame[["a", "b"]], frame.label, ids=frame.user)
    run = train(data, 1e-2, tmp_path / "run")
    stored = run.meta["dataset"]["stored"]
    for part, name in stored.items():  # content-addressed: each file is named by its SHA-256
        assert name == f"data/{file_sha256(tmp_path / 'run' / name)}.npy"
    assert np.load(tmp_path / "run" / stored["X_train"], allow_pickle=False).dtype == np.float32
    assert run.meta["dataset"]["preprocessing"]["classes"] == ["high", "low"]
    # a new process has nothing but the run directory
    code = (f"from miniunlearn import forget, open_run\n"
            f"run = open_run({str(tmp_path / 'run')!r})\n"
            f"result = forget(run, keys=['u1', 'u2'], method='mini', refine=1, out={str(tmp_path / 'mini')!r})\n"
            f"print(result.stats['n_forget'])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(int(frame.user.isin(["u1", "u2"]).sum()))
    # the stored data is the training data: same fingerprint as the dataset trained on
    assert open_run(tmp_path / "run").dataset.fingerprint() == data.fingerprint()


def test_damaged_stored_data_is_refused(frame, tmp_path):
    run = train(Dataset.from_arrays(frame[["a", "b"]], frame.label), 1e-2, tmp_path / "run")
    target = tmp_path / "run" / run.meta["dataset"]["stored"]["y_train"]
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 1
    target.write_bytes(bytes(raw))
    with pytest.raises(RunError, match="stored y_train .* was changed or damaged"):
        _ = open_run(tmp_path / "run").dataset


def test_data_not_exact_in_float32_is_trained_on_its_float32_values(frame, tmp_path):
    base = Dataset.from_arrays(frame[["a", "b"]], frame.label, standardize=False)
    import dataclasses

    finer = dataclasses.replace(base, X_train=base.X_train + 1e-12, _fingerprint=[])  # not float32 values
    run = train(finer, 1e-2, tmp_path / "run")
    assert run.fingerprint == base.fingerprint() != finer.fingerprint()


def test_every_model_file_carries_the_preprocessing(tmp_path):
    dataset = load_dataset("breast_cancer")
    run = train(dataset, 1e-2, tmp_path / "run")
    record = load_preprocessing(tmp_path / "run")
    assert record.same_as(dataset.preprocessing) and record.classes == (0, 1)
    assert len(record.feature_names) == 30 and record.scaled
    assert run.keys().tolist() == list(range(run.n_train)) and not (tmp_path / "run" / "keys.npy").exists()


def test_a_model_saved_before_preprocessing_was_kept_reads_as_class_numbers(tmp_path):
    from miniunlearn.models.logistic import LogisticRegression
    from miniunlearn.runs import save_model

    model = LogisticRegression(3, 4)
    save_model(tmp_path, model, torch.zeros(model.n_params))
    record = load_preprocessing(tmp_path)
    assert record.classes == (0, 1, 2, 3) and not record.scaled
