"""``miniunlearn forget`` and ``miniunlearn retrain``: deletion requests on a run."""

from __future__ import annotations

from pathlib import Path

import click

from miniunlearn.commands.output import CONTEXT, JSON_OPTION, console, emit, human_bytes, kv_table
from miniunlearn.core.errors import InputError


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


def _release_request(ids_file, epsilon, delta, mechanism, sensitivity, like_dir):
    """The ReleaseRequest of the options, or None when no release is asked for."""
    from miniunlearn.privacy import ReleaseRequest
    from miniunlearn.service.release import release_like
    from miniunlearn.service.requests import read_ids_file

    if like_dir is not None:
        if sensitivity is not None:
            raise InputError("--like takes the sensitivity of the release it names; drop --sensitivity")
        return release_like(like_dir, read_ids_file(ids_file), epsilon, delta)
    if epsilon is None and delta is None:
        if sensitivity is not None:
            raise InputError("--sensitivity belongs to a certified release: give --epsilon and --delta too")
        return None
    if epsilon is None or delta is None:
        raise InputError("a certified release needs both --epsilon and --delta")
    return ReleaseRequest(epsilon, delta, sensitivity, mechanism)


def _forget_and_report(run_dir, ids_file, method, out, workers, options, overwrite, as_json, release=None):
    from miniunlearn import distributed
    from miniunlearn.core.progress import progress_bar, set_progress
    from miniunlearn.runs import open_run
    from miniunlearn.service import forget as forget_fn
    from miniunlearn.service.requests import read_ids_file

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
                               progress=advance, release=release, **options)
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
        if "release" in p:
            r = p["release"]
            rows.append(("certified release", (f"({r['epsilon']:g}, {r['delta']:g}): sigma {r['sigma']:.4g} on "
                                               f"sensitivity {r['sensitivity']:.4g} ({r['mechanism']})")))
        rows.append(("model", str(Path(p["out"]) / "model.safetensors")))
        console().print(kv_table("forgotten", rows))

    emit(payload, as_json, human)


@click.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path())
@click.option("--ids", "ids_file", required=True, type=click.Path(), help="File with one 0-based row id per line.")
@click.option("--method", default="mini", show_default=True, help="Unlearning method (see `miniunlearn methods`).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for model.safetensors and result.json.")
@click.option("--refine", type=int, default=None, help="mini: exact retained-gradient passes (0 reads no retained data).")
@click.option("--workers", type=int, default=1, show_default=True, help="Parallel workers for gradient sums.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Further method option (repeatable).")
@click.option("--overwrite", is_flag=True, help="Replace existing results in --out.")
@_release_options
@JSON_OPTION
def forget(run_dir, ids_file, method, out, refine, workers, settings, overwrite, epsilon, delta, mechanism,
           sensitivity, like_dir, as_json):
    """Remove the rows in --ids from RUN_DIR's model; write the unlearned model to --out."""
    from miniunlearn.core.text import parse_key_values

    options = parse_key_values(settings, "--set")
    reserved = sorted(set(options) & {"run", "forget_ids", "method", "out", "workers", "overwrite", "progress",
                                      "already_forgotten", "ledger", "release"})
    if reserved:
        raise InputError(f"--set {reserved[0]}=... is not a method option; use the command's own option instead")
    if refine is not None:
        options["refine"] = refine
    release = _release_request(ids_file, epsilon, delta, mechanism, sensitivity, like_dir)
    _forget_and_report(run_dir, ids_file, method, out, workers, options, overwrite, as_json, release)


@click.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path())
@click.option("--ids", "ids_file", required=True, type=click.Path(), help="File with one 0-based row id per line.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for the retrained model.")
@click.option("--overwrite", is_flag=True, help="Replace existing results in --out.")
@_release_options
@JSON_OPTION
def retrain(run_dir, ids_file, out, overwrite, epsilon, delta, mechanism, sensitivity, like_dir, as_json):
    """Retrain RUN_DIR's configuration from scratch without the rows in --ids (the gold standard).

    With --like DIR (or --epsilon, --delta and --sensitivity) the retrained model is published as
    the reference side of a certified release: with the same noise scale sigma as the unlearned
    release in DIR.
    """
    release = _release_request(ids_file, epsilon, delta, mechanism, sensitivity, like_dir)
    _forget_and_report(run_dir, ids_file, "retrain", out, 1, {}, overwrite, as_json, release)


def attach(cli) -> None:
    cli.add_command(forget)
    cli.add_command(retrain)
