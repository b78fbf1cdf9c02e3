"""Every file a run directory and an unlearned-model directory hold is named in runs.layout."""

import numpy as np

from miniunlearn.data import Dataset
from miniunlearn.runs import layout, open_run, train
from miniunlearn.service import forget
from miniunlearn.service.compact import compact


def test_every_file_of_a_run_its_bases_and_its_outputs_is_named_in_the_layout(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = (X @ np.array([1.0, -1.0, 0.5]) + 0.3 * rng.normal(size=40) > 0).astype(int)
    ids = np.array([f"user-{i}" for i in range(40)])
    run = train(Dataset.from_arrays(X, y, ids=ids), 1e-1, tmp_path / "run", deltagrad_history=False)
    forget(run, [2, 7], "retrain", out=tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {layout.RESULT_JSON, layout.MODEL_FILE}
    before = {p.name for p in run.path.iterdir()}
    assert before <= {layout.RUN_JSON, layout.MODEL_FILE, layout.HISTORY_FILE, layout.KEYS_FILE, layout.DATA_DIR,
                      layout.LEDGER_FILE, layout.LOCK_FILE}
    assert {layout.RUN_JSON, layout.MODEL_FILE, layout.HISTORY_FILE, layout.KEYS_FILE, layout.DATA_DIR,
            layout.LEDGER_FILE} <= before
    compact(open_run(run.path))
    run = open_run(run.path)
    assert run.generation == 1 and run.base.dir == layout.base_dir(run.path, 1)
    assert {p.name for p in run.path.iterdir()} <= {layout.RUN_JSON, layout.BASES_DIR, layout.LEDGER_FILE,
                                                    layout.LOCK_FILE}  # generation 0's files are gone
    assert [p.name for p in (run.path / layout.BASES_DIR).iterdir()] == ["1"]
    assert {p.name for p in run.base.dir.iterdir()} == {layout.BASE_JSON, layout.MODEL_FILE, layout.HISTORY_FILE,
                                                        layout.KEYS_FILE, layout.DROPPED_KEYS_FILE, layout.DATA_DIR}
    assert set(layout.generation_zero_files()) >= before - {layout.RUN_JSON, layout.LEDGER_FILE, layout.LOCK_FILE}
