"""``miniunlearn methods``: the registered unlearning methods and their options."""

from __future__ import annotations

import click
from rich.table import Table

from miniunlearn.commands.output import CONTEXT, JSON_OPTION, console, emit
from miniunlearn.methods import get_method, method_names


@click.command(context_settings=CONTEXT)
@JSON_OPTION
def methods(as_json: bool):
    """List the unlearning methods and their options."""
    rows = [{"name": n, "summary": get_method(n).summary, "modes": list(get_method(n).modes),
             "options": get_method(n).option_help()} for n in method_names()]

    def human(p):
        table = Table("method", "runs", "summary / options (defaults)")
        for r in p["methods"]:
            opts = "\n".join(f"{k}={v['default']!r}: {v['help']} ({v['allowed']})" for k, v in r["options"].items())
            table.add_row(r["name"], ", ".join(r["modes"]), r["summary"] + (f"\n[dim]{opts}[/dim]" if opts else ""))
        console().print(table)

    emit({"methods": rows}, as_json, human)


def attach(cli) -> None:
    cli.add_command(methods)
