"""``miniunlearn forget`` and ``miniunlearn retrain``: deletion requests on a run."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from miniunlearn import distributed
from miniunlearn.commands.output import CONTEXT, JSON_OPTION, console, emit, fmt, human_bytes, kv_table
from miniunlearn.core.errors import InputError
from miniunlearn.core.progress import progress_bar, set_progress
from miniunlearn.core.text import parse_key_values
from miniunlearn.privacy import ReleaseRequest
from miniunlearn.runs import MODEL_FILE, open_run
from miniunlearn.service import forget as forget_fn
from miniunlearn.service.ledger import forgotten_so_far
from miniunlearn.service.release import release_like
from miniunlearn.service.requests import read_ids_file, read_keys_file, request_rows

KEYS_HELP = ("File with one key per line: values of the data's id column (csv/parquet id=, npz ids); every row "
             "with one of these keys is forgotten. Without an id column a row's key is its row number in the data file.")
RESERVED = {"run", "forget_ids", "method", "out", "workers", "overwrite", "progress", "already_forgotten", "ledger",
            "keys", "release", "compact"}


def _release_options(func):
    """--epsilon, --delta, --mechanism, --sensitivity, --like: an (epsilon, delta)-certified release."""
    for option in reversed([
        click.option("--epsilon", type=float, default=None,
                     help="Publish an (epsilon, delta)-certified release: the model plus N(0, sigma^2 I) noise "
                          "calibrated on the certified distance to retraining (needs --delta)."),
        click.option("--delta", type=float, default=None, help="delta of the certified release, in (0, 1)."),
        click.option("--mechanism", type=click.Choice(["auto", "classic", "analytic"]), default="auto",
                     show_default=True,
                     help="Noise calibration: classic (epsilon < 1), analytic (Balle & Wang 2018), or auto: "
                          "classic below epsilon 1, analytic from 1."),
        click.option("--sensitivity", type=float, default=None,
                     help="Distance the noise must hide, instead of the method's certificate (never below it)."),
        click.option("--like", "like_dir", type=click.Path(file_okay=False), default=None,
                     help="Release with the same sigma as the certified release in this directory (same "
                          "request): its epsilon, delta, sensitivity and mechanism."),
    ]):
        func = option(func)
    return func


def _request(run, ids_file, keys_file, default_to_forgotten: bool) -> tuple[dict, str]:
    """The forget request's arguments (row ids or keys) and a few words describing it."""
    if ids_file is not None and keys_file is not None:
        raise InputError("give --ids or --keys, not both")
    if keys_file is not None:
        keys = read_keys_file(keys_file)
        return {"keys": keys}, f"{len(keys)} keys"
    if ids_file is None and not default_to_forgotten:
        raise InputError("name the rows to forget: --ids FILE (row numbers) or --keys FILE (keys of the id column)")
    ids = read_ids_file(ids_file) if ids_file is not None else forgotten_so_far(run)
    return {"forget_ids": ids}, f"{len(ids)} rows"


def _release_request(run, request: dict, epsilon, delta, mechanism, sensitivity, like_dir):
    """The ReleaseRequest of the options, or None when no release is asked for."""
    if like_dir is not None:
        if sensitivity is not None:
            raise InputError("--like takes the sensitivity of the release it names; drop --sensitivity")
        named = request_rows(run, request.get("forget_ids"), request.get("keys"))
        return release_like(like_dir, np.unique(named.rows), epsilon, delta)
    if epsilon is None and delta is None:
        if sensitivity is not None:
            raise InputError("--sensitivity belongs to a certified release: give --epsilon and --delta too")
        return None
    if epsilon is None or delta is None:
        raise InputError("a certified release needs both --epsilon and --delta")
    return ReleaseRequest(epsilon, delta, sensitivity, mechanism)


def _forget_and_report(run_dir, ids_file, keys_file, method, out, workers, options, overwrite, as_json,
                       release_options: dict, default_to_forgotten=False, compact=None):
    # Under torchrun every process runs this command; the gradient sums are split across them
    # and only rank 0 shows progress, writes files and reports (see miniunlearn.distributed).
    # A compaction is one process's work: asked for explicitly, it is refused rather than skipped.
    if compact in ("auto", "always"):
        distributed.require_one_process(f"forget --compact {compact}")
    distributed.init_from_env()
    writer = distributed.is_writer()
    try:
        if not writer:
            set_progress(False)
        run = open_run(run_dir)
        request, what = _request(run, ids_file, keys_file, default_to_forgotten)
        release = _release_request(run, request, **release_options)
        with progress_bar(f"forget {what} ({method})", None) as advance:
            result = forget_fn(run, method=method, out=out, workers=workers, overwrite=overwrite,
                               progress=advance, release=release, compact=compact, **request, **options)
    finally:
        distributed.shutdown()
    if not writer:  # rank 0 reports
        return
    summary = result.summary()
    if method != "retrain" and summary.get("certificate") is None:
        # exit 0 is right (the request did what was asked), but nothing bounds this model's distance
        # to retraining, so say so where a pipeline's logs will show it
        click.echo(f"warning: {method} gives no certificate: nothing bounds how far this model is from the "
                   "retrained one (mini certifies it: --method mini --tol T)", err=True)
    emit({"out": str(out), **summary}, as_json, _print_result)


def _print_result(p: dict) -> None:
    rows = [("method", p["method"]), ("forgotten rows", f"{p['n_forget']} of {p['n_train']} ({p['ratio']:.1%})"),
            ("time", f"{p['time_s']:.3f} s"), ("passes over forgotten rows", p["passes_forget"]),
            ("passes over retained rows", p["passes_retained"]),
            ("history read", human_bytes(p["history_bytes_read"])), ("peak memory", human_bytes(p["peak_rss_bytes"]))]
    for key in ("curvature_profile", "start", "iterations", "contraction_estimate", "newton_iterations"):
        if key in p:
            rows.append((key.replace("_", " "), p[key]))
    if p.get("certificate") is not None:
        rows.append(("certificate", f"||w - w_R|| <= {fmt(p['certificate'])}"
                                    + (f" = {p['certified_relative']:.2e} x ||w - w_T||"
                                       if p.get("certified_relative") is not None else "")))
    if "release" in p:
        r = p["release"]
        rows.append(("certified release", (f"({r['epsilon']:g}, {r['delta']:g}): sigma {r['sigma']:.4g} on "
                                           f"sensitivity {r['sensitivity']:.4g} ({r['mechanism']})")))
    held = p.get("keys_without_training_rows") or []
    if held:
        shown = ", ".join(repr(k) for k in held[:5]) + (", ..." if len(held) > 5 else "")
        rows.append(("held-out keys", f"{len(held)} key(s) with only held-out test rows, never trained on: {shown}"))
    if "unchanged" in p:
        rows.append(("unchanged", p["unchanged"]))
    rows.append(("model", str(Path(p["out"]) / MODEL_FILE)))
    if p.get("compaction_skipped"):
        rows.append(("not compacted", p["compaction_skipped"]))
    compaction = p.get("compaction")
    if compaction is not None:
        rows.append(("compacted", f"{compaction['reason']}: base {compaction['generation']} with "
                                  f"{compaction['n_after']} rows in {compaction['time_s']:.2f} s; removed "
                                  f"{len(compaction['removed'])} file(s), including this request's model"))
    console().print(kv_table("forgotten", rows))


@click.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path())
@click.option("--ids", "ids_file", type=click.Path(), help="File with one 0-based training-row id per line.")
@click.option("--keys", "keys_file", type=click.Path(), help=KEYS_HELP)
@click.option("--method", default="mini", show_default=True, help="Unlearning method (see `miniunlearn methods`).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for model.safetensors and result.json.")
@click.option("--tol", type=float, default=None,
              help="mini: refine until the certified distance to retraining is <= TOL x ||w - w_T|| "
                   "(default 1e-3); exit code 3 when --max-passes do not reach it.")
@click.option("--max-passes", type=int, default=None, help="mini with --tol: passes over the retained rows at most.")
@click.option("--refine", type=int, default=None,
              help="mini: the fixed-budget form of --tol: K passes over the retained rows, returning the "
                   "furthest point reached with its certificate (0 reads none; certified only where the history "
                   "bounds step 0 alone).")
@click.option("--workers", type=int, default=1, show_default=True, help="Parallel workers for gradient sums.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Further method option (repeatable).")
@click.option("--overwrite", is_flag=True, help="Replace existing results in --out.")
@click.option("--compact", "compact", type=click.Choice(["never", "auto", "always"]), default=None,
              help="After the request, compact the run (`miniunlearn compact`) when this policy says so; auto: "
                   "once 10 % of the base's rows are forgotten since it was made, or the certificate exceeds 1 % "
                   "of the distance moved. Default: the run's policy (`compact RUN --policy`), else never.")
@_release_options
@JSON_OPTION
def forget(run_dir, ids_file, keys_file, method, out, tol, max_passes, refine, workers, settings, overwrite, compact,
           epsilon, delta, mechanism, sensitivity, like_dir, as_json):
    """Remove the rows in --ids, or the rows with the keys in --keys, from RUN_DIR's model; write
    the unlearned model to --out.

    \b
    Rows forgotten by earlier requests stay forgotten: the model written forgets them too, and the
    run's deletion ledger records the request (`miniunlearn ledger RUN_DIR`). With mini (the
    default) the model is certified: result.json gives `certificate`, a proven bound on its
    distance to the retrained model, and a request whose tolerance is not reached exits with 3
    and is recorded as failed, never as a deletion.
    """
    options = parse_key_values(settings, "--set")
    reserved = sorted(set(options) & RESERVED)
    if reserved:
        raise InputError(f"--set {reserved[0]}=... is not a method option; use the command's own option instead")
    for name, value in (("tol", tol), ("max_passes", max_passes), ("refine", refine)):
        if value is not None:
            options[name] = value
    _forget_and_report(run_dir, ids_file, keys_file, method, out, workers, options, overwrite, as_json,
                       dict(epsilon=epsilon, delta=delta, mechanism=mechanism, sensitivity=sensitivity,
                            like_dir=like_dir), compact=compact)


@click.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path())
@click.option("--ids", "ids_file", type=click.Path(),
              help="File with one 0-based training-row id per line (default: every row forgotten so far).")
@click.option("--keys", "keys_file", type=click.Path(), help=KEYS_HELP)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for the retrained model.")
@click.option("--overwrite", is_flag=True, help="Replace existing results in --out.")
@_release_options
@JSON_OPTION
def retrain(run_dir, ids_file, keys_file, out, overwrite, epsilon, delta, mechanism, sensitivity, like_dir, as_json):
    """Retrain RUN_DIR's configuration from scratch without the forgotten rows (the gold standard).

    \b
    Without --ids or --keys: without every row forgotten so far (the union of the completed
    requests in the run's deletion ledger) -- the reference to compare unlearned models with.
    With --like DIR (or --epsilon, --delta and --sensitivity) the retrained model is published as
    the reference side of a certified release: with the same noise scale sigma as the unlearned
    release in DIR.
    """
    _forget_and_report(run_dir, ids_file, keys_file, "retrain", out, 1, {}, overwrite, as_json,
                       dict(epsilon=epsilon, delta=delta, mechanism=mechanism, sensitivity=sensitivity,
                            like_dir=like_dir), default_to_forgotten=True)


def attach(cli) -> None:
    cli.add_command(forget)
    cli.add_command(retrain)
