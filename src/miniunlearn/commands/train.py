"""``miniunlearn train``: fit a model and record its unlearning history in a run directory."""

from __future__ import annotations

import click

from miniunlearn.commands.output import CONTEXT, JSON_OPTION, console, emit, human_bytes, kv_table
from miniunlearn.core.errors import InputError
from miniunlearn.core.text import parse_bytes
from miniunlearn.data import load_dataset
from miniunlearn.distributed import require_one_process
from miniunlearn.runs import train as train_run
from miniunlearn.training import SGDSchedule


@click.command(context_settings=CONTEXT)
@click.option("--dataset", "dataset_spec", required=True, help="Dataset spec NAME[:key=value,...] (see `data list`).")
@click.option("--l2", type=float, required=True, help="L2 strength lambda in F(w) = mean loss + (lambda/2)||w||^2.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to create.")
@click.option("--mode", type=click.Choice(["converged", "trajectory"]), default="converged", show_default=True,
              help="converged: Newton-CG to ||grad F|| <= tol (unique optimum). trajectory: seeded mini-batch SGD.")
@click.option("--tol", type=float, default=1e-9, show_default=True, help="Converged mode: stop when ||grad F||_2 <= tol.")
@click.option("--max-iter", type=int, default=100, show_default=True, help="Converged mode: Newton iterations at most.")
@click.option("--history", "--profile", "profile", default="auto", show_default=True, metavar="PROFILE",
              help="Curvature kept in the history, NAME[:key=value,...]: exact (dense inverse; dtype=float32, "
                   "packed=1 halve the bytes), classblock (one exact block per class: many classes), kron (k=..., "
                   "dtype=float16: structured, small), minimal "
                   "(<= 64 vectors). auto: the most accurate that fits --history-budget, else exact when it "
                   "fits --memory-budget (from 4,096 parameters on, stored in float32, packed). See "
                   "`miniunlearn methods` and docs/mini-unlearning.md.")
@click.option("--history-budget", type=str, default=None, help="Bytes the history's curvature may take, e.g. 10MB, "
              "1GiB: picks the most accurate profile that fits.")
@click.option("--memory-budget", type=str, default="4GiB", show_default=True,
              help="Working memory allowed for building the history's curvature.")
@click.option("--epochs", type=int, default=20, show_default=True, help="Trajectory mode: epochs.")
@click.option("--batch-size", type=int, default=16384, show_default=True, help="Trajectory mode: batch size.")
@click.option("--lr", type=float, default=0.1, show_default=True, help="Trajectory mode: initial learning rate.")
@click.option("--lr-step", "lr_steps", multiple=True, default=("10:0.05",), show_default=True,
              help="Trajectory mode: EPOCH:LR, the learning rate from that epoch on (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True, help="Trajectory mode: batch-order seed.")
@click.option("--deltagrad-history", is_flag=True, help="Trajectory mode: also record DeltaGrad's per-iteration history.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run in --out.")
@JSON_OPTION
def train(dataset_spec, l2, out, mode, tol, max_iter, profile, history_budget, memory_budget, epochs, batch_size, lr, lr_steps, seed,
          deltagrad_history, overwrite, as_json):
    """Train multinomial logistic regression and record its unlearning history in a run directory."""
    require_one_process("train")
    budget = None if history_budget is None else parse_bytes(history_budget)
    schedule = SGDSchedule(epochs, batch_size, lr, _parse_lr_steps(lr_steps), seed)
    dataset = load_dataset(dataset_spec)
    run = train_run(dataset, l2, out, mode=mode, tol=tol, max_iter=max_iter, sgd_schedule=schedule, profile=profile,
                    deltagrad_history=deltagrad_history, memory_budget=parse_bytes(memory_budget),
                    history_budget=budget,
                    overwrite=overwrite)
    meta = run.meta
    payload = {"run": str(run.path), "dataset": meta["dataset"], "config": meta["config"],
               "training": meta["training"], "metrics": meta["metrics"], "history": meta["history"]}

    def human(p):
        t, m = p["training"], p["metrics"]
        rows = [("run", p["run"]), ("dataset", f"{p['dataset']['name']} ({p['dataset']['n_train']} train rows)"),
                ("mode", p["config"]["mode"]), ("time", f"{t['time_s']:.2f} s"),
                ("passes over the data", f"{t['passes']:.0f}"), ("final ||grad F||", t.get("grad_norm")),
                ("train accuracy", m["train_accuracy"]), ("test accuracy", m["test_accuracy"])]
        for kind, h in p["history"].items():
            label = f"{kind} history" + (f" ({h.get('profile_spec', h['profile'])})" if "profile" in h else "")
            rows.append((label, human_bytes(h["bytes"])))
        console().print(kv_table("trained", rows))

    emit(payload, as_json, human)


def _parse_lr_steps(items) -> tuple:
    steps = []
    for item in items:
        epoch, sep, value = str(item).partition(":")
        try:
            steps.append((int(epoch), float(value)))
        except ValueError:
            raise InputError(f"--lr-step {item!r} should look like EPOCH:LR, e.g. 10:0.05") from None
        if not sep:
            raise InputError(f"--lr-step {item!r} should look like EPOCH:LR, e.g. 10:0.05")
    return tuple(steps)


def attach(cli) -> None:
    cli.add_command(train)
