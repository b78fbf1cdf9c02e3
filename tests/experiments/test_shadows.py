"""What both shadow protocols share: training a shadow with the run's configuration, and only the
history its methods read."""

import numpy as np
import pytest

from miniunlearn.core.errors import InputError, RunError
from miniunlearn.experiments.shadows import ShadowMethod, check_methods, shadow_training_kwargs, train_shadow
from miniunlearn.service import forget


def test_a_shadow_records_mini_history_only_when_a_method_reads_it(overfit, tmp_path):
    run, dataset = overfit["run"], overfit["dataset"]
    without = shadow_training_kwargs(run, [ShadowMethod("retrain", "retrain"), ShadowMethod("original", None)])
    with_mini = shadow_training_kwargs(run, [ShadowMethod("mini", "mini", {"refine": 1})])
    assert without["mini_history"] is False and with_mini["mini_history"] is True
    assert {k: v for k, v in without.items() if k != "mini_history"} == \
        {k: v for k, v in with_mini.items() if k != "mini_history"}
    rows = np.arange(0, dataset.n_train, 2)
    times = {}
    shadow = train_shadow(dataset, dataset.X_train[rows], dataset.y_train[rows], "s", without, tmp_path / "a", times)
    assert not shadow.history_path().exists() and times["train_s"] > 0
    with pytest.raises(RunError, match="no Mini-Unlearning history"):
        forget(shadow, [0, 1], method="mini", ledger=False)
    # the same training otherwise: the trained parameters are identical with and without the history
    recorded = train_shadow(dataset, dataset.X_train[rows], dataset.y_train[rows], "s", with_mini, tmp_path / "b", {})
    assert recorded.history_path().exists()
    assert np.array_equal(shadow.theta().numpy(), recorded.theta().numpy())


def test_unknown_method_or_option_or_duplicate_label_is_refused(overfit):
    run = overfit["run"]
    with pytest.raises(InputError, match="unknown unlearning method"):
        check_methods([ShadowMethod("x", "no-such-method")], run)
    with pytest.raises(InputError, match="has no option"):
        check_methods([ShadowMethod("r", "retrain", {"nope": 1})], run)
    with pytest.raises(InputError, match="unique"):
        check_methods([ShadowMethod("r", "retrain"), ShadowMethod("r", None)], run)
    with pytest.raises(InputError, match="does not support converged"):
        check_methods([ShadowMethod("d", "deltagrad")], run)
