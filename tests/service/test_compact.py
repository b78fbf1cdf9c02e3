"""Compaction: the exact optimum on the kept rows becomes the run's base; files that depended on
forgotten rows go; the data file may then lose those rows; policies compact when told to.

Every comparison is against an independent computation: a fresh training on the kept rows (their
raw values, standardised on their own), or the retrain method on a fresh run trained on the
edited file.
"""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from miniunlearn import Dataset, load_dataset, train
from miniunlearn.core.errors import DataError, InputError
from miniunlearn.core.storage import read_json
from miniunlearn.runs.bases import MissingRowsError
from miniunlearn.runs import HISTORY_FILE, MODEL_FILE, RESULT_JSON, load_model, load_preprocessing, open_run
from miniunlearn.service import forget
from miniunlearn.service.compact import AUTO_SHARE, compact, compaction_due, set_policy
from miniunlearn.service.ledger import Ledger
from tests.helpers import documented_u, fresh_run, run_cli, scipy_optimum


def raw_parameters(path) -> np.ndarray:
    """A model's weights and biases on raw features (the standardisation folded in)."""
    model, theta, _ = load_model(path)
    linear = model.to_linear(theta)
    weight, bias = load_preprocessing(path).raw_linear(linear["weight"].numpy(), linear["bias"].numpy())
    return np.concatenate([weight.ravel(), bias])


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    path = tmp_path_factory.mktemp("compact") / "digits"
    train(digits, 1e-3, path)
    return path


@pytest.fixture
def run(trained, tmp_path):
    return fresh_run(trained, tmp_path)


def test_compaction_equals_training_on_the_kept_rows_and_removes_what_depended_on_the_others(run, digits, tmp_path):
    rng = np.random.default_rng(1)
    first = np.sort(rng.choice(digits.n_train, 80, replace=False))
    forget(run, first, out=tmp_path / "u1")
    old_files = [run.path / MODEL_FILE, run.path / HISTORY_FILE, tmp_path / "u1" / MODEL_FILE]
    assert all(p.is_file() for p in old_files)

    report = compact(run.path)

    keep = np.setdiff1d(np.arange(digits.n_train), first)
    raw = digits.preprocessing.inverse(digits.X_train[keep])  # the kept rows as they were before standardising
    reference = train(Dataset.from_arrays(raw, digits.y_train[keep], standardize=True), 1e-3, tmp_path / "fresh")
    compacted = open_run(run.path)
    assert compacted.generation == 1 and compacted.n_train == len(keep)
    a, b = raw_parameters(run.path), raw_parameters(reference.path)
    assert np.linalg.norm(a - b) <= 1e-6 * np.linalg.norm(b)  # both solved to ||grad F|| <= 1e-9
    # the base's preprocessing is fitted on the kept rows only
    assert np.allclose(compacted.preprocessing.mean, raw.mean(axis=0), rtol=0, atol=1e-9)
    # nothing that depended on the forgotten rows is left, and the report says what went
    assert not any(p.exists() for p in old_files)
    assert {"model.safetensors", "history.safetensors"} <= set(report["removed"])
    assert str(tmp_path / "u1" / MODEL_FILE) in report["removed"]
    assert report["n_dropped"] == len(first) and report["solve"]["warm_start"]["request"] == 1
    with Ledger.open(compacted) as book:
        (record,) = book.compactions()
        assert record.status == "done" and record.n_after == len(keep) and record.removed == report["removed"]
        assert sorted(int(k) for k in record.dropped_keys()) == first.tolist()
        assert book.forgotten_ids().size == 0 and book.verify() == []
    assert np.array_equal(compacted.keys(), keep)  # keys (here: original row numbers) are unchanged
    with pytest.raises(InputError, match="nothing to compact"):
        compact(run.path)


def test_requests_after_a_compaction_number_the_kept_rows_and_match_retraining(run, digits, tmp_path):
    rng = np.random.default_rng(2)
    order = rng.permutation(digits.n_train)
    first, second = np.sort(order[:60]), np.sort(order[60:100])
    forget(run, first, out=tmp_path / "u1")
    compact(run.path)
    base = open_run(run.path)
    keep = np.setdiff1d(np.arange(digits.n_train), first)
    ids = np.searchsorted(keep, second)  # the same rows, numbered in the new base
    result = forget(base, ids, out=tmp_path / "u2", tol=1e-9)
    assert result.stats["n_train"] == len(keep) and result.stats["n_forget"] == len(second)
    # reference: train from zeros on the rows kept after both requests, in the base's features
    rest = np.setdiff1d(keep, second)
    features = base.preprocessing.transform(digits.preprocessing.inverse(digits.X_train[rest]))
    reference = train(Dataset.from_arrays(features, digits.y_train[rest], standardize=False), 1e-3,
                      tmp_path / "fresh")
    w, w_ref = result.theta, reference.theta()
    assert float((w - w_ref).norm()) <= 1e-6 * float(w_ref.norm())
    # a request naming a row forgotten before the compaction by its key is refused: it is gone
    with pytest.raises(InputError, match="compacted away"):
        forget(open_run(run.path), keys=[str(int(first[0]))], out=tmp_path / "u3")


def test_auto_policy_compacts_once_the_forgotten_share_crosses_its_threshold(run, digits, tmp_path):
    n = digits.n_train
    small = int(AUTO_SHARE * n) // 3
    result = forget(run, np.arange(small), out=tmp_path / "u1", compact="auto")
    assert "compaction" not in result.stats and open_run(run.path).generation == 0
    assert compaction_due(open_run(run.path), "auto") is None
    big = forget(open_run(run.path), np.arange(small, int(AUTO_SHARE * n) + 1), out=tmp_path / "u2", compact="auto")
    assert "compaction" in big.stats and "threshold" in big.stats["compaction"]["reason"]
    after = open_run(run.path)
    assert after.generation == 1 and after.n_train == n - int(AUTO_SHARE * n) - 1
    # the request's directory now holds the new base's model (its own one depended on the old base)
    assert read_json(tmp_path / "u2" / RESULT_JSON)["base_generation"] == 1
    assert torch.equal(load_model(tmp_path / "u2")[1], after.theta())
    assert torch.equal(big.theta, after.theta())
    # a run-level default applies to requests that name no policy
    set_policy(after, "always")
    again = forget(open_run(run.path), [0], out=tmp_path / "u3")
    assert again.stats["compaction"]["generation"] == 2
    assert not (tmp_path / "u2" / MODEL_FILE).exists()  # base 1's model: removed by the second compaction


def test_compaction_refuses_runs_it_cannot_serve(tmp_path):
    data = load_dataset("breast_cancer")
    sgd = train(data, 1e-2, tmp_path / "sgd", mode="trajectory")
    with pytest.raises(InputError, match="converged"):
        compact(sgd.path)
    converged = train(data, 1e-2, tmp_path / "bc")
    with pytest.raises(InputError, match="nothing to compact"):
        compact(converged.path)


# ---------------------------------------------------------------------------------------------- purge
def _customers(n_users=60, rows_each=4, seed=3):
    rng = np.random.default_rng(seed)
    n = n_users * rows_each
    users = rng.permutation(np.repeat(np.arange(100, 100 + n_users), rows_each))
    x1, x2 = rng.normal(size=n), rng.normal(3, 2, size=n)
    label = np.where(x1 - 0.5 * x2 + rng.logistic(size=n) > -1.5, "yes", "no")
    return pd.DataFrame({"user": users, "x1": x1, "x2": x2, "label": label})


def test_purge_the_rows_from_the_file_after_compacting(tmp_path, capsys):
    frame = _customers()
    frame.iloc[:200].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[200:].to_csv(tmp_path / "test.csv", index=False)
    spec = f"csv:path={tmp_path / 'train.csv'},target=label,id=user,test={tmp_path / 'test.csv'}"
    run = train(load_dataset(spec), 1e-2, tmp_path / "run")
    (tmp_path / "a.txt").write_text("101\n117\n")
    code, _, err = run_cli(capsys, "forget", run.path, "--keys", tmp_path / "a.txt", "--out", tmp_path / "ua")
    assert code == 0, err
    gone = frame.iloc[:200].user.isin([101, 117])

    # deleting the rows before compacting is refused, saying how many rows are missing and what to do
    frame.iloc[:200][~gone].to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(MissingRowsError, match=f"lacks {int(gone.sum())} of the 200 .*compact"):
        forget(open_run(run.path), keys=["130"], out=tmp_path / "ub")
    frame.iloc[:200].to_csv(tmp_path / "train.csv", index=False)  # put them back

    code, out, err = run_cli(capsys, "compact", run.path)
    assert code == 0, err
    assert "model.safetensors" in out
    frame.iloc[:200][~gone].to_csv(tmp_path / "train.csv", index=False)  # now they may go
    (tmp_path / "b.txt").write_text("130\n144\n")
    code, _, err = run_cli(capsys, "forget", run.path, "--keys", tmp_path / "b.txt", "--out", tmp_path / "ub",
                           "--tol", "1e-9")
    assert code == 0, err

    # independent: a new run trained on the file as it is now, retrained without the second users
    fresh = train(load_dataset(spec), 1e-2, tmp_path / "fresh")
    reference = forget(fresh, keys=["130", "144"], method="retrain", ledger=False)
    a = raw_parameters(tmp_path / "ub")
    fresh_pre = fresh.preprocessing
    linear = fresh.model.to_linear(reference.theta)
    b = np.concatenate([x.ravel() for x in fresh_pre.raw_linear(linear["weight"].numpy(), linear["bias"].numpy())])
    assert np.linalg.norm(a - b) <= 1e-6 * np.linalg.norm(b)

    # a file with rows the run never had is still refused
    pd.concat([frame.iloc[:200][~gone], frame.iloc[:200][gone].assign(user=999)]).to_csv(tmp_path / "train.csv",
                                                                                          index=False)
    with pytest.raises(DataError, match="never had"):
        forget(open_run(run.path), keys=["150"], out=tmp_path / "uc")


def test_a_keyed_file_with_the_default_split_survives_compact_purge_forget(tmp_path, capsys):
    """The default held-out draw of a keyed file is by key: purging forgotten users' rows from the file
    moves no other row across the split, so the purge needs no test file of its own."""
    frame = _customers()
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    spec = f"csv:path={path},target=label,id=user"  # default test_size (0.2), default split
    run = train(load_dataset(spec), 1e-2, tmp_path / "run")
    trained_on, held_out = sorted(set(run.keys().tolist())), sorted(set(run.dataset.test_keys.tolist()))
    assert held_out == [u for u in sorted(frame.user.unique()) if documented_u(str(u), 0) < 0.2]
    first, second = trained_on[:2], trained_on[10:12]
    (tmp_path / "a.txt").write_text("".join(f"{k}\n" for k in [*first, held_out[0]]))  # one never trained on
    code, out, err = run_cli(capsys, "forget", run.path, "--keys", tmp_path / "a.txt", "--out", tmp_path / "ua",
                             "--json")
    assert code == 0, err
    assert json.loads(out)["keys_without_training_rows"] == [str(held_out[0])]

    leaving = frame.user.isin([*first, held_out[0]])
    frame[~leaving].to_csv(path, index=False)  # too early: the base still needs the forgotten rows
    with pytest.raises(MissingRowsError, match=f"lacks {int(frame.user.isin(first).sum())} of the"):
        forget(open_run(run.path), keys=[str(second[0])], out=tmp_path / "ub")
    frame.to_csv(path, index=False)
    code, _, err = run_cli(capsys, "compact", run.path)
    assert code == 0, err
    frame[~leaving].to_csv(path, index=False)  # the purge: every row of the three users leaves the file
    (tmp_path / "b.txt").write_text("".join(f"{k}\n" for k in second))
    code, _, err = run_cli(capsys, "forget", run.path, "--keys", tmp_path / "b.txt", "--out", tmp_path / "ub",
                           "--tol", "1e-9")
    assert code == 0, err
    served = raw_parameters(tmp_path / "ub")

    # `retrain` on a run trained afresh on the final file (default split again)
    fresh = train(load_dataset(spec), 1e-2, tmp_path / "fresh")
    code, _, err = run_cli(capsys, "retrain", fresh.path, "--keys", tmp_path / "b.txt", "--out", tmp_path / "rb")
    assert code == 0, err
    retrained = raw_parameters(tmp_path / "rb")
    assert np.linalg.norm(served - retrained) <= 1e-6 * np.linalg.norm(retrained)

    # an independent optimum: the final file's rows, held out by the documented hash, standardised on
    # the kept training rows (float32, as stored), minus the second users, solved by scipy
    final = frame[~leaving]
    kept = final[[documented_u(str(u), 0) >= 0.2 for u in final.user]]
    X = kept[["x1", "x2"]].to_numpy(float)
    mean, scale = X.mean(axis=0), X.std(axis=0)
    Z = ((X - mean) / scale).astype(np.float32).astype(np.float64)
    stay = ~kept.user.isin(second).to_numpy()
    w = scipy_optimum(Z[stay], (kept.label.to_numpy()[stay] == "yes").astype(int), 2, 1e-2).reshape(2, 3)
    reference = np.concatenate([(w[:, :2] / scale).ravel(), w[:, 2] - (w[:, :2] / scale) @ mean])
    assert np.linalg.norm(served - reference) <= 1e-6 * np.linalg.norm(reference)
    print(f"keyed purge: |served - retrain| / |retrain| = "
          f"{np.linalg.norm(served - retrained) / np.linalg.norm(retrained):.2e}, "
          f"|served - scipy| / |scipy| = {np.linalg.norm(served - reference) / np.linalg.norm(reference):.2e}")


def test_a_run_trained_before_the_key_split_keeps_its_per_row_split(tmp_path):
    """A run.json without a split rule was trained with the per-row draw; its data still load that way."""
    frame = _customers()
    frame.to_csv(tmp_path / "data.csv", index=False)
    run = train(load_dataset(f"csv:path={tmp_path / 'data.csv'},target=label,id=user,split=row"), 1e-2,
                tmp_path / "run")
    meta = read_json(run.path / "run.json", "run.json")
    meta["dataset"]["spec"] = meta["dataset"]["spec"].replace(",split=row", "")  # as written before the key rule
    del meta["dataset"]["split"]
    (run.path / "run.json").write_text(json.dumps(meta))
    assert load_dataset(meta["dataset"]["spec"]).fingerprint() != run.fingerprint  # the new default differs
    result = forget(open_run(run.path), keys=[str(run.keys()[0])], out=tmp_path / "u")
    assert result.stats["n_forget"] == int((run.keys() == run.keys()[0]).sum())
