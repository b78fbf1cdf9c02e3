"""``miniunlearn compact RUN``: make the optimum on the kept rows the run's new base and purge the rest."""

from __future__ import annotations

import click

from miniunlearn.commands.output import CONTEXT, JSON_OPTION, console, emit, human_bytes, kv_table
from miniunlearn.distributed import require_one_process
from miniunlearn.runs import open_run
from miniunlearn.service.compact import compact as compact_fn
from miniunlearn.service.compact import set_policy


def attach(cli) -> None:
    cli.add_command(compact)


@click.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path())
@click.option("--policy", type=click.Choice(["never", "auto", "always"]), default=None,
              help="Set the run's default for later forget requests (auto: compact once 10 % of the base's "
                   "rows are forgotten since it was made, or the latest certificate exceeds 1 % of the "
                   "distance moved) instead of compacting now.")
@JSON_OPTION
def compact(run_dir, policy, as_json):
    """Solve F_R exactly on the rows kept so far, starting from the latest unlearned model, and make
    that optimum -- with its history rebuilt from the kept rows -- RUN_DIR's new base.

    \b
    Afterwards model, history, keys and data fingerprint describe the kept rows only: the files of
    the previous base and every recorded model computed from it are removed (listed), and the
    ledger records the compaction (ids, keys and hashes only). The forgotten rows may then be
    deleted from the data file; later requests number the rows of the new base (keys unchanged).
    Exit 2 when nothing was forgotten since the last compaction, 3 when the solver does not converge.
    """
    require_one_process("compact")
    run = open_run(run_dir)
    if policy is not None:
        set_policy(run, policy)
        emit({"run": str(run.path), "policy": policy}, as_json,
             lambda p: console().print(f"{p['run']}: forget requests now compact with policy {p['policy']!r}"))
        return
    report = compact_fn(run)
    emit(report, as_json, _human)


def _human(p: dict) -> None:
    solve, history = p["solve"], p.get("history") or {}
    rows = [("base", f"generation {p['previous_generation']} -> {p['generation']} ({p['base_dir']})"),
            ("rows", f"{p['n_before']} -> {p['n_after']} ({p['n_dropped']} dropped; {p['n_dropped_total']} by all "
                     "compactions)"),
            ("preprocessing", p["preprocessing"]),
            ("solve", f"{solve['iterations']} Newton iterations from {solve['warm_start']['from']}, "
                      f"||grad F_R|| {solve['start_grad_norm']:.2e} -> {solve['grad_norm']:.2e}, "
                      f"{solve['time_s']:.2f} s"),
            ("history", f"{history.get('profile', '-')} curvature, {history.get('time_s', 0.0):.2f} s"),
            ("time", f"{p['time_s']:.2f} s"), ("peak memory", human_bytes(p["peak_rss_bytes"]))]
    out = console()
    out.print(kv_table("compacted", rows))
    out.print(f"removed ({len(p['removed'])}):" if p["removed"] else "removed: nothing")
    for path in p["removed"]:
        out.print(f"  {path}")
