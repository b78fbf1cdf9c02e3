"""``miniunlearn data list`` and ``miniunlearn data export``."""

from __future__ import annotations

import click
from rich.table import Table

from miniunlearn.commands.output import CONTEXT, JSON_OPTION, console, emit
from miniunlearn.core.params import param_help
from miniunlearn.data import dataset_info, dataset_names, export_dataset, load_dataset


@click.group(context_settings=CONTEXT)
def data():
    """List, inspect and export the datasets.

    A dataset is named by a spec NAME[:key=value,...], e.g. `digits`,
    `synthetic:n_samples=20000,n_features=54,n_classes=7` or `fashion-mnist:path=/data/fmnist`.
    """


@data.command("list", context_settings=CONTEXT)
@JSON_OPTION
def data_list(as_json: bool):
    """List the registered datasets, their options and whether they are available here."""
    rows = []
    for name in dataset_names():
        info = dataset_info(name)
        ok, where = info.available()
        rows.append({"name": name, "summary": info.summary, "available": ok, "where": where,
                     "options": param_help(info.parameters)})

    def human(payload):
        table = Table("dataset", "available", "summary / options")
        for row in payload["datasets"]:
            opts = "; ".join(f"{k}: {v['help']} (default {v['default']})" for k, v in row["options"].items())
            table.add_row(row["name"], "yes" if row["available"] else f"no ({row['where']})",
                          row["summary"] + (f"\n[dim]{opts}[/dim]" if opts else ""))
        console().print(table)

    emit({"datasets": rows}, as_json, human)


@data.command("export", context_settings=CONTEXT)
@click.argument("name")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .npz file.")
@JSON_OPTION
def data_export(name: str, out: str, as_json: bool):
    """Write X_train, y_train, X_test, y_test of dataset NAME exactly as training sees them.

    Features are float64 after the recorded preprocessing, without a bias column; labels are
    integers 0..C-1.
    """
    dataset = load_dataset(name)
    export_dataset(dataset, out)
    payload = {"out": str(out), **dataset.describe()}
    emit(payload, as_json, lambda p: click.echo(f"wrote {out}: {p['n_train']} train and {p['n_test']} test rows, "
                                                f"{p['n_features']} features, {p['n_classes']} classes"))


def attach(cli) -> None:
    cli.add_command(data)
