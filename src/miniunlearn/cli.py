"""The ``miniunlearn`` command line (also ``python -m miniunlearn``).

Every command exits 0 on success, 2 on a user error (bad input, missing or corrupted files)
with a one-line message naming the problem, and 1 on an unexpected failure. ``--json`` prints
machine-readable output on stdout; progress bars go to stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from miniunlearn.errors import MiniUnlearnError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def emit(payload: dict, as_json: bool, human) -> None:
    """Print ``payload`` as JSON or through ``human(payload)``."""
    if as_json:
        from miniunlearn.storage import to_json

        click.echo(to_json(payload))
    else:
        human(payload)


def console():
    """A rich console; when stdout is not a terminal (pipes, CI logs) tables get 140 columns, not 80."""
    import sys

    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 140)


def kv_table(title: str, rows: list[tuple[str, object]]):
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, fmt(value))
    return table


def fmt(value) -> str:
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) >= 1 else f"{value:.4g}"
        return f"{value:.3e}"
    return str(value)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def parse_key_values(items: tuple[str, ...], what: str) -> dict:
    from miniunlearn.data.base import _coerce
    from miniunlearn.errors import InputError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{what} {item!r} should look like key=value")
        out[key.strip().replace("-", "_")] = _coerce(value.strip())
    return out


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="miniunlearn")
@click.option("--no-progress", is_flag=True, help="Hide progress bars (they are hidden anyway when stderr is not a terminal).")
def cli(no_progress: bool):
    """miniunlearn: forget training data fast, and prove it.

    \b
    Typical session:
      miniunlearn train --dataset digits --l2 1e-3 --out runs/digits
      miniunlearn forget runs/digits --ids forget.txt --method mini --out runs/digits-mini
      miniunlearn retrain runs/digits --ids forget.txt --out runs/digits-retrain
    An ids file holds one 0-based training-row index per line.
    """
    if no_progress:
        from miniunlearn.progress import set_progress

        set_progress(False)


# ---------------------------------------------------------------------------------------------- data
@cli.group(context_settings=CONTEXT)
def data():
    """List, inspect and export the datasets.

    A dataset is named by a spec NAME[:key=value,...], e.g. `digits`,
    `synthetic:n_samples=20000,n_features=54,n_classes=7` or `fashion-mnist:path=/data/fmnist`.
    """


@data.command("list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def data_list(as_json: bool):
    """List the registered datasets, their options and whether they are available here."""
    from miniunlearn.data import dataset_info, dataset_names

    rows = []
    for name in dataset_names():
        info = dataset_info(name)
        ok, where = info.available()
        rows.append({"name": name, "summary": info.summary, "available": ok, "where": where, "options": info.options})

    def human(payload):
        from rich.table import Table

        table = Table("dataset", "available", "summary / options")
        for row in payload["datasets"]:
            opts = "; ".join(f"{k}: {v}" for k, v in row["options"].items())
            table.add_row(row["name"], "yes" if row["available"] else f"no ({row['where']})",
                          row["summary"] + (f"\n[dim]{opts}[/dim]" if opts else ""))
        console().print(table)

    emit({"datasets": rows}, as_json, human)


@data.command("export", context_settings=CONTEXT)
@click.argument("name")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .npz file.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def data_export(name: str, out: str, as_json: bool):
    """Write X_train, y_train, X_test, y_test of dataset NAME exactly as training sees them.

    Features are float64 after the recorded preprocessing, without a bias column; labels are
    integers 0..C-1.
    """
    from miniunlearn.data import export_dataset, load_dataset

    dataset = load_dataset(name)
    export_dataset(dataset, out)
    payload = {"out": str(out), **dataset.describe()}
    emit(payload, as_json, lambda p: click.echo(f"wrote {out}: {p['n_train']} train and {p['n_test']} test rows, "
                                                f"{p['n_features']} features, {p['n_classes']} classes"))


# ---------------------------------------------------------------------------------------------- train
@cli.command(context_settings=CONTEXT)
@click.option("--dataset", "dataset_spec", required=True, help="Dataset spec NAME[:key=value,...] (see `data list`).")
@click.option("--l2", type=float, required=True, help="L2 strength lambda in F(w) = mean loss + (lambda/2)||w||^2.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to create.")
@click.option("--mode", type=click.Choice(["converged", "trajectory"]), default="converged", show_default=True,
              help="converged: Newton-CG to ||grad F|| <= tol (unique optimum). trajectory: seeded mini-batch SGD.")
@click.option("--tol", type=float, default=1e-9, show_default=True, help="Converged mode: stop when ||grad F||_2 <= tol.")
@click.option("--max-iter", type=int, default=100, show_default=True, help="Converged mode: Newton iterations at most.")
@click.option("--profile", type=click.Choice(["auto", "exact", "minimal"]), default="auto", show_default=True,
              help="Curvature kept in the history: exact (dense, O(p^2)) or minimal (<= 64 vectors); auto picks "
                   "exact when it fits --memory-budget.")
@click.option("--memory-budget", type=str, default="4GiB", show_default=True, help="Budget for the exact profile.")
@click.option("--epochs", type=int, default=20, show_default=True, help="Trajectory mode: epochs.")
@click.option("--batch-size", type=int, default=16384, show_default=True, help="Trajectory mode: batch size.")
@click.option("--lr", type=float, default=0.1, show_default=True, help="Trajectory mode: initial learning rate.")
@click.option("--lr-step", "lr_steps", multiple=True, default=("10:0.05",), show_default=True,
              help="Trajectory mode: EPOCH:LR, the learning rate from that epoch on (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True, help="Trajectory mode: batch-order seed.")
@click.option("--deltagrad-history", is_flag=True, help="Trajectory mode: also record DeltaGrad's per-iteration history.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run in --out.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def train(dataset_spec, l2, out, mode, tol, max_iter, profile, memory_budget, epochs, batch_size, lr, lr_steps, seed,
          deltagrad_history, overwrite, as_json):
    """Train multinomial logistic regression and record its unlearning history in a run directory."""
    from miniunlearn.data import load_dataset
    from miniunlearn.distributed import require_one_process
    from miniunlearn.training import SGDSchedule, train as train_run

    require_one_process("train")
    schedule = SGDSchedule(epochs, batch_size, lr, _parse_lr_steps(lr_steps), seed)
    dataset = load_dataset(dataset_spec)
    run = train_run(dataset, l2, out, mode=mode, tol=tol, max_iter=max_iter, sgd_schedule=schedule, profile=profile,
                    deltagrad_history=deltagrad_history, memory_budget=_parse_bytes(memory_budget),
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
            label = f"{kind} history" + (f" ({h['profile']})" if "profile" in h else "")
            rows.append((label, human_bytes(h["bytes"])))
        console().print(kv_table("trained", rows))

    emit(payload, as_json, human)


def _parse_lr_steps(items) -> tuple:
    from miniunlearn.errors import InputError

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


def _parse_bytes(text: str) -> int:
    from miniunlearn.errors import InputError

    units = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9}
    raw = text.strip().lower()
    number = raw.rstrip("kmgib")
    try:
        size = int(float(number) * units[raw[len(number):]])
    except (ValueError, KeyError, OverflowError):
        raise InputError(f"cannot read the size {text!r}; write e.g. 4GiB or 500MB") from None
    if size < 0:
        raise InputError(f"a size cannot be negative: {text!r}")
    return size


# ---------------------------------------------------------------------------------------------- forget
def _forget_and_report(run_dir, ids_file, method, out, workers, options, overwrite, as_json):
    from miniunlearn import distributed
    from miniunlearn.ids import read_ids_file
    from miniunlearn.methods import forget as forget_fn
    from miniunlearn.progress import progress_bar, set_progress
    from miniunlearn.run import open_run

    # Under torchrun every process runs this command; the gradient sums are split across them
    # and only rank 0 shows progress, writes files and reports (see miniunlearn.distributed).
    distributed.init_from_env()
    writer = distributed.is_writer()
    try:
        if not writer:
            set_progress(False)
        run = open_run(run_dir)
        ids = read_ids_file(ids_file)
        with progress_bar(f"forget {len(ids)} rows ({method})", None) as advance:
            result = forget_fn(run, ids, method=method, out=out, workers=workers, overwrite=overwrite,
                               progress=advance, **options)
    finally:
        distributed.shutdown()
    if not writer:  # rank 0 reports
        return
    payload = {"out": str(out), **result.summary()}

    def human(p):
        rows = [("method", p["method"]), ("forgotten rows", f"{p['n_forget']} of {p['n_train']} ({p['ratio']:.1%})"),
                ("time", f"{p['time_s']:.3f} s"), ("passes over forgotten rows", p["passes_forget"]),
                ("passes over retained rows", p["passes_retained"]),
                ("history read", human_bytes(p["history_bytes_read"])), ("peak memory", human_bytes(p["peak_rss_bytes"]))]
        for key in ("curvature_profile", "iterations", "contraction_factor", "banach_bound", "certificate"):
            if key in p:
                rows.append((key.replace("_", " "), p[key]))
        rows.append(("model", str(Path(p["out"]) / "model.safetensors")))
        console().print(kv_table("forgotten", rows))

    emit(payload, as_json, human)


@cli.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path())
@click.option("--ids", "ids_file", required=True, type=click.Path(), help="File with one 0-based row id per line.")
@click.option("--method", default="mini", show_default=True, help="Unlearning method (see `miniunlearn methods`).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for model.safetensors and result.json.")
@click.option("--refine", type=int, default=None, help="mini: exact retained-gradient passes (0 reads no retained data).")
@click.option("--workers", type=int, default=1, show_default=True, help="Parallel workers for gradient sums.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Further method option (repeatable).")
@click.option("--overwrite", is_flag=True, help="Replace existing results in --out.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def forget(run_dir, ids_file, method, out, refine, workers, settings, overwrite, as_json):
    """Remove the rows in --ids from RUN_DIR's model; write the unlearned model to --out."""
    options = parse_key_values(settings, "--set")
    reserved = sorted(set(options) & {"run", "forget_ids", "method", "out", "workers", "overwrite", "progress",
                                      "already_forgotten", "ledger"})
    if reserved:
        from miniunlearn.errors import InputError

        raise InputError(f"--set {reserved[0]}=... is not a method option; use the command's own option instead")
    if refine is not None:
        options["refine"] = refine
    _forget_and_report(run_dir, ids_file, method, out, workers, options, overwrite, as_json)


@cli.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path())
@click.option("--ids", "ids_file", required=True, type=click.Path(), help="File with one 0-based row id per line.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for the retrained model.")
@click.option("--overwrite", is_flag=True, help="Replace existing results in --out.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def retrain(run_dir, ids_file, out, overwrite, as_json):
    """Retrain RUN_DIR's configuration from scratch without the rows in --ids (the gold standard)."""
    _forget_and_report(run_dir, ids_file, "retrain", out, 1, {}, overwrite, as_json)


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def methods(as_json: bool):
    """List the unlearning methods and their options."""
    from miniunlearn.methods import get_method, method_names

    rows = [{"name": n, "summary": get_method(n).summary, "modes": list(get_method(n).modes),
             "options": get_method(n).option_help()} for n in method_names()]

    def human(p):
        from rich.table import Table

        table = Table("method", "runs", "summary / options (defaults)")
        for r in p["methods"]:
            opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
            table.add_row(r["name"], ", ".join(r["modes"]), r["summary"] + (f"\n[dim]{opts}[/dim]" if opts else ""))
        console().print(table)

    emit({"methods": rows}, as_json, human)


def _attach_command_modules() -> None:
    import importlib
    import pkgutil

    from miniunlearn import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        importlib.import_module(f"miniunlearn.commands.{info.name}").attach(cli)


_attach_command_modules()


def main(argv=None) -> None:
    """Entry point: run the CLI, turning known errors into one clear line and a non-zero exit."""
    try:
        cli.main(args=argv, prog_name="miniunlearn", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MiniUnlearnError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as exc:
        click.echo(f"error: {exc.strerror or exc} ({getattr(exc, 'filename', '') or ''})", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
