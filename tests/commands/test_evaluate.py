"""`miniunlearn evaluate` and `miniunlearn audit` end to end (in-process CLI)."""

import json
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file

from miniunlearn.service import forget
from tests.helpers import run_cli


def _weights(model_dir):
    tensors = load_file(str(model_dir / "model.safetensors"))
    return np.hstack([tensors["weight"].numpy(), tensors["bias"].numpy()[:, None]])


def test_evaluate_reports_what_an_independent_computation_gives(overfit, capsys, tmp_path):
    run, ds, ids = overfit["run"], overfit["dataset"], overfit["ids"]
    finetuned = tmp_path / "finetune"
    forget(run, ids, method="finetune", epochs=1, out=finetuned)
    re = overfit["retrained_dir"]
    code, out, err = run_cli(capsys, "evaluate", finetuned, "--against", re, "--run", run.path,
                             "--ids", overfit["ids_file"], "--json")
    assert code == 0, err
    payload = json.loads(out)
    (name, got), = payload["models"].items()
    assert name == "finetune" and payload["methods"] == {"finetune": "finetune"}
    W, W_R, W_T = _weights(finetuned), _weights(re), _weights(run.path)
    distance = np.linalg.norm(W - W_R)
    assert got["distance_to_retrained"] == pytest.approx(distance, rel=1e-12)
    assert got["relative_residual"] == pytest.approx(distance / np.linalg.norm(W_T - W_R), rel=1e-12)
    predict = lambda M, X: (X @ M[:, :-1].T + M[:, -1]).argmax(axis=1)
    assert got["test_accuracy"] == pytest.approx(np.mean(predict(W, ds.X_test) == ds.y_test))
    assert got["forget_accuracy_gap"] == pytest.approx(np.mean(predict(W, ds.X_train[ids]) == ds.y_train[ids])
                                                      - np.mean(predict(W_R, ds.X_train[ids]) == ds.y_train[ids]))
    assert payload["original"]["relative_residual"] == pytest.approx(1.0)
    assert payload["n_forget"] == len(ids)
    code, out, err = run_cli(capsys, "evaluate", finetuned, "--against", re, "--run", run.path,
                             "--ids", overfit["ids_file"])
    assert code == 0 and "relative residual" in out and "retrained (reference)" in out


def test_audit_without_shadows_compares_with_the_retrained_model(overfit, capsys):
    re = overfit["retrained_dir"]
    code, out, err = run_cli(capsys, "audit", re, "--against", re, "--run", overfit["run"].path,
                             "--ids", overfit["ids_file"], "--shadows", "0", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert "ulira" not in payload
    loss, svc = payload["loss_attack"], payload["svc_mia"]["confidence"]
    assert loss["original"]["auc"] > loss["retrained"]["auc"] + 0.2
    assert svc["original"]["efficacy"] < svc["retrained"]["efficacy"] - 0.2


def test_audit_with_shadows_writes_json_and_plots(overfit, capsys, tmp_path):
    re = overfit["retrained_dir"]
    out_dir = tmp_path / "audit"
    code, out, err = run_cli(capsys, "audit", re, "--against", re, "--run", overfit["run"].path,
                             "--ids", overfit["ids_file"], "--shadows", "6", "--targets", "30",
                             "--exactness-shadows", "4", "--max-targets", "30", "--out", out_dir)
    assert code == 0, err
    assert "population U-LiRA" in out and "MIA-efficacy" in out and "population loss attack" in out
    assert "exactness test, NOT a privacy figure" in out
    payload = json.loads((out_dir / "audit.json").read_text())
    ulira = payload["ulira"]
    assert ulira["protocol"]["n_shadows"] == 6 and ulira["protocol"]["n_targets"] == 30
    assert ulira["protocol"]["ratios"] == [pytest.approx(0.4)]
    (key, entry), = ulira["ratios"].items()
    assert set(entry["attacks"]) == {"retrain", "original"} and ulira["models"] == {"retrain": ["retrain"]}
    assert (out_dir / f"ulira_r{key}.png").is_file()
    exactness = payload["exactness_test"]
    assert set(exactness["attacks"]) == {"retrain", "original"}
    assert set(exactness["attacks"]["retrain"]["targets"]) == {"retrain", "retrained", "original"}
    assert exactness["protocol"]["n_targets"] == 60
    for label in ("retrain", "original"):
        assert (out_dir / f"exactness_{label}.png").is_file()


def _copy_with_result(src, dst, **changes):
    shutil.copytree(src, dst)
    result = json.loads((dst / "result.json").read_text())
    result.update(changes)
    (dst / "result.json").write_text(json.dumps(result))
    return dst


@pytest.mark.parametrize("command", ["evaluate", "audit"])
def test_models_of_another_request_are_refused(overfit, capsys, tmp_path, command):
    re = overfit["retrained_dir"]
    other = _copy_with_result(re, tmp_path / "other", forget_ids_sha256="0" * 64, cumulative_ids_sha256="0" * 64)
    code, _, err = run_cli(capsys, command, other, "--against", re, "--run", overfit["run"].path,
                           "--ids", overfit["ids_file"], *(["--shadows", "0"] if command == "audit" else []))
    assert code == 2 and "another forget set" in err
    not_retrained = _copy_with_result(re, tmp_path / "mini", method="mini")
    code, _, err = run_cli(capsys, command, re, "--against", not_retrained, "--run", overfit["run"].path,
                           "--ids", overfit["ids_file"], *(["--shadows", "0"] if command == "audit" else []))
    assert code == 2 and "not by retraining" in err


@pytest.mark.parametrize("extra, message", [
    (["--shadows", "3"], "even number"),
    (["--shadows", "4"], "at least 6"),
    (["--shadows", "-2"], "--shadows and --exactness-shadows must be"),
    (["--shadows", "0", "--exactness-shadows", "2"], "at least 4"),
    (["--targets", "1"], "at least 2 targets"),
    (["--variance-floor", "2"], "variance floor"),
    (["--set", "refine=1"], "name the method too"),
    (["--shadow-method", "no-such-method"], "unknown unlearning method"),
])
def test_bad_audit_options_fail_clearly(overfit, capsys, extra, message):
    re = overfit["retrained_dir"]
    code, _, err = run_cli(capsys, "audit", re, "--against", re, "--run", overfit["run"].path,
                           "--ids", overfit["ids_file"], *extra)
    assert code == 2 and message in err
