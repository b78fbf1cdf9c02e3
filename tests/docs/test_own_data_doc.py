"""docs/own-data.md is a runnable walk-through: its bash and python blocks run here, in order, in a
fresh directory. ``miniunlearn ...`` lines run in this process (the CLI's ``main``; no interpreter
start-up per command), every other shell line (the data set-up, printf, cat, head) runs in bash."""

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from miniunlearn.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "own-data.md"
BLOCK = re.compile(r"```(bash|python)\n(.*?)```", re.S)


def blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(DOC.read_text())


def shell_commands(block: str) -> list[str]:
    """One entry per command; a here-document (``<<'EOF'`` ... ``EOF``) stays with its command."""
    commands, lines = [], iter(block.splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "<<'EOF'" in line:
            body = [line]
            for more in lines:
                body.append(more)
                if more.strip() == "EOF":
                    break
            line = "\n".join(body)
        commands.append(line)
    return commands


def run_shell(command: str, bin_dir: Path) -> str:
    if command.startswith("miniunlearn "):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                main(shlex.split(command)[1:])
            except SystemExit as exc:
                raise AssertionError(f"{command!r} exited with {exc.code}:\n{out.getvalue()}") from None
        return out.getvalue()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, f"{command!r} failed:\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_the_walk_through_runs_and_does_what_it_says(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # this interpreter, its packages
    (bin_dir / "python").chmod(0o755)
    work = tmp_path / "session"
    work.mkdir()
    monkeypatch.chdir(work)
    transcript, namespace = [], {}
    found = blocks()
    assert [kind for kind, _ in found].count("bash") >= 6
    for kind, code in found:
        if kind == "python":
            exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - the documentation's own code
            continue
        for command in shell_commands(code):
            transcript.append(f"$ {command}\n{run_shell(command, bin_dir)}")
    text = "\n".join(transcript)
    # the walk-through's claims, checked against the files it produced
    assert sorted((work / "forgotten-users.txt").read_text().split()) == ["1017", "1042"]
    predictions = pd.read_csv(work / "predictions.csv")
    assert list(predictions.columns) == ["user_id", "prediction", "churned", "stayed"]
    assert list(predictions.user_id) == [2001, 2002, 2003] and set(predictions.prediction) <= {"churned", "stayed"}
    assert ((predictions.churned + predictions.stayed) - 1).abs().max() < 1e-12
    assert "relative residual" in text and "alternative" in text  # evaluate's table; retrain of the union
    assert "10 of 840" in text  # the doc's count of forgotten training rows (the two users: all training rows)
    assert json.loads((work / "runs" / "customers-mini" / "result.json").read_text())[
        "keys_without_training_rows"] == ["1004"]
    customers = pd.read_csv(work / "customers.csv")
    assert (customers.user_id.isin([1017, 1042])).sum() == 10  # five rows each, whichever were held out
    assert (work / "runs" / "customers-sk" / "run.json").is_file()
    assert namespace["model"].forget_stats_["n_forget"] >= 1
    # the purge: refused before compacting (with the count), served from the shorter file after
    assert "lacks" in namespace["too_early"] and "miniunlearn compact" in namespace["too_early"]
    assert (work / "runs" / "purge" / "bases" / "1").is_dir()
    assert not (work / "runs" / "purge-1" / "model.safetensors").exists()  # computed from the old base
    assert not pd.read_csv(work / "purge.csv").user_id.isin([1017, 1042, 1077]).any()
    assert namespace["gap"] < 1e-6  # the served model against retraining on the final file
