"""``miniunlearn bench`` and ``miniunlearn demo``."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import click
from rich.table import Table

from miniunlearn.commands.output import CONTEXT, JSON_OPTION, console
from miniunlearn.core.errors import InputError
from miniunlearn.core.storage import read_json, to_json
from miniunlearn.distributed import require_one_process
from miniunlearn.experiments.bench import PRESETS, run_bench
from miniunlearn.experiments.privacy_report import ulira_summary
from miniunlearn.experiments.report import summarize, write_report


def _split(values, cast):
    out = []
    for value in values:
        out += [cast(v) for v in str(value).split(",") if v.strip()]
    return out


def _command_line(**given) -> str:
    """The command as given, so a report names the settings its rows were computed with."""
    words = ["miniunlearn", "bench"]
    for name, value in given.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False or value == ():  # (0 is a value: --exactness-shadows 0)
            continue
        if value is True:
            words.append(flag)
        else:
            words += [flag, ",".join(value) if isinstance(value, tuple) else str(value)]
    return " ".join(shlex.quote(w) for w in words)


def _ulira_lines(path: str) -> list[str]:
    results = read_json(Path(path), "privacy results")
    if not isinstance(results, dict) or "datasets" not in results or "config" not in results:
        raise InputError(f"--ulira-from {path}: not a privacy benchmark's results.json (no datasets and config)")
    return ulira_summary(results, str(path))


def attach(cli) -> None:
    @cli.command(context_settings=CONTEXT)
    @click.option("--preset", type=click.Choice(["quick", "paper", "mini", "demo"]), default="quick", show_default=True,
                  help="quick: small sets, all methods (minutes). paper: Fashion-MNIST, covtype- and HIGGS-shaped "
                       "sets, 6 ratios, 3 seeds (hours). mini: Mini-Unlearning against retraining only.")
    @click.option("--datasets", multiple=True, help="Override the preset's datasets (comma-separated specs).")
    @click.option("--ratios", multiple=True, help="Override the ratios (fractions, comma-separated).")
    @click.option("--methods", multiple=True, help="Override the methods (NAME[:key=value], comma-separated).")
    @click.option("--seeds", multiple=True, help="Override the seeds (comma-separated).")
    @click.option("--exactness-shadows", type=int, default=None,
                  help="Shadow models of the exactness test (fixed rows; 0 turns it off).")
    @click.option("--no-attacks", is_flag=True, help="Skip the population membership attacks.")
    @click.option("--threads", type=int, default=None, help="torch threads (default: torch's own choice).")
    @click.option("--out", required=True, type=click.Path(file_okay=False),
                  help="Output folder (results.json, report.md, plots, cached runs). Rerun to resume.")
    @click.option("--ulira-from", type=click.Path(dir_okay=False, exists=True), default=None,
                  help="A privacy benchmark's results.json (benchmarks/privacy.py): the report quotes its population "
                       "U-LiRA.")
    @JSON_OPTION
    def bench(preset, datasets, ratios, methods, seeds, exactness_shadows, no_attacks, threads, out, ulira_from,
              as_json):
        """Run every dataset x ratio x method x seed against retraining; write results.json and report.md.

        Finished rows are skipped, so an interrupted benchmark resumes where it stopped.
        """
        require_one_process("bench")
        config = dataclasses.replace(PRESETS[preset])
        if datasets:
            config.datasets = _split(datasets, str)
        if ratios:
            config.ratios = _split(ratios, float)
        if methods:
            config.methods = _split(methods, str)
        if seeds:
            config.seeds = _split(seeds, int)
        if exactness_shadows is not None:
            config.exactness_shadows = exactness_shadows
        if no_attacks:
            config.population_attacks = False
        log = (lambda *_: None) if as_json else (lambda msg: click.echo(msg, err=True))
        extra = _ulira_lines(ulira_from) if ulira_from else []
        rows = run_bench(config, out, threads=threads, log=log)
        command = _command_line(preset=preset, datasets=datasets, ratios=ratios, methods=methods, seeds=seeds,
                                exactness_shadows=exactness_shadows, no_attacks=no_attacks, threads=threads, out=out,
                                ulira_from=ulira_from)
        report = write_report(rows, out, f"miniunlearn bench, preset {preset}", command, extra)
        if as_json:
            click.echo(to_json(rows))
        else:
            click.echo(f"report: {report}")

    @cli.command(context_settings=CONTEXT)
    @click.option("--out", default="demo-output", show_default=True, type=click.Path(file_okay=False),
                  help="Where the demo writes its run, results.json and report.md (rerun to resume).")
    @click.option("--tol", type=click.FloatRange(1e-12, 1, min_open=False), default=1e-3, show_default=True,
                  help="Mini-Unlearning refines until its certified distance to the retrained model is at most "
                       "TOL x ||w - w_T||.")
    @JSON_OPTION
    def demo(out, tol, as_json):
        """Forget 1, 10 and 50 % of a 60,000-row training set, certified, and compare with retraining.

        Trains multinomial logistic regression on a seeded synthetic set (40 features, 10 classes; retraining
        takes seconds), then for each share of rows forgets them with Mini-Unlearning (--tol) and by
        retraining from scratch. The table shows the certificate -- a proved bound on how far the
        unlearned model is from the retrained one -- beside the true distance, the accuracy, the time
        and what a loss-based membership attack sees. Other methods: miniunlearn bench.
        With --json: {"out", "report", "rows"} on stdout, one row per share and method as in results.json.
        """
        require_one_process("demo")
        config = dataclasses.replace(PRESETS["demo"])
        config.methods = [f"mini:tol={tol:g}" if m == "mini" else m for m in config.methods]
        log = (lambda *_: None) if as_json else (lambda msg: click.echo(msg, err=True))
        rows = run_bench(config, out, log=log)
        report = write_report(rows, out, "miniunlearn demo", f"miniunlearn demo --tol {tol:g} --out {out}")
        if as_json:
            click.echo(to_json({"out": str(out), "report": str(report), "rows": rows}))
            return
        _print_demo(summarize(rows), rows)
        click.echo(f"\nfull report: {report}")


def _print_demo(summary: dict, rows: list[dict]) -> None:
    for dataset, cells in summary.items():
        table = Table(title=f"{dataset}: unlearning against retraining (same process, same threads)",
                      title_justify="left")
        for column in ("forgotten", "method", "certified ||w - w_R|| <=", "true ||w - w_R||", "residual",
                       "test acc", "retrain acc", "time s", "speedup", "loss-MIA AUC (retrain)"):
            table.add_column(column, justify="left" if column == "method" else "right")
        for (method, ratio), c in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            def f(key, fmt):
                value = c.get(key)
                return "–" if value is None else fmt.format(value)

            certificate = "exact" if method == "retrain" else f("certificate", "{:.1e}")
            table.add_row(f"{ratio:.0%}", method, certificate, f("l2_to_retrain", "{:.1e}"),
                          f("relative_residual", "{:.1e}"), f("test_acc", "{:.4f}"), f("test_acc_retrain", "{:.4f}"),
                          f("time_s", "{:.2f}"), f("speedup_vs_retrain", "{:.0f}x"),
                          f("mia_loss_auc", "{:.3f}") + " (" + f("mia_loss_auc_retrain", "{:.3f}") + ")")
        console().print(table)
    console().print(_in_words(rows))


def _in_words(rows: list[dict]) -> str:
    """One row of the table read aloud: what the certificate promises."""
    mini = [r for r in rows if r["method"].startswith("mini") and r.get("certificate") is not None]
    if not mini:
        return ""
    r = sorted(mini, key=lambda row: abs(row["ratio"] - 0.1))[0]
    return (f"How to read it: after forgetting {r['ratio']:.0%} of the rows, Mini-Unlearning's parameters are "
            f"proved to lie within {r['certificate']:.1e} (Euclidean distance over all parameters) of the model "
            f"that retraining from scratch would produce -- a bound computed from gradients and curvature on the "
            f"kept rows, without retraining. Retraining was run here only to check it: the true distance is "
            f"{r['l2_to_retrain']:.1e}, and the model moved {r['l2_to_retrain'] / r['relative_residual']:.1e} "
            f"when the rows were removed (residual = true distance / that move; 0 means exactly retrained). "
            f"It took {r['time_s']:.2f} s against {r['retrain_time_s']:.1f} s for retraining. A loss-based "
            f"membership attack near 0.5 cannot tell forgotten rows from unseen ones.")
