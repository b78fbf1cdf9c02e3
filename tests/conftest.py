import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

os.environ.setdefault("MINIUNLEARN_NO_PROGRESS", "1")

# Hypothesis profiles, chosen explicitly with --hypothesis-profile (the Makefile does): "ci" draws a
# fixed sequence of examples for each test (derandomized), so a run is reproducible and a failure in
# CI fails the same way on every machine; "dev" (the default) draws new examples on every run.
_HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
settings.register_profile("dev", deadline=None, suppress_health_check=_HEALTH)
settings.register_profile("ci", deadline=None, suppress_health_check=_HEALTH, derandomize=True, database=None,
                          print_blob=True)
settings.load_profile("dev")

from miniunlearn.data import load_dataset  # noqa: E402  (after the environment is set)
from miniunlearn.runs import train  # noqa: E402
from miniunlearn.service import forget  # noqa: E402
from miniunlearn.service.requests import write_ids_file  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Memory-mapped datasets are cached under a per-test folder."""
    monkeypatch.setenv("MINIUNLEARN_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)

# --------------------------------------------------------------------------------------------------
# A deliberately overfit run shared by the evaluation, experiment and command tests: 250 training
# rows with 200 features and 3 classes, 30 % random labels and a small L2 penalty. The model nearly
# interpolates its training set, so membership is visible in its outputs.
OVERFIT_SPEC = "synthetic:n_samples=500,n_features=200,n_classes=3,test_size=0.5,seed=3,label_noise=0.3"
OVERFIT_L2 = 1e-3


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Test problems are small: one torch thread is fastest, and far faster on a shared, busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def overfit(tmp_path_factory):
    """``dict(run, dataset, ids, ids_file, retrained_dir, theta_T, theta_R)``: 40 % of the rows forgotten."""
    root = tmp_path_factory.mktemp("overfit")
    dataset = load_dataset(OVERFIT_SPEC)
    run = train(dataset, OVERFIT_L2, root / "run")
    ids = np.sort(np.random.default_rng(7).choice(dataset.n_train, int(0.4 * dataset.n_train), replace=False))
    ids_file = root / "forget.txt"
    write_ids_file(ids_file, ids)
    retrained = forget(run, ids, method="retrain", out=root / "retrained")
    return {"root": root, "run": run, "dataset": dataset, "ids": ids, "ids_file": ids_file,
            "retrained_dir": root / "retrained", "theta_T": run.theta(), "theta_R": retrained.theta}


@pytest.fixture(scope="session")
def partial_method():
    """A test-only unlearning method that leaves a share of the deletion undone:
    ``w_T + alpha (w_R - w_T)`` -- alpha 1/2 is half-done unlearning, alpha 1 - 1e-4 a tiny residual."""
    from numbers import Real

    from miniunlearn.core.params import Interval, Param
    from miniunlearn.methods import UnlearningMethod, register, unregister
    from miniunlearn.training import TrainConfig, fit

    @register
    class Partial(UnlearningMethod):
        name = "test-partial"
        summary = "test only"
        parameters = {"alpha": Param(0.5, Interval(Real, 0, 1))}

        def unlearn(self, ctx):
            theta_R, _, _ = fit(ctx.model, ctx.retained_rows, TrainConfig.from_dict(ctx.run.config))
            theta_T = ctx.original_theta()
            return theta_T + self.alpha * (theta_R - theta_T)

    yield "test-partial"
    unregister("test-partial")
