"""Unlearning split across two processes (torch.distributed, gloo) equals the one-process result.

Two local processes are started with torch.multiprocessing (the environment torchrun would set:
RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT on a free port) and one more time through the real
``torchrun ... -m miniunlearn forget`` command line. Each process records every file it opens
for writing (a Python audit hook), so "only rank 0 writes" is checked, not assumed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from miniunlearn import distributed
from miniunlearn.data import load_dataset
from miniunlearn.runs import train
from miniunlearn.runs import load_model
from miniunlearn.service import forget
from miniunlearn.service.requests import random_forget_ids, write_ids_file

SPEC = "higgs-synthetic:n_rows=20000,seed=3"  # a float32 memory map, like HIGGS at full size
L2 = 1e-3
CHUNK_ROWS = 2048  # several chunks per process, so the split is real
TOL = 1e-10  # the bound on || theta_2 - theta_1 || / || theta_1 ||
# (ratio, method, refine): 30 % spans several forgotten-row chunks; 1 % (162 rows) is a single
# chunk, so rank 0 has an empty share and must still join every sum
CASES = [(0.3, "mini", 2), (0.01, "mini", 1), (0.1, "retrain", 0)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _watch_writes(root: str, log: list) -> None:
    """Record every open-for-writing, rename, removal, mkdir or SQLite connection under ``root``."""
    root = os.path.abspath(root) + os.sep
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (any(c in mode for c in "wax+") if isinstance(mode, str)
                       else isinstance(flags, int) and bool(flags & write_flags))
        elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree", "sqlite3.connect"):
            path, writing = args[0], True
        else:
            return
        if writing and isinstance(path, (str, bytes, os.PathLike)):
            full = os.path.abspath(os.fsdecode(path))
            if full.startswith(root):
                log.append([event, full])

    sys.addaudithook(hook)


def _worker(rank: int, world: int, port: int, work: str, results: str, ids_files: list) -> None:
    """One process of the job: join the group, run every case (each on its own copy of the run,
    whose ledger then holds that request alone), record results and writes."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), MINIUNLEARN_DIST_BACKEND="gloo")
    torch.set_num_threads(1)
    writes: list = []
    _watch_writes(work, writes)
    assert distributed.init_from_env() and distributed.world_size() == world and distributed.rank() == rank
    record = {"cases": []}
    try:
        for (ratio, method, refine), ids_file in zip(CASES, ids_files):
            ids = np.loadtxt(ids_file, dtype=np.int64)
            options = {"refine": refine} if method == "mini" else {}
            out = Path(work) / f"out-{method}-{ratio}"
            result = forget(Path(work) / f"run-{method}-{ratio}", ids, method, out=out, **options)
            np.save(Path(results) / f"theta-{rank}-{method}-{ratio}.npy", result.theta.numpy())
            record["cases"].append({"processes": result.stats["processes"]})
        # an identical repeat is served from rank 0's ledger: the others compute nothing
        ratio, method, refine = CASES[0]
        again = forget(Path(work) / f"run-{method}-{ratio}", np.loadtxt(ids_files[0], dtype=np.int64), method,
                       out=Path(work) / f"out-{method}-{ratio}", refine=refine)
        record["repeat"] = None if again is None else again.stats["ledger"]["kind"]
        # a request rank 0 refuses (the output is the run directory) stops every rank with an error
        try:
            run_dir = Path(work) / f"run-{method}-{ratio}"
            forget(run_dir, np.loadtxt(ids_files[1], dtype=np.int64), "mini", out=run_dir)
            record["refused"] = None
        except Exception as exc:  # noqa: BLE001 - the type is what we record
            record["refused"] = type(exc).__name__
    finally:
        distributed.shutdown()
    record["writes"] = writes
    (Path(results) / f"rank-{rank}.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("dist")
    os.environ["MINIUNLEARN_CACHE"] = str(base / "cache")  # module scope: the autouse fixture is per test
    dataset = load_dataset(SPEC)
    run = train(dataset, L2, base / "run", chunk_rows=CHUNK_ROWS)
    ids_files = []
    for k, (ratio, _, _) in enumerate(CASES):
        path = base / f"ids-{k}.txt"
        write_ids_file(path, random_forget_ids(dataset.n_train, ratio, seed=k))
        ids_files.append(str(path))
    return base, run, dataset, ids_files


def _one_process(run, ids_file, method, refine):
    ids = np.loadtxt(ids_file, dtype=np.int64)
    options = {"refine": refine} if method == "mini" else {}
    return forget(run, ids, method, ledger=False, **options).theta.numpy()


def test_two_processes_equal_one_and_only_rank_0_writes(setup, monkeypatch):
    base, run, dataset, ids_files = setup
    monkeypatch.setenv("MINIUNLEARN_CACHE", os.environ["MINIUNLEARN_CACHE"])
    work, results = base / "work", base / "results"
    for ratio, method, _ in CASES:
        shutil.copytree(run.path, work / f"run-{method}-{ratio}")
    results.mkdir()
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(work), str(results), ids_files), nprocs=2,
                                join=True)
    for (ratio, method, refine), ids_file in zip(CASES, ids_files):
        reference = _one_process(run, ids_file, method, refine)
        assert np.linalg.norm(reference - run.theta().numpy()) > 1e-3  # the deletion moved the model
        for rank in (0, 1):
            theta = np.load(results / f"theta-{rank}-{method}-{ratio}.npy")
            assert np.linalg.norm(theta - reference) <= TOL * np.linalg.norm(reference), (method, ratio, rank)
        _, saved, _ = load_model(work / f"out-{method}-{ratio}")
        assert np.linalg.norm(saved.numpy() - reference) <= TOL * np.linalg.norm(reference)
    rank0, rank1 = (json.loads((results / f"rank-{r}.json").read_text()) for r in (0, 1))
    assert all(case["processes"] == 2 for case in rank0["cases"] + rank1["cases"])
    assert rank0["repeat"] == "repeat" and rank1["repeat"] is None
    assert rank0["refused"] == "InputError" and rank1["refused"] == "DistributedError"
    written = " ".join(Path(path).name for _, path in rank0["writes"])  # (atomic writes: temporary names)
    assert "model.safetensors" in written and "ledger.sqlite" in written and "result.json" in written
    assert rank1["writes"] == []


def test_torchrun_command_line(setup, tmp_path):
    """The real launcher: ``torchrun --standalone --nproc_per_node 2 -m miniunlearn forget``."""
    base, run, dataset, ids_files = setup
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    shutil.copytree(run.path, tmp_path / "run")
    env = {**os.environ, "MINIUNLEARN_DIST_BACKEND": "gloo", "OMP_NUM_THREADS": "1",
           "MINIUNLEARN_CACHE": os.environ["MINIUNLEARN_CACHE"]}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "miniunlearn", "forget",
           str(tmp_path / "run"), "--ids", ids_files[0], "--method", "mini", "--refine", "2",
           "--out", str(tmp_path / "out"), "--json"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)  # exactly one JSON document: only rank 0 reports
    assert report["processes"] == 2 and report["passes_retained"] == 2.0
    reference = _one_process(run, ids_files[0], "mini", 2)
    _, saved, _ = load_model(tmp_path / "out")
    assert np.linalg.norm(saved.numpy() - reference) <= TOL * np.linalg.norm(reference)


def test_shard_blocks_cover_the_chunks_once(monkeypatch):
    for world in (1, 2, 3, 5):
        for m in (0, 1, 2, 7, 64):
            seen = []
            for k in range(world):
                monkeypatch.setattr(distributed, "world_size", lambda w=world: w)
                monkeypatch.setattr(distributed, "rank", lambda r=k: r)
                block = list(distributed.shard(list(range(m))))
                assert block == list(range(block[0], block[0] + len(block))) if block else True  # contiguous
                seen += block
            assert seen == list(range(m))


def test_one_process_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env() is False
    assert not distributed.active() and distributed.world_size() == 1 and distributed.is_writer()
    value = (torch.tensor([1.5, 2.0]), 3)
    assert distributed.all_reduce_sum(value) is value
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]


def test_clear_errors_outside_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(distributed.DistributedError, match="torchrun"):
        distributed.init_from_env()
    with pytest.raises(distributed.DistributedError, match="one process"):
        distributed.require_one_process("train")
