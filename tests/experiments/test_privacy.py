"""The privacy benchmark end to end on a tiny set: parts, releases against the formula, resuming."""

import json
import math

import numpy as np
import pytest

from miniunlearn.core.errors import InputError
from miniunlearn.data import load_dataset
from miniunlearn.experiments.privacy import PrivacyConfig, run_privacy
from miniunlearn.models.rows import retained_ids
from miniunlearn.service.requests import random_forget_ids
from tests.helpers import scipy_optimum

SPEC = "synthetic:n_samples=400,n_features=8,n_classes=3,seed=2"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("privacy")
    config = PrivacyConfig(datasets=[SPEC], ratios=[0.3], shadows=6, targets=30, exactness_shadows=0, draws=3,
                           replicates=50, mia_max_rows=100, epsilons=[0.5, 2.0], workers=1, sgd_epochs=4)
    results = run_privacy(config, root / "out", root / "work", log=lambda *_: None)
    return config, root, results


def test_every_part_is_computed_and_reported(bench):
    _, root, results = bench
    (label, entry), = results["datasets"].items()
    assert set(entry["parts"]) == {"models/converged/0.3", "models/trajectory/0.3", "ulira/converged",
                                   "ulira/trajectory"}
    attacks = entry["parts"]["ulira/converged"]["ratios"]["0.3"]["attacks"]
    assert {"retrain", "mini (refine 0)", "mini tol 1e-3", "newton", "finetune", "neggrad", "original"} == set(attacks)
    assert set(entry["parts"]["ulira/trajectory"]["ratios"]["0.3"]["attacks"]) == {"retrain (SGD)", "deltagrad",
                                                                                     "original (SGD)"}
    report = (root / "out" / "report.md").read_text()
    assert "### Population U-LiRA, converged runs" in report and "| mini tol 1e-3 | 0.5 |" in report
    png = entry["parts"]["ulira/converged"]["ratios"]["0.3"]["roc_png"]
    assert (root / "out" / png).read_bytes()[:4] == b"\x89PNG" and f"]({png})" in report


def test_retraining_and_releases_match_independent_computations(bench):
    config, _, results = bench
    (_, entry), = results["datasets"].items()
    part = entry["parts"]["models/converged/0.3"]
    ds = load_dataset(SPEC)
    keep = retained_ids(ds.n_train, random_forget_ids(ds.n_train, 0.3, config.seed))
    W = scipy_optimum(ds.X_train[keep], ds.y_train[keep], 3, config.l2).reshape(3, -1)
    expected = np.mean((ds.X_test @ W[:, :-1].T + W[:, -1]).argmax(axis=1) == ds.y_test)
    assert part["models"]["retrain"]["test_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert part["models"]["retrain"]["relative_residual"] == 0 and part["models"]["original"]["relative_residual"] == 1
    utility = part["utility"]["mini tol 1e-3"]
    classic = utility["by_epsilon"]["0.5"]
    # sensitivity = certificate + retraining's tolerance tol / lambda; sigma by the classic formula
    assert classic["sensitivity"] == pytest.approx(utility["certificate"] + 1e-9 / config.l2, rel=1e-12)
    assert classic["sigma"] == pytest.approx(classic["sensitivity"] * math.sqrt(2 * math.log(1.25 / 1e-5)) / 0.5)
    assert classic["mechanism"] == "gaussian-classic" and utility["by_epsilon"]["2"]["mechanism"] == "gaussian-analytic"
    assert classic["test_accuracy"]["draws"] == 3
    newton = part["utility"]["newton"]  # certified too (certify=True): released on its own certificate
    assert newton["certificate"] == part["models"]["newton"]["certificate"] > utility["certificate"]
    assert newton["by_epsilon"]["0.5"]["sensitivity"] == pytest.approx(newton["certificate"] + 1e-9 / config.l2,
                                                                       rel=1e-12)


def test_a_rerun_resumes_without_recomputing(bench):
    config, root, results = bench
    again = run_privacy(config, root / "out", root / "work", log=lambda *_: None)
    assert json.dumps(again["datasets"], sort_keys=True) == json.dumps(results["datasets"], sort_keys=True)


def test_bad_configuration_is_refused(tmp_path):
    with pytest.raises(InputError, match="at least 6"):
        run_privacy(PrivacyConfig(datasets=[SPEC], shadows=4), tmp_path / "o", tmp_path / "w")
    with pytest.raises(InputError, match="epsilon"):
        run_privacy(PrivacyConfig(datasets=[SPEC], epsilons=[0.0]), tmp_path / "o", tmp_path / "w")


def test_the_ulira_summary_quotes_every_attacked_method_against_retraining(bench):
    from miniunlearn.experiments.privacy_report import ulira_summary

    _, _, results = bench
    (label, entry), = results["datasets"].items()
    lines = ulira_summary(results, "privacy/results.json")
    text = "\n".join(lines)
    assert "`privacy/results.json`" in text and f"**{label}**, converged runs: 6 shadows" in text
    for family in ("converged", "trajectory"):
        for method, attack in entry["parts"][f"ulira/{family}"]["ratios"]["0.3"]["attacks"].items():
            row = next(line for line in lines if line.startswith(f"| {method} |"))
            assert row.split(" | ")[1] == f"{attack['auc']:.3f}"
            if "auc_minus_reference" in attack:
                low, high = attack["auc_minus_reference_ci"]
                assert f"{attack['auc_minus_reference']:+.3f} [{low:+.3f}, {high:+.3f}]" in row
            else:
                assert "(reference)" in row
