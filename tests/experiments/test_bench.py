import json

import numpy as np
import pytest

from miniunlearn.core.errors import InputError
from miniunlearn.data import load_dataset
from miniunlearn.experiments.bench import ROW_KEYS, BenchConfig, run_bench
from miniunlearn.experiments.report import write_report
from miniunlearn.models.rows import retained_ids
from miniunlearn.service.requests import random_forget_ids
from tests.helpers import scipy_optimum


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    config = BenchConfig(datasets=["breast_cancer"], ratios=[0.1, 0.3], methods=["mini:refine=0", "mini", "retrain",
                                                                                 "deltagrad"],
                         seeds=[0], exactness_shadows=0, mia_max_rows=200)
    rows = run_bench(config, out, log=lambda *_: None)
    return config, out, rows


def test_rows_have_every_key_and_real_measurements(bench):
    config, out, rows = bench
    assert len(rows) == 2 * (4 + 2)  # four methods and the two runs' original models, at two ratios
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(rows))
    for row in rows:
        assert set(ROW_KEYS) <= set(row) and row["load_1min"] >= 0
    # the reference columns against independently computed optima (scipy) on the same rows: the retrained
    # model's accuracies, and the distance the original model lies from it (every residual's denominator)
    ds = load_dataset("breast_cancer")
    W_T = scipy_optimum(ds.X_train, ds.y_train, 2, config.l2)

    def accuracy(W, X, y):
        W = W.reshape(2, -1)
        return np.mean((X @ W[:, :-1].T + W[:, -1]).argmax(axis=1) == y)

    for ratio in (0.1, 0.3):
        ids = random_forget_ids(ds.n_train, ratio, 0)
        keep = retained_ids(ds.n_train, ids)
        W_R = scipy_optimum(ds.X_train[keep], ds.y_train[keep], 2, config.l2)
        for row in (r for r in rows if r["ratio"] == ratio and r["mode"] == "converged"):
            assert row["test_acc_retrain"] == pytest.approx(accuracy(W_R, ds.X_test, ds.y_test), abs=1e-12)
            assert row["forget_acc_retrain"] == pytest.approx(accuracy(W_R, ds.X_train[ids], ds.y_train[ids]),
                                                              abs=1e-12)
        original = next(r for r in rows if r["method"] == "original" and r["ratio"] == ratio)
        # both solves stop at ||grad|| <= 1e-9, within 1e-9 / l2 = 1e-6 of their optima
        assert original["l2_to_retrain"] == pytest.approx(np.linalg.norm(W_T - W_R), abs=3e-6)
        assert original["speedup_vs_retrain"] is None  # doing nothing is not timed against retraining
        assert original["forget_acc"] == pytest.approx(accuracy(W_T, ds.X_train[ids], ds.y_train[ids]), abs=1e-12)
    assert {r["method"] for r in rows if r["method"].startswith("original")} == {"original", "original-sgd"}
    mini = {(r["ratio"], r["refine"]): r for r in rows if r["method"] == "mini"}
    for ratio in (0.1, 0.3):
        certified, fixed_point = mini[(ratio, None)], mini[(ratio, 0)]
        assert certified["relative_residual"] < 1e-3 < fixed_point["relative_residual"] < 0.5
        assert fixed_point["passes_retained"] == 0 and certified["passes_retained"] >= 1
        assert certified["certificate"] <= 1e-3 * certified["l2_to_retrain"] / certified["relative_residual"] * 1.01
    deltagrad = [r for r in rows if r["method"] == "deltagrad"]
    assert all(r["mode"] == "trajectory" and r["history_bytes"] > 0 for r in deltagrad)


def test_rerun_resumes_without_recomputing(bench):
    config, out, rows = bench
    again = run_bench(config, out, log=lambda *_: None)
    assert again == rows  # identical rows: nothing was recomputed (timings would differ)


def test_report_has_tables_and_plots(bench):
    _, out, rows = bench
    report = write_report(rows, out, "test", "miniunlearn bench --out x")
    text = report.read_text()
    assert "| mini (refine 0) | 10% |" in text and "breast_cancer" in text
    header = next(line for line in text.splitlines() if line.startswith("| method | ratio |"))
    loads = [r["load_1min"] for r in rows]
    assert f"1-minute load average while these rows were measured: {min(loads):.2f} to {max(loads):.2f}." in text
    column = header.split(" | ").index("certified")
    certified = next(r for r in rows if r["method"] == "mini" and r["refine"] is None and r["ratio"] == 0.1)
    row = next(line for line in text.splitlines() if line.startswith("| mini | 10% |"))
    # the certificate over ||w_T - w_R||, the distance the original model's row measured
    original = next(r for r in rows if r["method"] == "original" and r["ratio"] == 0.1)
    bound = certified["certificate"] / original["l2_to_retrain"]
    assert row.split(" | ")[column] == f"{bound:.1e}" and certified["relative_residual"] <= bound
    assert (out / "breast_cancer_relative_residual.png").stat().st_size > 1000


def test_bad_configuration_is_refused(tmp_path):
    with pytest.raises(InputError, match="ratios are fractions"):
        run_bench(BenchConfig(datasets=["digits"], ratios=[10], methods=["mini"]), tmp_path)
    with pytest.raises(InputError, match="unknown unlearning method"):
        run_bench(BenchConfig(datasets=["digits"], ratios=[0.1], methods=["magic"]), tmp_path)
