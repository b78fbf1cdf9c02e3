"""Deletion requests name people: keys whose rows were all held out for testing are accepted and
recorded, nothing is unlearned for them; keys that name no row at all stay an error.

Which keys are held out is computed here from the documented hash (tests.helpers.documented_u),
and row counts from the data frame itself.
"""

import json

import numpy as np
import pandas as pd
import pytest

from miniunlearn import load_dataset, train
from miniunlearn.core.errors import InputError
from miniunlearn.core.storage import file_sha256
from miniunlearn.runs import MODEL_FILE, RESULT_JSON, open_run
from miniunlearn.service import forget
from miniunlearn.service.ledger import Ledger
from tests.helpers import documented_u, fresh_run, run_cli


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """(frame, trained run dir, trained keys, held-out keys): 50 users with 3 rows each, split by key."""
    root = tmp_path_factory.mktemp("people")
    rng = np.random.default_rng(11)
    n = 150
    frame = pd.DataFrame({"user": rng.permutation(np.repeat(np.arange(300, 350), 3)), "x": rng.normal(size=n),
                          "z": rng.normal(size=n)})
    frame["label"] = np.where(frame.x - frame.z + rng.logistic(size=n) > 0, "a", "b")
    frame.to_csv(root / "people.csv", index=False)
    train(load_dataset(f"csv:path={root / 'people.csv'},target=label,id=user"), 1e-2, root / "run")
    users = sorted(frame.user.unique())
    held = [str(u) for u in users if documented_u(str(u), 0) < 0.2]
    trained = [str(u) for u in users if documented_u(str(u), 0) >= 0.2]
    assert held and len(trained) > 10
    return frame, root / "run", trained, held


@pytest.fixture
def run(people, tmp_path):
    return fresh_run(people[1], tmp_path)


def _keys(tmp_path, name, keys):
    path = tmp_path / f"{name}.txt"
    path.write_text("".join(f"{k}\n" for k in keys))
    return path


def test_held_out_keys_are_accepted_recorded_and_forget_nothing(people, run, tmp_path, capsys):
    frame, _, trained, held = people
    code, out, err = run_cli(capsys, "forget", run.path, "--keys", _keys(tmp_path, "k", [trained[0], held[0]]),
                             "--out", tmp_path / "u", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["keys_without_training_rows"] == [held[0]]
    assert payload["n_forget_request"] == int((frame.user == int(trained[0])).sum()) == 3
    assert json.loads((tmp_path / "u" / RESULT_JSON).read_text())["keys_without_training_rows"] == [held[0]]
    with Ledger.open(open_run(run.path)) as book:
        recorded = book.requests()[-1]
    assert recorded.stats["keys_without_training_rows"] == [held[0]] and recorded.n_ids == 3
    assert recorded.keys() == [trained[0]] * 3  # the ledger's keys are the forgotten rows' keys
    # the model is the one that forgets the trained user alone (the same request without the held-out key)
    alone = forget(open_run(run.path), keys=[trained[0]], method="mini", ledger=False)
    assert np.array_equal(alone.theta.numpy(), payload_theta(tmp_path / "u"))


def payload_theta(directory):
    from miniunlearn.runs import load_model

    return load_model(directory)[1].numpy()


def test_a_request_of_held_out_keys_only_serves_the_current_model_and_is_recorded(people, run, tmp_path, capsys):
    frame, _, trained, held = people
    base_sha = file_sha256(run.path / MODEL_FILE)
    code, out, err = run_cli(capsys, "forget", run.path, "--keys", _keys(tmp_path, "h", held[:2]),
                             "--out", tmp_path / "h0", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["n_forget"] == payload["n_forget_request"] == 0 and "unchanged" in payload
    assert payload["keys_without_training_rows"] == held[:2]
    assert file_sha256(tmp_path / "h0" / MODEL_FILE) == base_sha  # nothing forgotten yet: the trained model

    code, out, err = run_cli(capsys, "forget", run.path, "--keys", _keys(tmp_path, "a", trained[:2]),
                             "--out", tmp_path / "a", "--json")
    assert code == 0, err
    deletion = json.loads(out)["ledger"]["request"]
    code, out, err = run_cli(capsys, "forget", run.path, "--keys", _keys(tmp_path, "h2", held[2:3] or held[:1]),
                             "--out", tmp_path / "h1", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["n_forget"] == 6 and payload["n_forget_request"] == 0  # the two users' rows, forgotten before
    assert file_sha256(tmp_path / "h1" / MODEL_FILE) == file_sha256(tmp_path / "a" / MODEL_FILE)
    assert payload["ledger"]["refers_to"] == deletion and payload["ledger"]["kind"] == "deletion"

    # later requests are unaffected: the union of the deletions, and the ledger checks out
    code, out, err = run_cli(capsys, "forget", run.path, "--keys", _keys(tmp_path, "b", trained[2:3]),
                             "--out", tmp_path / "b", "--json")
    assert code == 0, err
    assert json.loads(out)["n_forget"] == 9
    code, out, err = run_cli(capsys, "ledger", run.path, "--verify", "--json")
    assert code == 0, err
    with Ledger.open(open_run(run.path)) as book:
        assert [r.n_ids for r in book.requests("done")] == [0, 6, 0, 3]
        assert sorted(book.forgotten_keys()) == sorted(trained[:3])


def test_unknown_keys_stay_an_error_even_beside_held_out_ones(people, run, tmp_path, capsys):
    _, _, trained, held = people
    code, _, err = run_cli(capsys, "forget", run.path, "--keys", _keys(tmp_path, "x", [held[0], "9999"]),
                           "--out", tmp_path / "x")
    assert code == 2 and "name no training row: '9999'" in err and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists() and not Ledger.exists(open_run(run.path))


def test_without_the_ledger_held_out_keys_give_the_model_as_it_stands(people, run):
    _, _, trained, held = people
    result = forget(open_run(run.path), keys=held[:1], ledger=False)
    assert np.array_equal(result.theta.numpy(), open_run(run.path).theta().numpy())
    assert result.stats["keys_without_training_rows"] == held[:1] and result.stats["n_forget"] == 0
    with pytest.raises(InputError, match="no keys given"):
        forget(open_run(run.path), keys=[], ledger=False)
