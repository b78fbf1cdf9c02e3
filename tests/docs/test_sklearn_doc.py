"""docs/sklearn.md runs: its python blocks execute here, in order, in a fresh directory, and do
what the text around them says."""

import re
from pathlib import Path

import numpy as np
import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "sklearn.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


@pytest.mark.slow
def test_the_scikit_learn_door_walk_through_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    blocks = BLOCK.findall(DOC.read_text())
    assert len(blocks) >= 9
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - the documentation's own code
    printed = capsys.readouterr().out
    ns = namespace
    assert ns["stats"]["n_forget"] == 8  # two people, four rows each
    assert "fitted without keys" in ns["refused"]
    assert max(ns["gaps"].values()) <= 1e-8 and set(ns["gaps"]) == {2, 3}
    assert set(ns["before"]) - set(ns["after"]) == {"cat__city_Smalltown"}
    assert np.array_equal(ns["scaler"].mean_, ns["scaler_refit"].mean_)
    gap = np.abs(ns["pipe"].predict_proba(ns["features"]) - ns["refit"].predict_proba(ns["features"])).max()
    assert gap <= 1e-6
    assert "'pca' (PCA)" in printed
    assert ns["best"].forget_stats_["n_forget"] == 4
    assert ns["copy"][-1].forget_stats_["n_forget"] == 4  # 1042 (a pipeline forget makes a new base: 1007 is gone)
    assert {"run.json", "model.safetensors", "history.safetensors", "keys.npy", "data", "ledger.sqlite",
            "estimator.json", "unlearned"} <= set(ns["listing"])
    assert (tmp_path / "runs" / "churn" / "bases" / "1").is_dir()  # compacted
    assert ns["saved"].compact_stats_["n_dropped"] == 4
    assert np.abs(ns["served"].predict_proba(ns["numeric"]) - ns["other"].predict_proba(ns["numeric"])).max() == 0.0
