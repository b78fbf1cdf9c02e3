"""Population U-LiRA: the plan, caching and workers, and the two controls on an overfit model.

Controls (docs/evaluation.md): retraining plus small isotropic noise scores like retraining; the
original model scores clearly above retraining. And the contrast that motivates the protocol: a
method whose only fault is a tiny deterministic residual fails the fixed-rows exactness test but
is as private as retraining under the population attack.
"""

import numpy as np
import pytest
import torch

from miniunlearn.core.errors import InputError
from miniunlearn.data import Dataset
from miniunlearn.experiments.exactness import exactness_test
from miniunlearn.experiments.shadows import ShadowMethod
from miniunlearn.experiments.ulira import (
    attack_scores,
    make_population_plan,
    population_rows,
    population_ulira,
    run_population_shadows,
)
from miniunlearn.methods import UnlearningMethod, register, unregister
from miniunlearn.runs import open_run, train
from miniunlearn.service import forget
from miniunlearn.training import TrainConfig, fit


# -------------------------------------------------------------------------------------- the plan
def test_plan_balances_targets_and_draws_fresh_halves_of_the_rest():
    plan = make_population_plan(70, 30, [0.1, 0.5], n_shadows=8, n_targets=10, seed=4)
    T = plan.n_targets
    assert T == 10 and plan.n_shadows == 8 and len(set(plan.targets)) == T and plan.targets.max() < 100
    assert (plan.member.sum(axis=0) == 4).all()                        # every target in exactly N/2 shadows
    assert (plan.member[0::2] == ~plan.member[1::2]).all()              # complementary pairs
    for k in range(8):
        assert len(plan.others[k]) == (100 - T) // 2 and not set(plan.others[k]) & set(plan.targets)
        rows = plan.shadow_rows(k)
        assert set(rows) == set(plan.others[k]) | set(plan.targets[plan.member[k]])
        for ratio in (0.1, 0.5):
            forgotten = rows[plan.forget_positions(k, ratio)]
            assert len(forgotten) == round(ratio * len(rows))
            assert set(plan.targets[plan.member[k]]) <= set(forgotten)   # every in-target is unlearned
            assert not set(forgotten) & set(plan.targets[~plan.member[k]])
    # the non-target rows differ between shadows: what makes the attack measure privacy
    assert len({tuple(o) for o in plan.others}) == 8


def test_plan_shrinks_the_targets_until_they_fit_in_the_forget_set():
    plan = make_population_plan(70, 30, [0.1], n_shadows=6, n_targets=50, seed=0)
    held = plan.member.sum(axis=1).max()
    assert held <= round(0.1 * (held + (100 - plan.n_targets) // 2))
    assert plan.n_targets < 50 and plan.describe()["n_targets_requested"] == 50
    bigger = make_population_plan(70, 30, [0.1], n_shadows=6, n_targets=plan.n_targets + 1, seed=0)
    assert bigger.n_targets == plan.n_targets                            # the largest that fits


@pytest.mark.parametrize("kwargs, message", [
    ({"n_shadows": 4}, "at least 6"), ({"n_shadows": 7}, "even number"), ({"ratios": [0.0]}, "fractions"),
    ({"ratios": [1.5]}, "fractions"), ({"n_targets": 1}, "at least 2 targets"),
    ({"n_train": 3, "n_test": 2, "ratios": [0.01]}, "too small"),
])
def test_plan_refuses_bad_settings(kwargs, message):
    args = {"n_train": 70, "n_test": 30, "ratios": [0.5], "n_shadows": 6, "n_targets": 10, **kwargs}
    with pytest.raises(InputError, match=message):
        make_population_plan(**args)


def test_population_rows_continue_the_training_rows_with_the_test_rows():
    class Data:
        n_train, n_features = 4, 1
        X_train, y_train = np.arange(4.0)[:, None], np.arange(4)
        X_test, y_test = -np.arange(1.0, 4.0)[:, None], np.arange(10, 13)

    X, y = population_rows(Data, np.array([5, 0, 3, 4]))
    assert list(X[:, 0]) == [-2.0, 0.0, 3.0, -1.0] and list(y) == [11, 0, 3, 10]


# ----------------------------------------------------------------------------- workers and cache
def test_spawned_workers_and_the_cache_give_the_in_process_scores(overfit, tmp_path):
    run = overfit["run"]
    plan = make_population_plan(run.n_train, overfit["dataset"].n_test, [0.4], n_shadows=6, n_targets=20, seed=2)
    methods = [ShadowMethod("retrain", "retrain"), ShadowMethod("original", None)]
    here = run_population_shadows(run, plan, methods, workers=1, threads=1)
    ticks = []
    spawned = run_population_shadows(run, plan, methods, workers=2, threads=1, cache_dir=tmp_path,
                                     progress=lambda n=1, **_: ticks.append(n))
    assert sum(ticks) == 6 and spawned.cached == 0
    for label in ("retrain", "original"):
        assert spawned.phi["0.4"][label].shape == (6, 20)
        assert np.allclose(spawned.phi["0.4"][label], here.phi["0.4"][label], rtol=1e-12, atol=1e-12)
    # unlike the fixed-rows shadows, retrained population shadows differ: they saw other rows
    assert not np.allclose(here.phi["0.4"]["retrain"][0], here.phi["0.4"]["retrain"][1], atol=1e-3)
    again = run_population_shadows(run, plan, methods, cache_dir=tmp_path)
    assert again.cached == 6 and np.array_equal(again.phi["0.4"]["retrain"], spawned.phi["0.4"]["retrain"])
    other = run_population_shadows(run, plan, [ShadowMethod("retrain", "newton")], cache_dir=tmp_path)
    assert other.cached == 0  # another method: the cached scores do not apply


def test_spawned_workers_read_a_run_built_from_arrays(overfit, tmp_path):
    """Data given as arrays has no spec to reload: spawned workers take it from the run."""
    ds = overfit["dataset"]
    from_arrays = Dataset.from_arrays(ds.X_train, ds.y_train, X_test=ds.X_test, y_test=ds.y_test, standardize=False)
    run = train(from_arrays, 1e-2, tmp_path / "run")
    plan = make_population_plan(run.n_train, ds.n_test, [0.4], n_shadows=6, n_targets=10, seed=4)
    methods = [ShadowMethod("retrain", "retrain")]
    here = run_population_shadows(run, plan, methods, workers=1, threads=1)
    spawned = run_population_shadows(open_run(run.path), plan, methods, workers=2, threads=1)
    assert np.allclose(spawned.phi["0.4"]["retrain"], here.phi["0.4"]["retrain"], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------- controls
@pytest.fixture(scope="module")
def noisy_retrain():
    """A test-only method: retraining plus small isotropic Gaussian noise (1 % of the RMS parameter)."""

    @register
    class NoisyRetrain(UnlearningMethod):
        name = "test-noisy-retrain"
        summary = "test only"

        def unlearn(self, ctx):
            theta_R, _, _ = fit(ctx.model, ctx.retained_rows, TrainConfig.from_dict(ctx.run.config))
            generator = torch.Generator().manual_seed(int(ctx.forget_ids.sum()))
            noise = torch.randn(theta_R.numel(), generator=generator, dtype=theta_R.dtype)
            return theta_R + 0.01 * float(theta_R.norm()) / theta_R.numel() ** 0.5 * noise

    yield "test-noisy-retrain"
    unregister("test-noisy-retrain")


TINY = {"alpha": 1 - 1e-4}  # w_R + 1e-4 (w_T - w_R): the original's direction scaled down 10,000 times


@pytest.fixture(scope="module")
def controls(overfit, noisy_retrain, partial_method, tmp_path_factory):
    methods = [ShadowMethod("retrain", "retrain"), ShadowMethod("noisy", noisy_retrain),
               ShadowMethod("tiny", partial_method, TINY), ShadowMethod("original", None)]
    out = tmp_path_factory.mktemp("ulira")
    report = population_ulira(overfit["run"], [0.5], methods, n_shadows=12, n_targets=100, replicates=300, seed=1,
                              out_dir=out)
    return report["ratios"]["0.5"]["attacks"], report, out


def _overlap(a, b):
    return a[0] <= b[1] and b[0] <= a[1]


def test_control_retraining_plus_small_noise_scores_like_retraining(controls):
    attacks, _, _ = controls
    retrain, noisy = attacks["retrain"], attacks["noisy"]
    for attack in (retrain, noisy):
        assert attack["auc_ci"][0] <= 0.5 <= attack["auc_ci"][1]
    assert _overlap(noisy["auc_ci"], retrain["auc_ci"])
    low, high = noisy["auc_minus_reference_ci"]
    assert low <= 0.0 <= high


def test_control_the_original_model_is_clearly_above_retraining(controls):
    attacks, _, _ = controls
    assert attacks["original"]["auc_ci"][0] > attacks["retrain"]["auc_ci"][1]
    assert attacks["original"]["auc_minus_reference_ci"][0] > 0.2
    assert attacks["original"]["tpr_at_fpr"]["0.01"] > attacks["retrain"]["tpr_at_fpr"]["0.01"]


def test_report_names_the_protocol_and_plots_every_method(controls):
    attacks, report, out = controls
    protocol = report["protocol"]
    assert protocol["n_shadows"] == 12 and protocol["n_targets"] == 100 and protocol["population"] == 500
    assert protocol["shadow_training"]["mini_history"] is False  # no method here reads Mini-Unlearning's history
    assert set(attacks) == {"retrain", "noisy", "tiny", "original"} and "auc_minus_reference" not in attacks["retrain"]
    assert all(a["n_positive"] == a["n_negative"] == 600 for a in attacks.values())
    png = out / "ulira_r0.5.png"
    assert report["ratios"]["0.5"]["roc_png"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_tiny_residual_fails_the_exactness_test_but_not_the_population_attack(overfit, controls, partial_method):
    attacks, _, _ = controls
    low, high = attacks["tiny"]["auc_minus_reference_ci"]
    assert low <= 0.0 <= high  # private: as indistinguishable as retraining
    run, ids = overfit["run"], overfit["ids"]
    tiny = forget(run, ids, method=partial_method, ledger=False, **TINY).theta
    report = exactness_test(run, ids, {"tiny": tiny, "retrained": overfit["theta_R"]},
                            [ShadowMethod("tiny", partial_method, TINY)], n_shadows=6, max_targets=60, seed=1)
    exact = report["attacks"]["tiny"]["targets"]
    assert exact["tiny"]["online"]["auc_ci"][0] > 0.6     # not bit-exact: the fixed-rows test sees it at once
    assert exact["retrained"]["online"]["auc_ci"][0] <= 0.5 <= exact["retrained"]["online"]["auc_ci"][1]


def test_leave_pair_out_needs_two_in_and_two_out_samples_per_fit():
    member = np.zeros((4, 3), dtype=bool)
    member[0::2] = True
    with pytest.raises(InputError, match="two shadows with it and two without"):
        attack_scores(np.zeros((4, 3)), member)

