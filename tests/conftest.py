import os

import numpy as np
import pytest

os.environ.setdefault("MINIUNLEARN_NO_PROGRESS", "1")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Memory-mapped datasets are cached under a per-test folder."""
    monkeypatch.setenv("MINIUNLEARN_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
