import os

import numpy as np
import pytest
import torch

os.environ.setdefault("MINIUNLEARN_NO_PROGRESS", "1")

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
