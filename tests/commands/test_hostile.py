"""Hostile input: arbitrary ids files and command lines, damaged files, changed or non-finite data,
a full disk. Every case must end in success or one clear error line (exit 2) -- never a traceback --
and must never damage what was saved before.
"""

import contextlib
import errno
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from itertools import count
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from miniunlearn.cli import main
from miniunlearn.core.errors import InputError, RunError
from miniunlearn.core.storage import WriteError, atomic_write_json, file_sha256
from miniunlearn.runs import HISTORY_FILE, MODEL_FILE, RUN_JSON, load_model, open_run
from miniunlearn.service import forget
from miniunlearn.service.ledger import LEDGER_FILE, Ledger
from miniunlearn.service.requests import parse_ids, read_ids_file
from tests.helpers import write_idx

# Random or fixed examples: the Hypothesis profile decides (tests/conftest.py; `make test` uses "ci").
HYPOTHESIS = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
_unique = count()


def test_the_hypothesis_profile_is_the_one_chosen(request):
    """`make test` chooses "ci" (derandomized), `make test-fast` "dev": the settings here follow the choice."""
    chosen = request.config.getoption("hypothesis_profile") or "dev"
    assert settings.default.derandomize is HYPOTHESIS.derandomize is (chosen == "ci")


def cli(*args) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def assert_clean_outcome(code, err, allow_usage=True):
    """Success, or exit 2 with exactly one error line and no traceback."""
    assert "Traceback" not in err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        if allow_usage and lines and lines[0].startswith("Usage: "):
            # click's usage errors: the usage line, a hint and one "Error: ..." line (or the help, for no command)
            assert sum(line.startswith("Error: ") for line in lines) <= 1, err
            return
        assert len(lines) == 1 and lines[0].startswith("error: "), err


def snapshot(*folders) -> dict:
    """SHA-256 of every file under ``folders``: proves that nothing saved was lost or changed."""
    return {str(p): file_sha256(p) for folder in folders for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A converged breast_cancer run and the model that forgetting rows 0..2 with mini gives."""
    from miniunlearn import load_dataset, train

    root = tmp_path_factory.mktemp("hostile")
    path = root / "bc"
    train(load_dataset("breast_cancer"), 1e-2, path)
    reference = forget(open_run(path), [0, 1, 2], "mini", ledger=False).theta
    return path, reference


NO_LEDGER = shutil.ignore_patterns("ledger.*")


@pytest.fixture
def run(trained, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(trained[0], path, ignore=NO_LEDGER)
    return open_run(path)


@pytest.fixture(scope="module")
def fuzz_run(trained, tmp_path_factory):
    """A copy of the run that the command-line fuzzing may record requests in."""
    path = tmp_path_factory.mktemp("fuzz") / "run"
    shutil.copytree(trained[0], path, ignore=NO_LEDGER)
    return path


# ---------------------------------------------------------------------------------------------- ids files
ID_LINE = st.one_of(
    st.integers(-10, 500).map(str),
    st.integers(-(2**70), 2**70).map(str),
    st.integers(0, 400).map(lambda i: f"  +{i}\t"),
    st.integers(0, 400).map(lambda i: f"{i} # comment"),
    st.sampled_from(["", "#", "# only a comment", "1.5", "1e3", "0x10", "1_000", "--1", "+-1", "١٢", "１２",
                     "\u00a07\u00a0", "nan", "inf", "9" * 30, "-" + "9" * 30, "9" * 5000, "\x00", "12\x0034",
                     "\ufeff12", "１", "²", "0" * 40 + "7"]),
    st.text(max_size=12),
)


@settings(HYPOTHESIS, max_examples=300)
@given(st.lists(ID_LINE, max_size=12), st.sampled_from(["\n", "\r\n", "\r", "\x0b", "\u2028"]))
@example(["7", "\ufeff8"], "\n")
def test_ids_text_parses_to_exact_ints_or_names_the_bad_line(lines, newline):
    text = newline.join(lines)
    try:
        ids = parse_ids(text, "ids.txt")
    except InputError as exc:
        assert re.match(r"ids\.txt, line \d+: ", str(exc)), exc
        return
    expected = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            assert re.fullmatch(r"[+-]?[0-9]{1,18}", line), line  # only plain ASCII integers are accepted
            expected.append(int(line))
    assert ids.dtype == np.int64 and ids.tolist() == expected


@settings(HYPOTHESIS, max_examples=200)
@given(st.binary(max_size=400))
@example(b"\xef\xbb\xbf3\n4\n")  # UTF-8 byte-order mark
@example(b"\xff\xfe3\x00")       # UTF-16
def test_ids_files_of_arbitrary_bytes_never_crash(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ids.txt"
        path.write_bytes(data)
        try:
            ids = read_ids_file(path)
        except InputError as exc:
            assert str(path) in str(exc)
        else:
            assert ids.dtype == np.int64


@settings(HYPOTHESIS, max_examples=40)
@given(st.lists(ID_LINE, max_size=6))
def test_forget_cli_with_hostile_ids_files_succeeds_or_fails_in_one_line(fuzz_run, tmp_path, lines):
    ids = tmp_path / f"ids{next(_unique)}.txt"
    ids.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
    out = tmp_path / f"out{next(_unique)}"
    code, _, err = cli("forget", fuzz_run, "--ids", ids, "--method", "retrain", "--out", out)
    assert_clean_outcome(code, err, allow_usage=False)
    if code == 2:
        assert not (out / MODEL_FILE).exists()


# ---------------------------------------------------------------------------------------------- command lines
# (an argv string cannot hold a NUL byte; undecodable bytes arrive as lone surrogates, like "\udcff")
JUNK = st.one_of(st.text(st.characters(blacklist_characters="\x00"), max_size=8),
                 st.sampled_from(["", "-", "--", "nan", "inf", "-inf", "1e400", "-1", "0", "\udcff", "é", "--json"]))
FLOATISH = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), JUNK,
                     st.sampled_from(["1e-3", "1", "1e-320", "1e308"]))
INTISH = st.one_of(st.integers(-3, 4).map(str), st.sampled_from(["10" * 12, "-" + "10" * 12, "1.5"]), JUNK)
DATASET = st.one_of(
    st.builds(lambda n, f, c, seed, extra: f"synthetic:n_samples={n},n_features={f},n_classes={c},seed={seed}{extra}",
              st.sampled_from(["30", "9", "-5", "1e400", "x", "40.5"]), st.sampled_from(["3", "0", "-1", "2.5"]),
              st.sampled_from(["2", "3", "1", "-2", "nan"]), st.sampled_from(["0", "-1", "1e30", "7"]),
              st.sampled_from(["", ",separation=nan", ",test_size=1", ",label_noise=inf", ",bogus=1", ",,=,"])),
    st.sampled_from(["digits:x=1", "fashion-mnist:path=/nowhere", "mnist", "covtype:path=/nowhere", "higgs",
                     "::", "synthetic:=", ""]),
    JUNK,
)
TRAIN_OPTIONS = {"--l2": FLOATISH, "--mode": st.sampled_from(["converged", "trajectory", "x"]), "--tol": FLOATISH,
                 "--max-iter": INTISH, "--profile": st.sampled_from(["auto", "exact", "minimal", "best"]),
                 "--memory-budget": st.one_of(JUNK, st.sampled_from(["4GiB", "0", "1KiB", "infGiB", "-5MB"])),
                 "--epochs": st.sampled_from(["-1", "0", "1", "2", "x"]),
                 "--batch-size": st.sampled_from(["-1", "0", "1", "7", "10" * 10]), "--lr": FLOATISH,
                 "--lr-step": st.one_of(JUNK, st.sampled_from(["1:0.05", "0:nan", "-1:0.1", "1:-2", "x:1"])),
                 "--seed": INTISH}
FORGET_OPTIONS = {"--method": st.one_of(st.sampled_from(["mini", "retrain", "newton", "finetune", "neggrad",
                                                          "deltagrad"]), JUNK),
                  "--refine": INTISH, "--workers": INTISH,
                  "--set": st.one_of(JUNK, st.builds("{}={}".format, st.sampled_from(
                      ["refine", "tol", "max_iter", "steps", "epochs", "lr", "workers", "out", "x", ""]), FLOATISH))}


@st.composite
def command_lines(draw, run_dir, scratch):
    command = draw(st.sampled_from(["train", "forget", "retrain", "ledger", "methods", "data", "junk"]))
    args = [command]
    if command == "train":
        args += ["--dataset", draw(DATASET), "--out", scratch / f"t{next(_unique)}"]
        for option in draw(st.lists(st.sampled_from(sorted(TRAIN_OPTIONS)), max_size=5, unique=True)):
            args += [option, draw(TRAIN_OPTIONS[option])]
        if "--mode" in args and args[args.index("--mode") + 1] == "trajectory" and "--epochs" not in args:
            args += ["--epochs", "1"]
    elif command in ("forget", "retrain"):
        ids = scratch / f"ids{next(_unique)}.txt"
        ids.write_text(draw(st.sampled_from(["5\n6\n", "7\n", "1\n1\n", "x\n", "", "-3\n", "100000\n"])))
        args += [draw(st.sampled_from([run_dir, scratch / "nowhere", ids])), "--ids",
                 draw(st.sampled_from([ids, scratch / "missing.txt", run_dir])), "--out",
                 draw(st.sampled_from([scratch / f"o{next(_unique)}", run_dir, ids]))]
        if command == "forget":
            for option in draw(st.lists(st.sampled_from(sorted(FORGET_OPTIONS)), max_size=3, unique=True)):
                args += [option, draw(FORGET_OPTIONS[option])]
    elif command == "ledger":
        args += [draw(st.sampled_from([run_dir, scratch / "nowhere", scratch]))]
        args += draw(st.lists(st.sampled_from(["--json", "--verify"]), max_size=2, unique=True))
    elif command == "data":
        args += draw(st.sampled_from([["list", "--json"], ["export", "nope", "--out", scratch / "x.npz"],
                                      ["export", "synthetic:n_samples=20", "--out", scratch / "d" / "x.npz"]]))
    else:
        args = draw(st.lists(JUNK, max_size=3))
    if draw(st.booleans()):
        args.insert(draw(st.integers(0, len(args))), draw(JUNK))  # a stray argument anywhere
    return [str(a) for a in args]


@settings(HYPOTHESIS, max_examples=120)
@given(data=st.data())
def test_arbitrary_command_lines_succeed_or_fail_with_one_clear_line(fuzz_run, tmp_path, data):
    before = snapshot(fuzz_run)
    args = data.draw(command_lines(fuzz_run, tmp_path))
    code, _, err = cli(*args)
    assert_clean_outcome(code, err)
    after = snapshot(fuzz_run)
    own = [k for k in before if not Path(k).name.startswith("ledger.")]  # (the ledger records requests)
    assert {k: after.get(k) for k in own} == {k: before[k] for k in own}  # the run's files are never touched


def test_a_fresh_process_gets_no_traceback_for_bad_arguments(tmp_path):
    """The real entry point in a new interpreter, not just main(): exit 2 and one line."""
    env = {**os.environ, "MINIUNLEARN_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, "-m", "miniunlearn", "forget", str(tmp_path), "--ids",
                           str(tmp_path / "x"), "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: run.json not found")


# ---------------------------------------------------------------------------------------------- damaged files
def _damage(path: Path, how: str, position: float, byte: int) -> None:
    data = bytearray(path.read_bytes())
    at = min(int(position * len(data)), len(data) - 1)
    if how == "truncate":
        data = data[:at]
    elif how == "flip":
        data[at] ^= byte
    elif how == "garbage":
        data = bytearray(os.urandom(max(1, at)))
    elif how == "empty":
        data = bytearray()
    path.write_bytes(bytes(data))


DAMAGE = st.tuples(st.sampled_from(["truncate", "flip", "flip", "garbage", "empty"]), st.floats(0, 1),
                   st.integers(1, 255))


@settings(HYPOTHESIS, max_examples=70)
@given(target=st.sampled_from([MODEL_FILE, HISTORY_FILE]), damage=DAMAGE)
def test_damaged_model_or_history_gives_a_clear_error_or_the_exact_result(trained, tmp_path, target, damage):
    run = tmp_path / f"run{next(_unique)}"
    shutil.copytree(trained[0], run, ignore=NO_LEDGER)
    _damage(run / target, *damage)
    ids = tmp_path / "ids.txt"
    ids.write_text("0\n1\n2\n")
    out = tmp_path / f"out{next(_unique)}"
    code, _, err = cli("forget", run, "--ids", ids, "--method", "mini", "--out", out)
    assert_clean_outcome(code, err, allow_usage=False)
    if code == 2:
        assert str(run / target) in err or target in err, err  # the message names the damaged file
        assert not (out / MODEL_FILE).exists()
    else:  # the damage missed everything that matters: the result is exactly the undamaged one
        assert torch.equal(load_model(out)[1], trained[1])


def test_a_flipped_bit_in_tensor_data_is_caught_by_the_checksum(run):
    path = run.path / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the last byte of the last tensor: valid float, wrong value
    path.write_bytes(bytes(data))
    with pytest.raises(RunError, match="does not match its recorded SHA-256"):
        load_model(path)


RUN_JSON_DAMAGE = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 0.999), st.just(1)),
    st.sampled_from(["[]", "null", "{}", '"run"', '{"format": "miniunlearn-run/1"}', "{" * 5000,
                     '{"format": "miniunlearn-run/1", "config": [], "dataset": {}, "model": {}}']))


@settings(HYPOTHESIS, max_examples=40)
@given(damage=RUN_JSON_DAMAGE)
def test_damaged_run_json_gives_a_clear_error(trained, tmp_path, damage):
    run = tmp_path / f"run{next(_unique)}"
    shutil.copytree(trained[0], run, ignore=NO_LEDGER)
    if isinstance(damage, tuple):
        _damage(run / RUN_JSON, *damage)
    else:
        (run / RUN_JSON).write_text(damage)
    ids = tmp_path / "ids.txt"
    ids.write_text("4\n")
    for args in (["forget", run, "--ids", ids, "--method", "retrain", "--out", tmp_path / f"o{next(_unique)}"],
                 ["ledger", run]):
        code, _, err = cli(*args)
        assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
        assert "run.json" in err


def test_inconsistent_run_json_values_are_cross_checked(run, tmp_path):
    meta = json.loads((run.path / RUN_JSON).read_text())
    meta["dataset"]["n_train"] = 300  # the data and the history say 426
    (run.path / RUN_JSON).write_text(json.dumps(meta))
    code, _, err = cli("forget", run.path, "--ids", _ids(tmp_path, [1]), "--method", "mini", "--out", tmp_path / "o")
    assert code == 2 and "training rows but run" in err


@pytest.fixture(scope="module")
def ledger_run(trained, tmp_path_factory):
    """A run whose ledger holds two deletions, a repeat and an alternative."""
    path = tmp_path_factory.mktemp("ledgered") / "run"
    shutil.copytree(trained[0], path, ignore=NO_LEDGER)
    run = open_run(path)
    forget(run, [1, 2], "retrain", out=path.parent / "a")
    forget(run, [3], "mini", out=path.parent / "b")
    forget(run, [1, 2], "retrain", out=path.parent / "a")
    forget(run, [1, 2], "mini", out=path.parent / "c")
    return path


@settings(HYPOTHESIS, max_examples=80)
@given(damage=DAMAGE)
def test_damaged_ledger_gives_a_clear_error_or_an_unchanged_record(ledger_run, tmp_path, damage):
    run = tmp_path / f"run{next(_unique)}"
    shutil.copytree(ledger_run, run)
    _damage(run / LEDGER_FILE, *damage)
    code, out, err = cli("ledger", run, "--json")
    assert_clean_outcome(code, err, allow_usage=False)
    if code == 2:
        assert "ledger" in err
    else:  # the damage hit unused space: every record reads back exactly
        with Ledger.open(open_run(ledger_run)) as book:
            expected = [r.summary() for r in book.requests()]
        # output directories are recorded relative to the run, so the copy's resolve beside the copy
        for record in expected:
            record["out_dir"] = str(run.parent / Path(record["out_dir"]).name)
        assert [{k: r[k] for k in expected[0]} for r in json.loads(out)["requests"]] == \
            json.loads(json.dumps(expected))
    before = snapshot(run)
    code, _, err = cli("forget", run, "--ids", _ids(tmp_path, [9]), "--method", "retrain", "--out",
                       tmp_path / f"o{next(_unique)}")
    assert_clean_outcome(code, err, allow_usage=False)
    if code == 2:
        assert snapshot(run) == before  # a damaged ledger is reported, never rewritten


def test_a_ledger_of_another_run_is_refused(run, ledger_run, tmp_path):
    from miniunlearn import load_dataset, train

    other = tmp_path / "other"
    train(load_dataset("synthetic:n_samples=60,n_features=3"), 1e-2, other)
    shutil.copy(ledger_run / LEDGER_FILE, other / LEDGER_FILE)
    code, _, err = cli("forget", other, "--ids", _ids(tmp_path, [1]), "--method", "retrain", "--out", tmp_path / "o")
    assert code == 2 and "belongs to a run trained on other data" in err


def _ids(folder: Path, ids) -> Path:
    path = folder / f"ids{next(_unique)}.txt"
    path.write_text("".join(f"{i}\n" for i in ids))
    return path


# ---------------------------------------------------------------------------------------------- changed data
def test_synthetic_data_with_another_seed_is_refused(tmp_path):
    from miniunlearn import load_dataset, train

    run = tmp_path / "run"
    train(load_dataset("synthetic:n_samples=200,n_features=5,seed=1"), 1e-2, run)
    meta = json.loads((run / RUN_JSON).read_text())
    meta["dataset"]["spec"] = "synthetic:n_samples=200,n_features=5,seed=2"  # same shape, other rows
    (run / RUN_JSON).write_text(json.dumps(meta))
    before = snapshot(run)
    code, _, err = cli("forget", run, "--ids", _ids(tmp_path, [3, 4]), "--method", "mini", "--out", tmp_path / "o")
    assert code == 2 and "no longer matches run" in err and "fingerprint" in err
    assert snapshot(run) == before and not (tmp_path / "o").exists()


@pytest.mark.parametrize("change", ["pixel", "label", "rows"])
def test_an_idx_folder_changed_after_training_is_refused(tmp_path, rng, change):
    from miniunlearn import load_dataset, train

    folder = tmp_path / "mnist"
    folder.mkdir()
    images = rng.integers(0, 256, size=(80, 5, 5))
    labels = rng.integers(0, 3, size=80)
    for prefix, sl in (("train", slice(0, 60)), ("t10k", slice(60, 80))):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images[sl])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels[sl])
    run = tmp_path / "run"
    train(load_dataset(f"mnist:path={folder}"), 1e-2, run)
    if change == "pixel":
        images[7, 2, 2] = (images[7, 2, 2] + 1) % 256
    elif change == "label":
        labels[7] = (labels[7] + 1) % 3
    else:
        images, labels = images[1:], labels[1:]
    write_idx(folder / "train-images-idx3-ubyte.gz", images[:60])
    write_idx(folder / "train-labels-idx1-ubyte.gz", labels[:60])
    code, _, err = cli("forget", run, "--ids", _ids(tmp_path, [3]), "--method", "retrain", "--out", tmp_path / "o")
    assert code == 2 and "refus" in err and ("fingerprint" in err or "training rows" in err), err
    assert not (run / LEDGER_FILE).exists()  # nothing was recorded


# ---------------------------------------------------------------------------------------------- NaN and inf
def _float_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x0D, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    path.write_bytes(header + array.astype(">f4").tobytes())


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_the_data_is_refused_before_training(tmp_path, rng, value):
    higgs = tmp_path / "HIGGS.csv"
    table = np.hstack([rng.integers(0, 2, size=(40, 1)), rng.normal(size=(40, 28))]).astype(object)
    table[5, 3] = value
    higgs.write_text("\n".join(",".join(str(v) for v in row) for row in table) + "\n")
    covtype = tmp_path / "covtype.data"
    cov = np.hstack([rng.normal(size=(40, 54)), rng.integers(1, 8, size=(40, 1))]).astype(object)
    cov[3, 10] = value
    covtype.write_text("\n".join(",".join(str(v) for v in row) for row in cov) + "\n")
    folder = tmp_path / "idx"
    folder.mkdir()
    images = rng.random((30, 3, 3))
    images[4, 1, 1] = value
    _float_idx(folder / "train-images-idx3-ubyte", images[:20])
    _float_idx(folder / "t10k-images-idx3-ubyte", images[20:])
    write_idx(folder / "train-labels-idx1-ubyte", rng.integers(0, 2, 20), gz=False)
    write_idx(folder / "t10k-labels-idx1-ubyte", rng.integers(0, 2, 10), gz=False)
    for spec in (f"higgs:path={higgs},n_rows=40", f"covtype:path={covtype}", f"mnist:path={folder}"):
        out = tmp_path / f"run{next(_unique)}"
        code, _, err = cli("train", "--dataset", spec, "--l2", "1e-2", "--out", out)
        assert code == 2 and err.count("\n") == 1 and re.search(r"NaN or infinite", err), (spec, err)
        assert not (out / RUN_JSON).exists()


def test_non_finite_options_in_a_dataset_spec_are_refused(tmp_path):
    for spec in ("synthetic:n_samples=nan", "synthetic:separation=inf", "synthetic:n_samples=1e400"):
        code, _, err = cli("train", "--dataset", spec, "--l2", "1", "--out", tmp_path / f"r{next(_unique)}")
        assert code == 2 and "dataset 'synthetic': option" in err, err


# ---------------------------------------------------------------------------------------------- full disk
def _enospc(*_, **__):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_writing_the_model_loses_nothing(run, tmp_path, monkeypatch):
    import miniunlearn.core.storage as storage

    forget(run, [1, 2], "retrain", out=tmp_path / "first")
    before = snapshot(run.path, tmp_path / "first")
    real = storage._write_safetensors

    def half_then_full(path, tensors, metadata):  # some bytes reach the disk, then it is full
        real(path, tensors, metadata)
        with open(path, "r+b") as handle:
            handle.truncate(100)
        _enospc()

    monkeypatch.setattr(storage, "_write_safetensors", half_then_full)
    code, _, err = cli("forget", run.path, "--ids", _ids(tmp_path, [7]), "--method", "retrain", "--out",
                       tmp_path / "second")
    assert code == 2 and err.count("\n") == 1
    assert "no space left on device (the disk is full)" in err and "nothing was replaced" in err
    assert "model.safetensors" in err
    after = snapshot(run.path, tmp_path / "first")
    not_ledger = [k for k in before if not Path(k).name.startswith("ledger.")]
    assert {k: after[k] for k in not_ledger} == {k: before[k] for k in not_ledger}  # nothing saved was touched
    assert os.listdir(tmp_path / "second") == []  # no model, no result, no temporary file
    with Ledger.open(run) as book:  # the ledger recorded the failure, and only that
        first, last = book.requests()
        assert first.status == "done" and first.model_problem() is None
        assert last.status == "failed" and "disk is full" in last.note
        assert book.forgotten_ids().tolist() == [1, 2]  # row 7 is not forgotten
    monkeypatch.undo()
    assert forget(run, [7], "retrain", out=tmp_path / "second").stats["n_forget"] == 3  # retry once there is room


def test_a_full_disk_in_the_ledger_loses_nothing(run, tmp_path, monkeypatch):
    import sqlite3

    forget(run, [1], "retrain", out=tmp_path / "first")
    before = snapshot(run.path, tmp_path / "first")

    def full(self):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Ledger, "_commit", full)
    code, _, err = cli("forget", run.path, "--ids", _ids(tmp_path, [5]), "--method", "retrain", "--out",
                       tmp_path / "second")
    assert code == 2 and err.count("\n") == 1 and "the disk is full" in err and "ledger" in err
    assert snapshot(run.path, tmp_path / "first") == before
    assert not (tmp_path / "second" / MODEL_FILE).exists()
    monkeypatch.undo()
    with Ledger.open(run) as book:
        assert [r.status for r in book.requests()] == ["done"]


def test_a_full_disk_while_training_over_a_run_keeps_no_half_run(tmp_path, monkeypatch):
    import miniunlearn.core.storage as storage

    run = tmp_path / "run"
    code, _, err = cli("train", "--dataset", "breast_cancer", "--l2", "1e-2", "--out", run)
    assert code == 0
    real = storage.atomic_write

    def full_for_run_json(target, write):
        return real(target, _enospc if str(target).endswith(RUN_JSON) else write)

    monkeypatch.setattr(storage, "atomic_write", full_for_run_json)
    code, _, err = cli("train", "--dataset", "breast_cancer", "--l2", "3e-2", "--out", run, "--overwrite")
    assert code == 2 and err.count("\n") == 1 and "run.json" in err and "disk is full" in err
    # the old run.json was retired before anything was replaced, so none vouches for a mix of files
    assert not (run / RUN_JSON).exists()
    load_model(run)  # what is there under its final name is whole
    assert [p for p in os.listdir(run) if p.endswith(".tmp")] == []


def test_json_and_copy_writes_fail_cleanly(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    atomic_write_json(target, {"a": 1})
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(WriteError, match="disk is full"):
        atomic_write_json(target, {"a": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"a": 1} and os.listdir(tmp_path) == ["x.json"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs (needs root and mount); skipped where it cannot be made."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.decode().strip()[:80]})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_really_full_disk(tiny_disk, tmp_path):
    run = tiny_disk / "run"
    code, _, err = cli("train", "--dataset", "breast_cancer", "--l2", "1e-2", "--out", run)
    assert code == 0, err
    code, _, err = cli("forget", run, "--ids", _ids(tmp_path, [1]), "--method", "mini", "--out", tiny_disk / "a")
    assert code == 0, err
    filler = tiny_disk / "filler"
    with open(filler, "wb", buffering=0) as handle:  # fill the disk to the last byte
        for block in (4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * block)
    before = snapshot(run, tiny_disk / "a")
    code, _, err = cli("forget", run, "--ids", _ids(tmp_path, [2]), "--method", "mini", "--out", tiny_disk / "b")
    assert code == 2 and err.count("\n") == 1 and ("disk is full" in err), err
    after = snapshot(run, tiny_disk / "a")
    assert {k: after.get(k) for k in before} == before  # everything saved before is intact
    assert {Path(k).name for k in set(after) - set(before)} <= {"ledger.sqlite-wal", "ledger.sqlite-shm"}
    code, _, err = cli("train", "--dataset", "digits", "--l2", "1e-2", "--out", tiny_disk / "run2")
    assert code == 2 and "disk is full" in err and not (tiny_disk / "run2" / RUN_JSON).exists()
    filler.unlink()
    code, _, err = cli("forget", run, "--ids", _ids(tmp_path, [2]), "--method", "mini", "--out", tiny_disk / "b")
    assert code == 0, err
    code, out, _ = cli("ledger", run, "--verify", "--json")
    assert code == 0 and json.loads(out)["forgotten_rows"] == 2


# ---------------------------------------------------------------------------------------------- paths
def test_hostile_paths(run, tmp_path):
    ids = _ids(tmp_path, [1])
    (tmp_path / "afile").write_text("x")
    cases = [
        (["forget", tmp_path / "afile", "--ids", ids, "--out", tmp_path / "o"], "run directory not found"),
        (["forget", run.path, "--ids", tmp_path, "--out", tmp_path / "o"], "ids file not found"),
        (["forget", run.path, "--ids", ids, "--out", tmp_path / "afile"], "is a file"),  # (click's check)
        (["forget", run.path, "--ids", ids, "--out", run.path], "is the run directory itself"),
        (["train", "--dataset", "digits", "--l2", "1", "--out", tmp_path / "afile" / "sub"], "cannot create"),
    ]
    before = snapshot(run.path)
    for args, message in cases:
        code, _, err = cli(*args)
        assert_clean_outcome(code, err)
        assert code == 2 and message in err, (args, err)
    assert snapshot(run.path) == before


# ---------------------------------------------------------------------------------------------- no pickle
def test_nothing_is_ever_unpickled():
    source = Path(__file__).resolve().parents[2] / "src" / "miniunlearn"
    assert source.is_dir(), source
    forbidden = re.compile(r"\bimport pickle\b|\bfrom pickle\b|\bcPickle\b|\bdill\b|\bjoblib\b|\bshelve\b|"
                           r"\bmarshal\.loads?\b|torch\.load\b|pickle\.loads?\b|allow_pickle\s*=\s*True")
    np_load = re.compile(r"np\.load\((?![^)]*allow_pickle\s*=\s*False)")
    offenders = []
    for path in sorted(source.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if forbidden.search(code) or np_load.search(code):
                offenders.append(f"{path.relative_to(source)}:{number}: {line.strip()}")
    assert offenders == []
