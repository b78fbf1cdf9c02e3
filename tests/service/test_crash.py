"""Kill `miniunlearn train` and `miniunlearn forget` with SIGKILL at random moments, then check that
every run directory, output directory and ledger is consistent and loads.

Processes are started from a *zygote*: a Python process that imports miniunlearn, torch and
scikit-learn once and then forks one child per job, so a job costs its real work (load data, train
or unlearn, write files) rather than two seconds of imports; a few jobs are also started as fresh
interpreters, so kills during start-up are covered too. Each child runs the real CLI (`main(argv)`)
and is killed with SIGKILL either after a random delay (from the zygote) or at a random *step* --
every fsync, rename and ledger commit counts as one, and every file write is split in two halves
with a step between (all wrapped by the zygote), so kills land inside the write phase and in the
middle of files, which a delay alone rarely hits. Steps also pause briefly, widening the write
phase for delayed kills. Two children run at a time.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from miniunlearn.core.storage import file_sha256, read_json
from miniunlearn.history import MiniHistory
from miniunlearn.methods import method_names
from miniunlearn.runs import HISTORY_FILE, MODEL_FILE, RESULT_JSON, RUN_JSON, load_model, open_run
from miniunlearn.service import forget
from miniunlearn.service.ledger import LEDGER_FILE, Ledger

ZYGOTE = r'''
import json, os, signal, sys, time, traceback

KILL_AT = [0]
STEPS = [0]
PAUSE = [0.0]


def step():
    STEPS[0] += 1
    if STEPS[0] == KILL_AT[0]:
        os.kill(os.getpid(), signal.SIGKILL)
    if PAUSE[0]:
        time.sleep(PAUSE[0])


real_fsync, real_replace = os.fsync, os.replace


def fsync(fd):
    step()
    real_fsync(fd)


def replace(src, dst, **kw):
    step()
    real_replace(src, dst, **kw)
    step()


class SplitWrites:
    """A file whose every write happens in two halves with a step between: kills land mid-file."""

    def __init__(self, handle):
        self._handle = handle

    def write(self, data):
        view = data if isinstance(data, str) else memoryview(data).cast("B")
        half = len(view) // 2
        if half:
            self._handle.write(view[:half])
            step()
        self._handle.write(view[half:])
        return len(view)

    def __enter__(self):
        self._handle.__enter__()
        return self

    def __exit__(self, *exc):
        return self._handle.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._handle, name)


import builtins, io  # noqa: E401

real_open = builtins.open


def split_open(file, mode="r", *args, **kwargs):
    handle = real_open(file, mode, *args, **kwargs)
    return SplitWrites(handle) if any(c in mode for c in "wax+") else handle


os.fsync, os.replace = fsync, replace
builtins.open = io.open = split_open
import torch, sklearn.datasets  # noqa: E401,F401  (imported once, before forking)
from miniunlearn.service import ledger as _ledger
import miniunlearn.data, miniunlearn.runs, miniunlearn.service  # noqa: E401,F401
from miniunlearn.cli import main

real_commit = _ledger.Ledger._commit


def commit(self):
    step()
    real_commit(self)
    step()


_ledger.Ledger._commit = commit


def child(job):
    fd = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    KILL_AT[0], PAUSE[0] = int(job.get("kill_at") or 0), float(job.get("pause", 0))
    torch.set_num_threads(1)
    try:
        main(job["args"])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    if job.get("count_file"):
        with open(job["count_file"], "w") as handle:
            handle.write(str(STEPS[0]))
    sys.stderr.flush()
    os._exit(code)


def run_all(jobs, parallel):
    results, running, queue = {}, {}, list(enumerate(jobs))
    while queue or running:
        while queue and len(running) < parallel:
            index, job = queue.pop(0)
            start = time.perf_counter()
            pid = os.fork()
            if pid == 0:
                child(job)
            delay = job.get("delay")
            running[pid] = (index, start, None if delay is None else start + delay)
        now = time.perf_counter()
        for pid, (index, start, deadline) in list(running.items()):
            if deadline is not None and now >= deadline:
                os.kill(pid, signal.SIGKILL)
                running[pid] = (index, start, None)
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            time.sleep(0.002)
            continue
        index, start, _ = running.pop(pid)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        results[index] = {"code": code, "seconds": time.perf_counter() - start}
    return [results[i] for i in range(len(jobs))]


jobs = json.load(open(sys.argv[1]))
json.dump(run_all(jobs, int(sys.argv[3])), open(sys.argv[2], "w"))
'''

N_TRAIN_JOBS = 24
N_FORGET_JOBS = 32
N_FRESH_LEDGER_JOBS = 4  # forget jobs on copies of the run that have no ledger yet (kills during creation)
N_COLD_JOBS = 6  # fresh interpreters killed after a random delay, start-up included
PAUSE_S = 0.01


def _env(tmp_path):
    env = dict(os.environ)
    env.update(MINIUNLEARN_NO_PROGRESS="1", MINIUNLEARN_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    return env


def _run_zygote(tmp_path, jobs, name, parallel=2):
    """Run ``jobs`` (dicts: args, kill_at, delay, count_file) through the zygote; return their outcomes."""
    for k, job in enumerate(jobs):
        job["args"] = [str(a) for a in job["args"]]
        job["stderr"] = str(tmp_path / "logs" / f"{name}-{k}.err")
        job.setdefault("pause", PAUSE_S)
    (tmp_path / "logs").mkdir(exist_ok=True)
    (tmp_path / f"{name}.jobs.json").write_text(json.dumps(jobs))
    subprocess.run([sys.executable, "-c", ZYGOTE, tmp_path / f"{name}.jobs.json", tmp_path / f"{name}.out.json",
                    str(parallel)], env=_env(tmp_path), check=True, timeout=600)
    outcomes = json.loads((tmp_path / f"{name}.out.json").read_text())
    for job, outcome in zip(jobs, outcomes):
        outcome["killed"] = outcome["code"] == -signal.SIGKILL
        log = Path(job["stderr"])  # (a child killed right after the fork never opened it)
        err = log.read_text() if log.exists() or not outcome["killed"] else ""
        if not outcome["killed"]:  # a survivor succeeded, or failed with one clear line (refused request)
            assert outcome["code"] in (0, 2) and "Traceback" not in err, (job, outcome, err)
    return outcomes


def _cold_launch(tmp_path, args, delay):
    """A fresh interpreter running the CLI, SIGKILLed after ``delay`` seconds; True if it was killed."""
    proc = subprocess.Popen([sys.executable, "-m", "miniunlearn", *map(str, args)], env=_env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        return True
    assert proc.returncode in (0, 2) and b"Traceback" not in err, err.decode()
    return proc.returncode == -signal.SIGKILL


def _ids_file(folder: Path, block: int) -> Path:
    path = folder / f"ids{block}.txt"
    if not path.exists():
        path.write_text("\n".join(str(3 * block + k) for k in range(3)) + "\n")
    return path


# ---------------------------------------------------------------------------------------------- checks
def _check_tensor_files(folder: Path) -> None:
    """Every file under its final name is whole: atomic writes never leave half a file."""
    if (folder / MODEL_FILE).exists():
        load_model(folder)
    if (folder / HISTORY_FILE).exists():
        MiniHistory.load(folder / HISTORY_FILE)
    for marker in (RUN_JSON, RESULT_JSON):
        if (folder / marker).exists():
            read_json(folder / marker)


def _check_train_dir(folder: Path) -> bool:
    """run.json absent (incomplete run, nothing claims it) or a complete run that loads."""
    _check_tensor_files(folder)
    if not (folder / RUN_JSON).exists():
        return False
    run = open_run(folder)
    run.theta()
    run.mini_history()
    return True


def _check_ledger(run, out_dirs) -> dict:
    with Ledger.open(run) as book:
        assert book.verify() == []  # every done request's model exists with its hash; counts add up
        reqs = book.requests()
        forgotten = book.forgotten_ids()
    done = {r.id: r for r in reqs if r.status == "done"}
    for r in done.values():
        assert r.model_sha256 and r.model_path.is_file()
    deletions = [r for r in done.values() if r.kind == "deletion"]
    if deletions:
        assert np.array_equal(max(deletions, key=lambda r: r.id).cumulative_ids(), forgotten)
    for out in out_dirs:
        _check_tensor_files(out)
        if (out / RESULT_JSON).exists():  # written only after the request was recorded as done
            result = read_json(out / RESULT_JSON)
            request = done[result["ledger_request"]]
            assert result["model_sha256"] == request.model_sha256 == file_sha256(out / MODEL_FILE)
    return {"requests": reqs, "forgotten": forgotten}


# ---------------------------------------------------------------------------------------------- the test
@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_runs_outputs_and_ledgers_consistent(tmp_path):
    rng = random.Random(8)
    base = tmp_path / "run"
    train_args = ["train", "--dataset", "breast_cancer", "--l2", "1e-2", "--json"]
    methods = ["retrain"] + (["mini"] if "mini" in method_names() else [])
    first_out = tmp_path / "out0"
    calibration = _run_zygote(tmp_path, [
        {"args": [*train_args, "--out", base], "count_file": str(tmp_path / "train.steps")}], "calibrate-train")
    # copies taken before the first request: their first request creates the ledger, as the calibration's does
    fresh_runs = [tmp_path / f"fresh{i}" for i in range(N_FRESH_LEDGER_JOBS)]
    for copy in fresh_runs:
        shutil.copytree(base, copy)
    calibration += _run_zygote(tmp_path, [
        {"args": ["forget", base, "--ids", _ids_file(tmp_path, 0), "--method", "retrain", "--out", first_out],
         "count_file": str(tmp_path / "forget.steps")}], "calibrate-forget")
    assert [c["code"] for c in calibration] == [0, 0]
    (t_train, t_forget) = (c["seconds"] for c in calibration)
    steps_train = int((tmp_path / "train.steps").read_text())
    steps_forget = int((tmp_path / "forget.steps").read_text())
    assert steps_train >= 8 and steps_forget >= 8
    run = open_run(base)
    original = {name: file_sha256(base / name) for name in (RUN_JSON, MODEL_FILE, HISTORY_FILE)}

    def kill_plan(i, duration, steps):
        """Even jobs die at a planned step; odd ones after a random delay (extra coverage, may finish)."""
        if i % 2 == 0:
            return {"kill_at": rng.randint(1, steps)}
        return {"delay": rng.uniform(0.05, 1.0) * duration}

    jobs, train_dirs, out_dirs = [], [], [first_out]
    for i in range(N_TRAIN_JOBS):
        folder = tmp_path / f"train{i}"
        train_dirs.append(folder)
        # the first job dies at its first step, before anything is written: one run is surely incomplete
        plan = {"kill_at": 1} if i == 0 else kill_plan(i, t_train, steps_train)
        jobs.append({"args": [*train_args, "--out", folder], "certain": True, **plan})
    block = 0
    for i in range(N_FORGET_JOBS):
        if i % 4 == 3:  # an identical repeat of the previous job (same rows, method and directory)
            args = jobs[-1]["args"]
        else:
            block += 1
            method = methods[i % len(methods)]
            out = tmp_path / f"out{block}"
            out_dirs.append(out)
            args = ["forget", base, "--ids", _ids_file(tmp_path, block), "--method", method, "--out", out]
        jobs.append({"args": args, **kill_plan(i, t_forget, steps_forget)})
    for i, copy in enumerate(fresh_runs):
        jobs.append({"args": ["forget", copy, "--ids", _ids_file(tmp_path, 0), "--method", "retrain",
                              "--out", tmp_path / f"fresh-out{i}"], "kill_at": rng.randint(1, steps_forget),
                     "certain": True})
    rng.shuffle(jobs)
    outcomes = _run_zygote(tmp_path, jobs, "jobs")
    killed = sum(o["killed"] for o in outcomes)
    # A step-planned kill is certain where the job's step count is fixed: training repeats the calibrated
    # run step for step, and a first request on a copy creates its ledger (at least the calibrated forget's
    # steps). Forget requests on the shared run may take fewer steps (no ledger to create, a repeat that
    # is already done), and delayed kills race the job: both are extra coverage, not counted.
    certain = [o for job, o in zip(jobs, outcomes) if job.get("certain") and "kill_at" in job]
    assert len(certain) >= N_FRESH_LEDGER_JOBS + 1
    assert all(o["killed"] for o in certain), [o for o in certain if not o["killed"]]

    cold_dirs = [tmp_path / f"cold{i}" for i in range(N_COLD_JOBS)]
    for folder in cold_dirs:  # start-up through training and writing, in a fresh interpreter
        killed += _cold_launch(tmp_path, [*train_args, "--out", folder], rng.uniform(0.2, 4.0))
    total = len(jobs) + N_COLD_JOBS

    # training: every directory is either incomplete (no run.json) or a complete, loadable run
    complete = sum(_check_train_dir(folder) for folder in [*train_dirs, *cold_dirs])
    assert not (train_dirs[0] / RUN_JSON).exists()  # killed at its first step

    # forgetting never touches the run's own files
    assert {name: file_sha256(base / name) for name in original} == original
    _check_ledger(run, out_dirs)
    for copy in fresh_runs:  # killed while creating the ledger: absent, or complete and valid
        if (copy / LEDGER_FILE).exists():
            _check_ledger(open_run(copy), [])

    # after all that, the ledger still works: a new request succeeds and stale entries are abandoned
    block += 1
    final = forget(run, [3 * block, 3 * block + 1, 3 * block + 2], "retrain", out=tmp_path / "final")
    state = _check_ledger(open_run(base), [*out_dirs, tmp_path / "final"])
    assert not [r for r in state["requests"] if r.status == "started"]
    # counts are right: the final model forgot every row of every completed deletion
    union = state["forgotten"]
    assert final.stats["n_forget"] == union.size
    assert torch.equal(final.theta, forget(run, union, "retrain", ledger=False).theta)
    statuses = sorted({r.status for r in state["requests"]})
    assert "done" in statuses
    print(f"\n{total} processes, {killed} killed; {complete}/{len(train_dirs) + len(cold_dirs)} training runs "
          f"complete; ledger statuses {statuses}; {union.size} rows forgotten")


# ---------------------------------------------------------------------------------------------- compaction
N_COMPACT_JOBS = 10


def _check_compacted_copy(copy: Path, original_model: str, reference_theta: torch.Tensor, forgotten: int) -> int:
    """A run killed while compacting holds its old base or the new one, whole; returns the generation."""
    from miniunlearn.runs import BASE_JSON

    run = open_run(copy)
    if run.generation == 0:
        assert file_sha256(copy / MODEL_FILE) == original_model
        run.mini_history()
    else:
        assert run.generation == 1
        record = read_json(run.base.dir / BASE_JSON)
        for name, digest in record["files"].items():  # every file of the new base is the one it recorded
            assert file_sha256(run.base.dir / name) == digest
        # both solved to ||grad F_R|| <= 1e-9 of an l2 = 1e-2 objective: within 1e-7 of its optimum each
        assert float((run.theta() - reference_theta).norm()) <= 2e-7
        run.mini_history()
    _ = run.dataset  # the rows match the base's fingerprint
    with Ledger.open(run) as book:
        assert book.forgotten_ids().size == (forgotten if run.generation == 0 else 0)
    return run.generation


@pytest.mark.slow
def test_sigkill_during_compaction_leaves_the_old_base_or_the_new_one(tmp_path):
    from miniunlearn import load_dataset, train

    rng = random.Random(16)
    base = tmp_path / "original" / "run"  # with its request's output beside it: original/u0
    train(load_dataset("breast_cancer"), 1e-2, base)
    forgotten = list(range(0, 40, 2))
    forget(open_run(base), forgotten, "mini", out=base.parent / "u0", tol=1e-6)
    original_model = file_sha256(base / MODEL_FILE)
    copies = []
    for i in range(N_COMPACT_JOBS + 1):
        shutil.copytree(base.parent, tmp_path / f"copy{i}", ignore=shutil.ignore_patterns("ledger.lock"))
        copies.append(tmp_path / f"copy{i}" / "run")
    calibration = _run_zygote(tmp_path, [{"args": ["compact", copies[0], "--json"],
                                          "count_file": str(tmp_path / "compact.steps")}], "calibrate", parallel=1)
    assert calibration[0]["code"] == 0
    steps = int((tmp_path / "compact.steps").read_text())
    assert steps >= 8
    reference = open_run(copies[0])
    # half the kills anywhere, half in the last third (the new base is written, the switch and the purge follow)
    jobs = [{"args": ["compact", copy, "--json"], "pause": 0.0,
             "kill_at": rng.randint(1 if i % 2 else (2 * steps) // 3, steps)} for i, copy in enumerate(copies[1:])]
    outcomes = _run_zygote(tmp_path, jobs, "compact")
    # every copy is the calibrated one, so it takes the same steps and each planned kill lands
    assert all(o["killed"] for o in outcomes), outcomes

    generations = [_check_compacted_copy(copy, original_model, reference.theta(), len(forgotten))
                   for copy in copies[1:]]
    assert set(generations) == {0, 1}  # kills landed before and after the switch

    # the next request settles what a killed compaction left: leftovers removed, ledger entries closed
    for copy, generation in zip(copies[1:], generations):
        run = open_run(copy)
        key = str(41 + generation)  # a row still present in either base (keys are the original row numbers)
        forget(run, keys=[key], method="mini", out=copy.parent / "next", tol=1e-6)
        with Ledger.open(open_run(copy)) as book:
            statuses = {c.status for c in book.compactions()}
            assert "started" not in statuses
            assert ("done" in statuses) == (generation == 1)
            assert book.verify() == []
        leftovers = [p.name for p in (copy / "bases").iterdir()] if (copy / "bases").exists() else []
        assert leftovers == (["1"] if generation == 1 else [])
        assert (copy / MODEL_FILE).exists() == (generation == 0)
        assert (copy.parent / "u0" / MODEL_FILE).exists() == (generation == 0)  # computed from the old base
    print(f"\n{len(jobs)} compactions, {sum(o['killed'] for o in outcomes)} killed; generations {generations}")
