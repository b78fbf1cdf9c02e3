import json

import pytest

from miniunlearn.errors import InputError
from miniunlearn.evaluation.bench import ROW_KEYS, BenchConfig, run_bench
from miniunlearn.evaluation.report import write_report


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    config = BenchConfig(datasets=["breast_cancer"], ratios=[0.1, 0.3], methods=["mini", "mini:refine=1", "retrain",
                                                                                 "deltagrad"],
                         seeds=[0], shadows=0, mia_max_rows=200)
    rows = run_bench(config, out, log=lambda *_: None)
    return config, out, rows


def test_rows_have_every_key_and_real_measurements(bench):
    _, out, rows = bench
    assert len(rows) == 2 * (4 + 2)  # four methods and the two runs' original models, at two ratios
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(rows))
    for row in rows:
        assert set(ROW_KEYS) <= set(row)
        assert 0 < row["ratio"] < 1 and 0.0 <= row["test_acc"] <= 1.0
        assert 0.0 <= row["mia_loss_auc"] <= 1.0 and 0.0 <= row["mia_efficacy"] <= 1.0
    original = {r["method"]: r for r in rows if r["method"].startswith("original") and r["ratio"] == 0.1}
    assert set(original) == {"original", "original-sgd"}
    assert original["original"]["relative_residual"] == 1.0 and original["original"]["speedup_vs_retrain"] is None
    retrain = [r for r in rows if r["method"] == "retrain"]
    assert all(r["relative_residual"] == 0 and r["test_acc"] == r["test_acc_retrain"] for r in retrain)
    mini = {(r["ratio"], r["refine"]): r for r in rows if r["method"] == "mini"}
    for ratio in (0.1, 0.3):
        assert mini[(ratio, 1)]["relative_residual"] < mini[(ratio, 0)]["relative_residual"] < 0.5
        assert mini[(ratio, 0)]["passes_retained"] == 0 and mini[(ratio, 1)]["passes_retained"] == 1
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
    assert (out / "breast_cancer_relative_residual.png").stat().st_size > 1000


def test_bad_configuration_is_refused(tmp_path):
    with pytest.raises(InputError, match="ratios are fractions"):
        run_bench(BenchConfig(datasets=["digits"], ratios=[10], methods=["mini"]), tmp_path)
    with pytest.raises(InputError, match="unknown unlearning method"):
        run_bench(BenchConfig(datasets=["digits"], ratios=[0.1], methods=["magic"]), tmp_path)
