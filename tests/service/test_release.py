"""Certified releases through the forget service and the CLI: noise scale, records, refusals, both sides."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import chi2

from miniunlearn.core.errors import InputError
from miniunlearn.core.storage import file_sha256
from miniunlearn.privacy import ReleaseRequest, analytic_sigma
from miniunlearn.runs import load_model
from miniunlearn.service import Ledger, forget
from miniunlearn.service.requests import write_ids_file
from tests.helpers import fresh_run, run_cli

SPEC = "synthetic:n_samples=600,n_features=30,n_classes=3,seed=5"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from miniunlearn import load_dataset, train

    path = tmp_path_factory.mktemp("release") / "run"
    train(load_dataset(SPEC), 1e-2, path)
    return path


@pytest.fixture
def run(trained, tmp_path):
    """A fresh copy of the trained run (no ledger yet)."""
    return fresh_run(trained, tmp_path)


@pytest.fixture
def ids(run, tmp_path):
    ids = np.arange(0, run.n_train, 7)
    write_ids_file(tmp_path / "forget.txt", ids)
    return ids


def test_release_adds_calibrated_noise_and_records_it_everywhere(run, ids, tmp_path):
    exact = forget(run, ids, method="mini", refine=1, ledger=False)
    out = tmp_path / "released"
    released = forget(run, ids, method="mini", refine=1, out=out, release=ReleaseRequest(0.5, 1e-5))
    record = released.stats["release"]
    # sensitivity = the method's certificate + retraining's own distance to the optimum, tol / lambda
    tol, l2 = run.config["tol"], run.l2
    assert record["certificate"] == exact.stats["certificate"]
    assert record["sensitivity"] == pytest.approx(exact.stats["certificate"] + tol / l2, rel=1e-15)
    assert record["sigma"] == pytest.approx(record["sensitivity"] * math.sqrt(2 * math.log(1.25 / 1e-5)) / 0.5,
                                            rel=1e-14)
    assert (record["epsilon"], record["delta"], record["mechanism"]) == (0.5, 1e-5, "gaussian-classic")
    # the saved model is the noisy one: (saved - exact) / sigma is a standard Gaussian vector
    _, saved, _ = load_model(out)
    assert torch.equal(saved, released.theta)
    noise = (saved - exact.theta) / record["sigma"]
    assert chi2.ppf(1e-4, noise.numel()) < float(noise @ noise) < chi2.ppf(1 - 1e-4, noise.numel())
    result = json.loads((out / "result.json").read_text())
    assert result["release"] == json.loads(json.dumps(record)) and "release" not in result["options"]
    with Ledger.open(run) as book:
        (request,) = book.requests("done")
    assert request.stats["release"]["sigma"] == record["sigma"] and request.options["release"]["epsilon"] == 0.5


def test_repeats_serve_the_recorded_release_and_an_unreleased_request_is_another_model(run, ids, tmp_path):
    release = ReleaseRequest(2.0, 1e-5)
    forget(run, ids, method="mini", refine=1, out=tmp_path / "a", release=release)
    again = forget(run, ids, method="mini", refine=1, out=tmp_path / "b", release=release)
    # fresh noise would be a second release of the same model: the recorded one is served instead
    assert file_sha256(tmp_path / "a" / "model.safetensors") == file_sha256(tmp_path / "b" / "model.safetensors")
    assert again.stats["release"]["mechanism"] == "gaussian-analytic"
    assert json.loads((tmp_path / "b" / "result.json").read_text())["options"] == {**again.options}
    assert "release" not in again.options
    plain = forget(run, ids, method="mini", refine=1, out=tmp_path / "c")
    assert "release" not in plain.stats
    assert torch.equal(plain.theta, forget(run, ids, method="mini", refine=1, ledger=False).theta)


def test_a_method_without_certificate_is_refused_and_nothing_is_recorded_as_done(run, ids, tmp_path):
    out = tmp_path / "refused"
    with pytest.raises(InputError, match="no finite certificate"):
        forget(run, ids, method="mini", refine=0, out=out, release=ReleaseRequest(1.0, 1e-5))
    assert not (out / "model.safetensors").exists() and not (out / "result.json").exists()
    with Ledger.open(run) as book:
        assert book.requests("done") == [] and [r.status for r in book.requests()] == ["failed"]
        assert book.forgotten_ids().size == 0


def test_a_sensitivity_below_the_certificate_is_refused(run, ids):
    with pytest.raises(InputError, match="below this model's certified distance"):
        forget(run, ids, method="mini", refine=1, ledger=False, release=ReleaseRequest(1.0, 1e-5, sensitivity=1e-12))
    bigger = forget(run, ids, method="mini", refine=1, ledger=False, release=ReleaseRequest(1.0, 1e-5, sensitivity=3.0))
    assert bigger.stats["release"]["sigma"] == pytest.approx(analytic_sigma(3.0, 1.0, 1e-5), rel=1e-15)


def test_retraining_is_released_only_with_the_unlearned_sensitivity(run, ids):
    with pytest.raises(InputError, match="--like DIR"):
        forget(run, ids, method="retrain", ledger=False, release=ReleaseRequest(1.0, 1e-5))
    released = forget(run, ids, method="retrain", ledger=False, release=ReleaseRequest(1.0, 1e-5, sensitivity=0.2))
    assert released.stats["release"]["certificate"] == 0.0
    assert released.stats["release"]["sigma"] == pytest.approx(analytic_sigma(0.2, 1.0, 1e-5), rel=1e-15)


def test_cli_releases_both_sides_with_the_same_sigma(run, ids, tmp_path, capsys):
    ids_file, mini_dir, retrain_dir = tmp_path / "forget.txt", tmp_path / "mini", tmp_path / "retrained"
    code, out, err = run_cli(capsys, "forget", run.path, "--ids", ids_file, "--refine", "1", "--epsilon", "0.5",
                             "--delta", "1e-5", "--out", mini_dir)
    assert code == 0, err
    assert "certified release" in out and "gaussian-classic" in out
    code, out, err = run_cli(capsys, "retrain", run.path, "--ids", ids_file, "--like", mini_dir, "--out",
                             retrain_dir, "--json")
    assert code == 0, err
    mine = json.loads((mini_dir / "result.json").read_text())["release"]
    theirs = json.loads(out)["release"]
    assert theirs["sigma"] == mine["sigma"] and theirs["sensitivity"] == mine["sensitivity"]
    assert (theirs["epsilon"], theirs["delta"], theirs["mechanism"]) == (0.5, 1e-5, "gaussian-classic")


@pytest.mark.parametrize("args, message", [
    (["forget", "--epsilon", "1"], "both --epsilon and --delta"),
    (["forget", "--delta", "1e-5", "--refine", "1"], "both --epsilon and --delta"),
    (["forget", "--sensitivity", "1", "--refine", "1"], "give --epsilon and --delta"),
    (["forget", "--epsilon", "0", "--delta", "1e-5", "--refine", "1"], "epsilon"),
    (["forget", "--epsilon", "2", "--delta", "1e-5", "--mechanism", "classic", "--refine", "1"], "0 < epsilon < 1"),
    (["forget", "--epsilon", "1", "--delta", "1e-5", "--refine", "0"], "no finite certificate"),
    (["retrain", "--epsilon", "1", "--delta", "1e-5"], "--like DIR"),
])
def test_bad_release_options_fail_clearly(run, ids, tmp_path, capsys, args, message):
    command, *rest = args
    code, _, err = run_cli(capsys, command, run.path, "--ids", tmp_path / "forget.txt", "--out", tmp_path / "o", *rest)
    assert code == 2 and message in err
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_like_refuses_an_unreleased_model_or_another_request(run, ids, tmp_path, capsys):
    plain = tmp_path / "plain"
    forget(run, ids, method="mini", refine=1, out=plain)
    code, _, err = run_cli(capsys, "retrain", run.path, "--ids", tmp_path / "forget.txt", "--like", plain,
                           "--out", tmp_path / "r")
    assert code == 2 and "not a certified release" in err
    released = tmp_path / "released"
    forget(run, ids, method="mini", refine=1, out=released, release=ReleaseRequest(0.5, 1e-5))
    write_ids_file(tmp_path / "other.txt", ids[:-1])
    code, _, err = run_cli(capsys, "retrain", run.path, "--ids", tmp_path / "other.txt", "--like", released,
                           "--out", tmp_path / "r")
    assert code == 2 and "another forget set" in err
    code, _, err = run_cli(capsys, "retrain", run.path, "--ids", tmp_path / "forget.txt", "--like", released,
                           "--epsilon", "1", "--out", tmp_path / "r")
    assert code == 2 and "differs from the epsilon" in err
