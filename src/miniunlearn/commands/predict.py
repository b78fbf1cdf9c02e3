"""``miniunlearn predict``: a trained run's or an unlearned model's predictions on raw rows."""

from __future__ import annotations

from pathlib import Path

import click

from miniunlearn.commands.output import CONTEXT, JSON_OPTION, console, emit, kv_table
from miniunlearn.runs import RUN_JSON, open_run
from miniunlearn.runs.predict import predict_to_csv
from miniunlearn.service.ledger import Ledger


@click.command(context_settings=CONTEXT)
@click.argument("model_dir", type=click.Path())
@click.option("--data", "spec", required=True,
              help="The rows to predict: a data file spec, e.g. csv:path=new.csv[,id=COLUMN] (every row; the "
                   "model's feature columns are picked by name, a target= column gives the accuracy), "
                   "parquet:..., npz:path=F (X, or X_test), svmlight:path=F, or a registered dataset (its test rows).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="CSV file to write.")
@click.option("--proba", is_flag=True, help="Add one probability column per class, named by its label.")
@JSON_OPTION
def predict(model_dir, spec, out, proba, as_json):
    """Predict with MODEL_DIR -- a trained run or an unlearned model (`forget`, `retrain`) -- on raw rows.

    \b
    The model applies the preprocessing stored with it (the training rows' standardisation) to the
    raw features, and writes labels in the data's own values: the CSV has the data's key column
    (when it has one), `prediction`, and with --proba one column per class. Predicting with a run
    that has forgotten rows uses its original model, which still reflects them; predict with the
    latest unlearned model instead (`miniunlearn ledger RUN` lists them).
    """
    payload = predict_to_csv(model_dir, spec, out, proba=proba)
    warning = _forgotten_warning(Path(model_dir))
    if warning:
        payload["warning"] = warning
        if not as_json:
            click.echo(f"warning: {warning}", err=True)

    def human(p):
        rows = [("model", p["model"]), ("data", p["data"]), ("rows", p["rows"]), ("columns", ", ".join(p["columns"])),
                ("classes", ", ".join(map(str, p["classes"])))]
        if p["accuracy"] is not None:
            rows.append(("accuracy (data has labels)", p["accuracy"]))
        rows.append(("wrote", p["out"]))
        console().print(kv_table("predicted", rows))

    emit(payload, as_json, human)


def _forgotten_warning(model_dir) -> str | None:
    """A warning when MODEL_DIR is a run whose deletion ledger holds forgotten rows."""
    if not (model_dir / RUN_JSON).is_file():
        return None
    run = open_run(model_dir)
    if not Ledger.exists(run):
        return None
    with Ledger.open(run) as book:
        forgotten = book.forgotten_ids()
        latest = [r for r in book.requests("done") if r.kind == "deletion"]
    if forgotten.size == 0:
        return None
    return (f"run {model_dir} has {forgotten.size} forgotten rows, but this is its original model, trained with them; "
            f"predict with the unlearned model (latest: {latest[-1].out_path})")


def attach(cli) -> None:
    cli.add_command(predict)
