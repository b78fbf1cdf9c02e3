"""A keyed run (breast cancer rows, two rows per user) and a real server subprocess on a free loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

L2 = 1e-3
SCOPES = {"admin": "admin", "deleter": "delete", "reader": "read", "predictor": "predict"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``miniunlearn serve`` in a subprocess: started, waited for (GET /healthz), stopped or killed."""

    def __init__(self, run_dir: Path, tokens: Path | None, *extra: str, log: Path):
        self.run_dir, self.tokens, self.extra, self.log = Path(run_dir), tokens, extra, log
        self.process = None
        self.port = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> "ServerProcess":
        self.port = free_port()
        command = [sys.executable, "-m", "miniunlearn", "serve", str(self.run_dir), "--port", str(self.port),
                   "--threads", "1", "--log-level", "warning", *self.extra]
        if self.tokens is not None:
            command += ["--tokens", str(self.tokens)]
        env = {**os.environ, "MINIUNLEARN_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not become ready: {self.log.read_text()[-2000:]}")

    def stop(self) -> int:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def keyed_csv(path: Path) -> pd.DataFrame:
    """The breast cancer table with a ``user`` column: users own two consecutive rows."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "label"})
    frame.insert(0, "user", [f"u{i // 2}" for i in range(len(frame))])
    frame.to_csv(path, index=False)
    return frame


@pytest.fixture(scope="session")
def keyed_run(tmp_path_factory):
    """A trained keyed run (kept pristine: tests serve copies), its CSV and the data set."""
    from miniunlearn.data import load_dataset
    from miniunlearn.runs import train

    root = tmp_path_factory.mktemp("served")
    frame = keyed_csv(root / "cancer.csv")
    dataset = load_dataset(f"csv:path={root / 'cancer.csv'},target=label,id=user,test_size=0.2,seed=1")
    train(dataset, L2, root / "run")
    return {"root": root, "run": root / "run", "frame": frame, "dataset": dataset}


def make_tokens(path: Path) -> dict[str, str]:
    from miniunlearn.server.auth import TokenStore, parse_scopes

    store = TokenStore.load(path, missing_ok=True)
    tokens = {name: store.add(name, parse_scopes(scopes)) for name, scopes in SCOPES.items()}
    store.save(path)
    return tokens


def copy_run(keyed_run, where: Path) -> Path:
    target = where / "run"
    shutil.copytree(keyed_run["run"], target)
    return target


@pytest.fixture
def server_factory(tmp_path):
    """Start servers on copies of the keyed run; every one still running is killed at the end."""
    started = []

    def start(run_dir: Path, tokens: Path | None, *extra: str) -> ServerProcess:
        server = ServerProcess(run_dir, tokens, *extra, log=tmp_path / f"server-{len(started)}.log").start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def wait_done(client: httpx.Client, ids, token: str, timeout: float = 120) -> dict[str, dict]:
    """Poll until every request is done or failed; returns the final statuses."""
    pending, final = set(ids), {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for request_id in list(pending):
            status = client.get(f"/v1/deletions/{request_id}", headers=auth(token)).json()
            if status["status"] in ("done", "failed"):
                final[request_id] = status
                pending.discard(request_id)
        if pending:
            time.sleep(0.05)
    assert not pending, f"requests not finished in {timeout} s: {sorted(pending)[:5]}"
    return final


def model_arrays(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))
