import json
import subprocess
import sys

import numpy as np
import pytest

from miniunlearn.cli import main
from tests.helpers import run_cli




@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "digits"
    main(["train", "--dataset", "digits", "--l2", "1e-3", "--out", str(path), "--json"])
    return path


def test_train_json_reports_convergence_and_history(digits_run, capsys):
    meta = json.loads((digits_run / "run.json").read_text())
    assert meta["training"]["grad_norm"] <= 1e-9
    assert meta["history"]["mini"]["profile"] == "exact"


def test_retrain_cli_writes_model_and_result(digits_run, tmp_path, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(map(str, range(0, 200, 3))) + "\n")
    code, out, err = run_cli(capsys, "retrain", digits_run, "--ids", ids, "--out", tmp_path / "re", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["method"] == "retrain" and payload["n_forget"] == 67
    assert (tmp_path / "re" / "model.safetensors").is_file() and (tmp_path / "re" / "result.json").is_file()


@pytest.mark.parametrize("content, message", [
    ("1\n2\nthree\n", "line 3: 'three' is not an integer"),
    ("1\n1\n", "duplicated"),
    ("-4\n", "out of range"),
    ("999999\n", "out of range"),
    ("", "nothing to forget"),
    ("1.5\n", "line 1"),
])
def test_malformed_ids_files_fail_clearly(digits_run, tmp_path, capsys, content, message):
    ids = tmp_path / "ids.txt"
    ids.write_text(content)
    code, _, err = run_cli(capsys, "retrain", digits_run, "--ids", ids, "--out", tmp_path / "o")
    assert code == 2 and message in err
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_forgetting_every_row_is_refused(digits_run, tmp_path, capsys):
    ids = tmp_path / "all.txt"
    n = json.loads((digits_run / "run.json").read_text())["dataset"]["n_train"]
    ids.write_text("\n".join(map(str, range(n))))
    code, _, err = run_cli(capsys, "retrain", digits_run, "--ids", ids, "--out", tmp_path / "o")
    assert code == 2 and "every training row" in err


@pytest.mark.parametrize("args, message", [
    (["train", "--dataset", "unknown-set", "--l2", "1", "--out", "{tmp}/r"], "unknown dataset 'unknown-set'"),
    (["train", "--dataset", "fashion-mnist:path={tmp}/nowhere", "--l2", "1", "--out", "{tmp}/r"], "does not exist"),
    (["train", "--dataset", "digits", "--l2", "-1", "--out", "{tmp}/r"], "option l2 must be a finite number in (0, "),
    (["retrain", "{tmp}/no-run", "--ids", "{tmp}/ids", "--out", "{tmp}/o"], "run directory not found"),
    (["data", "export", "nope", "--out", "{tmp}/x.npz"], "unknown dataset"),
])
def test_bad_input_gives_clear_message_and_nonzero_exit(tmp_path, capsys, args, message):
    code, _, err = run_cli(capsys, *[a.format(tmp=tmp_path) for a in args])
    assert code != 0 and message in err


def test_malformed_data_file(tmp_path, capsys):
    folder = tmp_path / "idx"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (folder / name).write_bytes(b"not an idx file at all")
    code, _, err = run_cli(capsys, "train", "--dataset", f"fashion-mnist:path={folder}", "--l2", "1", "--out",
                           tmp_path / "r")
    assert code == 2 and "bad magic number" in err


def test_data_list_and_export(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "data", "list", "--json")
    names = {d["name"] for d in json.loads(out)["datasets"]}
    assert {"digits", "breast_cancer", "synthetic", "fashion-mnist", "mnist", "covtype", "higgs"} <= names
    code, out, _ = run_cli(capsys, "data", "export", "digits", "--out", tmp_path / "d.npz")
    assert code == 0
    with np.load(tmp_path / "d.npz") as npz:
        assert npz["X_train"].shape == (1347, 64) and npz["y_train"].dtype == np.int64


def test_python_dash_m_and_help():
    done = subprocess.run([sys.executable, "-m", "miniunlearn", "--help"], capture_output=True, text=True, check=True)
    for command in ("train", "forget", "retrain", "data"):
        assert command in done.stdout
