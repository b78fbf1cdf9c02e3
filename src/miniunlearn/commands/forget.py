"""``miniunlearn forget`` and ``miniunlearn retrain``: deletion requests on a run."""

from __future__ import annotations

from pathlib import Path

import click

from miniunlearn.commands.output import CONTEXT, JSON_OPTION, console, emit, human_bytes, kv_table
from miniunlearn.core.errors import InputError


def _forget_and_report(run_dir, ids_file, keys_file, method, out, workers, options, overwrite, as_json,
                       default_to_forgotten=False):
    from miniunlearn import distributed
    from miniunlearn.core.progress import progress_bar, set_progress
    from miniunlearn.runs import open_run
    from miniunlearn.service import forget as forget_fn
    from miniunlearn.service.ledger import forgotten_so_far
    from miniunlearn.service.requests import read_ids_file, read_keys_file

    if ids_file is not None and keys_file is not None:
        raise InputError("give --ids or --keys, not both")
    if ids_file is None and keys_file is None and not default_to_forgotten:
        raise InputError("name the rows to forget: --ids FILE (row numbers) or --keys FILE (keys of the id column)")

    # Under torchrun every process runs this command; the gradient sums are split across them
    # and only rank 0 shows progress, writes files and reports (see miniunlearn.distributed).
    distributed.init_from_env()
    writer = distributed.is_writer()
    try:
        if not writer:
            set_progress(False)
        run = open_run(run_dir)
        if keys_file is not None:
            request = {"keys": read_keys_file(keys_file)}
            what = f"{len(request['keys'])} keys"
        else:
            request = {"forget_ids": read_ids_file(ids_file) if ids_file is not None else forgotten_so_far(run)}
            what = f"{len(request['forget_ids'])} rows"
        with progress_bar(f"forget {what} ({method})", None) as advance:
            result = forget_fn(run, method=method, out=out, workers=workers, overwrite=overwrite,
                               progress=advance, **request, **options)
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


KEYS_HELP = ("File with one key per line: values of the data's id column (csv/parquet id=, npz ids); every row "
             "with one of these keys is forgotten. Without an id column a row's key is its row number in the data file.")


@click.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path())
@click.option("--ids", "ids_file", type=click.Path(), help="File with one 0-based training-row id per line.")
@click.option("--keys", "keys_file", type=click.Path(), help=KEYS_HELP)
@click.option("--method", default="mini", show_default=True, help="Unlearning method (see `miniunlearn methods`).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for model.safetensors and result.json.")
@click.option("--refine", type=int, default=None, help="mini: exact retained-gradient passes (0 reads no retained data).")
@click.option("--workers", type=int, default=1, show_default=True, help="Parallel workers for gradient sums.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Further method option (repeatable).")
@click.option("--overwrite", is_flag=True, help="Replace existing results in --out.")
@JSON_OPTION
def forget(run_dir, ids_file, keys_file, method, out, refine, workers, settings, overwrite, as_json):
    """Remove the rows in --ids, or the rows with the keys in --keys, from RUN_DIR's model; write
    the unlearned model to --out.

    Rows forgotten by earlier requests stay forgotten: the model written forgets them too, and the
    run's deletion ledger records the request (`miniunlearn ledger RUN_DIR`).
    """
    from miniunlearn.core.text import parse_key_values

    options = parse_key_values(settings, "--set")
    reserved = sorted(set(options) & {"run", "forget_ids", "method", "out", "workers", "overwrite", "progress",
                                      "already_forgotten", "ledger", "keys"})
    if reserved:
        raise InputError(f"--set {reserved[0]}=... is not a method option; use the command's own option instead")
    if refine is not None:
        options["refine"] = refine
    _forget_and_report(run_dir, ids_file, keys_file, method, out, workers, options, overwrite, as_json)


@click.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path())
@click.option("--ids", "ids_file", type=click.Path(),
              help="File with one 0-based training-row id per line (default: every row forgotten so far).")
@click.option("--keys", "keys_file", type=click.Path(), help=KEYS_HELP)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for the retrained model.")
@click.option("--overwrite", is_flag=True, help="Replace existing results in --out.")
@JSON_OPTION
def retrain(run_dir, ids_file, keys_file, out, overwrite, as_json):
    """Retrain RUN_DIR's configuration from scratch without the forgotten rows (the gold standard).

    \b
    Without --ids or --keys: without every row forgotten so far (the union of the completed
    requests in the run's deletion ledger) -- the reference to compare unlearned models with.
    """
    _forget_and_report(run_dir, ids_file, keys_file, "retrain", out, 1, {}, overwrite, as_json,
                       default_to_forgotten=True)


def attach(cli) -> None:
    cli.add_command(forget)
    cli.add_command(retrain)
