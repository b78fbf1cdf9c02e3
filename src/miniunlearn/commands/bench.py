"""``miniunlearn bench`` and ``miniunlearn demo``."""

from __future__ import annotations

import click

from miniunlearn.commands.output import CONTEXT, JSON_OPTION, console


def _split(values, cast):
    out = []
    for value in values:
        out += [cast(v) for v in str(value).split(",") if v.strip()]
    return out


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
    @JSON_OPTION
    def bench(preset, datasets, ratios, methods, seeds, exactness_shadows, no_attacks, threads, out, as_json):
        """Run every dataset x ratio x method x seed against retraining; write results.json and report.md.

        Finished rows are skipped, so an interrupted benchmark resumes where it stopped.
        """
        import dataclasses

        from miniunlearn.experiments.bench import PRESETS, run_bench
        from miniunlearn.experiments.report import write_report

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
        rows = run_bench(config, out, threads=threads, log=log)
        command = "miniunlearn bench --preset " + preset + f" --out {out}"
        report = write_report(rows, out, f"miniunlearn bench, preset {preset}", command)
        if as_json:
            from miniunlearn.core.storage import to_json

            click.echo(to_json(rows))
        else:
            click.echo(f"report: {report}")

    @cli.command(context_settings=CONTEXT)
    @click.option("--out", default="demo-output", show_default=True, type=click.Path(file_okay=False),
                  help="Where the demo writes its runs, results.json and report.md.")
    def demo(out):
        """Forget 10, 30 and 50 % of the digits data with Mini-Unlearning, DeltaGrad and retraining.

        Trains a converged and an SGD run on scikit-learn's digits, then prints how far each method
        lands from retraining, how long it took, and what a loss-based membership attack sees.
        """
        from miniunlearn.experiments.bench import PRESETS, run_bench
        from miniunlearn.experiments.report import summarize, write_report

        rows = run_bench(PRESETS["demo"], out, log=lambda msg: click.echo(msg, err=True))
        report = write_report(rows, out, "miniunlearn demo", "miniunlearn demo")
        _print_demo(summarize(rows))
        click.echo(f"\nfull report: {report}")


def _print_demo(summary: dict) -> None:
    from rich.table import Table

    
    for dataset, cells in summary.items():
        table = Table(title=f"{dataset}: unlearning against retraining (same process, same threads)",
                      title_justify="left")
        for column in ("ratio", "method", "residual", "test acc", "retrain acc", "time s", "speedup",
                       "loss-MIA AUC", "retrain"):
            table.add_column(column, justify="right" if column not in ("method",) else "left")
        for (method, ratio), c in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            def f(key, fmt):
                value = c.get(key)
                return "–" if value is None else fmt.format(value)

            table.add_row(f"{ratio:.0%}", method, f("relative_residual", "{:.1e}"), f("test_acc", "{:.4f}"),
                          f("test_acc_retrain", "{:.4f}"), f("time_s", "{:.3f}"), f("speedup_vs_retrain", "{:.1f}x"),
                          f("mia_loss_auc", "{:.3f}"), f("mia_loss_auc_retrain", "{:.3f}"))
        console().print(table)
    console().print("residual = ||w - w_R|| / ||w_T - w_R|| (0: exactly retrained, 1: nothing removed). "
                    "DeltaGrad is measured on an SGD run against its retrained trajectory.")
