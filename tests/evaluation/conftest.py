"""A deliberately overfit run shared by the evaluation tests.

250 training rows with 200 features and 3 classes, 30 % random labels and a small L2 penalty:
the model nearly interpolates its training set, so membership is visible in its outputs.
"""

import numpy as np
import pytest
import torch

from miniunlearn.data import load_dataset
from miniunlearn.ids import write_ids_file
from miniunlearn.methods import forget
from miniunlearn.training import train

OVERFIT_SPEC = "synthetic:n_samples=500,n_features=200,n_classes=3,test_size=0.5,seed=3,label_noise=0.3"
OVERFIT_L2 = 1e-3


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These problems are tiny: one torch thread is fastest, and far faster on a shared, busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def overfit(tmp_path_factory):
    """``dict(run, dataset, ids, ids_file, retrained_dir, theta_T, theta_R)``: 40 % of the rows forgotten."""
    root = tmp_path_factory.mktemp("overfit")
    dataset = load_dataset(OVERFIT_SPEC)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = train(dataset, OVERFIT_L2, root / "run")
        ids = np.sort(np.random.default_rng(7).choice(dataset.n_train, int(0.4 * dataset.n_train), replace=False))
        ids_file = root / "forget.txt"
        write_ids_file(ids_file, ids)
        retrained = forget(run, ids, method="retrain", out=root / "retrained")
    finally:
        torch.set_num_threads(previous)
    return {"root": root, "run": run, "dataset": dataset, "ids": ids, "ids_file": ids_file,
            "retrained_dir": root / "retrained", "theta_T": run.theta(), "theta_R": retrained.theta}
