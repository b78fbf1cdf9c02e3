"""Predictions on raw rows in the user's labels, against a numpy computation from the saved weights."""


import numpy as np
import pandas as pd
import pytest

from miniunlearn.core.errors import DataError
from miniunlearn.data import load_dataset
from miniunlearn.runs import load_model, train
from miniunlearn.runs.predict import Predictor, predict_to_csv
from miniunlearn.service import forget


@pytest.fixture
def csv_run(tmp_path, rng):
    n = 300
    frame = pd.DataFrame({"id": np.arange(5000, 5000 + n), "x1": rng.normal(10, 4, n), "x2": rng.normal(-2, 0.5, n)})
    frame["label"] = np.where(frame.x1 / 4 + 2 * frame.x2 + rng.logistic(size=n) > 0, "up", "down")
    frame.to_csv(tmp_path / "data.csv", index=False)
    run = train(load_dataset(f"csv:path={tmp_path / 'data.csv'},target=label,id=id"), 1e-2, tmp_path / "run")
    return frame, run


def _numpy_probabilities(model_dir, X_raw, mean, std):
    """softmax(W (x - mean)/std + b) from the model file's tensors, in numpy."""
    _, theta, _ = load_model(model_dir)
    weights = theta.numpy().reshape(2, 3)
    logits = ((X_raw - mean) / std) @ weights[:, :2].T + weights[:, 2]
    logits -= logits.max(axis=1, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_predictions_on_raw_rows_with_keys_labels_and_probabilities(csv_run, tmp_path):
    frame, run = csv_run
    new = frame.sample(40, random_state=1)[["x2", "id", "x1"]]  # other column order, no label column
    new.to_csv(tmp_path / "new.csv", index=False)
    summary = predict_to_csv(run.path, f"csv:path={tmp_path / 'new.csv'},id=id", tmp_path / "out.csv", proba=True)
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out.columns) == ["id", "prediction", "down", "up"] and summary["accuracy"] is None
    train_rows = frame.set_index("id").loc[run.keys()]
    X_train = train_rows[["x1", "x2"]].to_numpy()
    probs = _numpy_probabilities(run.path, new[["x1", "x2"]].to_numpy(), X_train.mean(0), X_train.std(0))
    assert np.allclose(out[["down", "up"]].to_numpy(), probs, rtol=1e-6, atol=1e-9)
    assert out.prediction.tolist() == np.where(probs[:, 1] > probs[:, 0], "up", "down").tolist()
    assert out.id.tolist() == new.id.tolist()


def test_an_unlearned_model_predicts_by_itself_and_labels_give_accuracy(csv_run, tmp_path):
    frame, run = csv_run
    forget(run, keys=[str(k) for k in run.keys()[:2]], method="retrain", out=tmp_path / "re")
    summary = predict_to_csv(tmp_path / "re", f"csv:path={tmp_path / 'data.csv'},target=label",
                             tmp_path / "out.csv")
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out.columns) == ["prediction"] and len(out) == len(frame)
    assert summary["accuracy"] == pytest.approx((out.prediction == frame.label).mean())


def test_a_registered_dataset_predicts_its_test_rows(tmp_path):
    dataset = load_dataset("digits")
    run = train(dataset, 1e-2, tmp_path / "run")
    summary = predict_to_csv(run.path, "digits", tmp_path / "out.csv")
    predictor = Predictor.load(run.path)
    expected = predictor.logits_of_features(dataset.X_test).argmax(axis=1)
    assert pd.read_csv(tmp_path / "out.csv").prediction.tolist() == expected.tolist()
    assert summary["accuracy"] == pytest.approx(float((expected == dataset.y_test).mean()))
    with pytest.raises(DataError, match="preprocessed differently"):
        predict_to_csv(run.path, "synthetic:n_features=64,n_classes=10", tmp_path / "other.csv")


def test_missing_feature_columns_are_named_and_nothing_is_written(csv_run, tmp_path):
    frame, run = csv_run
    frame[["id", "x1"]].to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(DataError, match=r"needs the feature column\(s\) 'x2'"):
        predict_to_csv(run.path, f"csv:path={tmp_path / 'short.csv'}", tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()
