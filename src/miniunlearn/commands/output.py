"""How every command prints: JSON on ``--json``, rich tables for people, one number format."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from miniunlearn.core.storage import to_json

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Machine-readable output (strict JSON) on stdout.")


def emit(payload: dict, as_json: bool, human) -> None:
    """Print ``payload`` as JSON or through ``human(payload)``."""
    if as_json:
        click.echo(to_json(payload))
    else:
        human(payload)


def console():
    """A rich console; when stdout is not a terminal (pipes, CI logs) tables get 140 columns, not 80."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 140)


def kv_table(title: str, rows: list[tuple[str, object]]):
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
    if value is None:
        return "–"
    return str(value)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
