"""Progress bars for long work (rich), silent when stderr is not a terminal or when disabled."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Iterator

_state = {"enabled": None}


def set_progress(enabled: bool | None) -> None:
    """Force progress bars on or off; ``None`` restores the default (on for a terminal)."""
    _state["enabled"] = enabled


def progress_enabled() -> bool:
    if _state["enabled"] is not None:
        return bool(_state["enabled"])
    if os.environ.get("MINIUNLEARN_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(description: str, total: float | None, unit: str = "") -> Iterator[Callable[..., None]]:
    """Yield ``advance(amount=1, **fields)``; shows a bar with rate and ETA on a terminal."""
    if not progress_enabled():
        yield lambda amount=1, **_: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total, info="")

        def advance(amount: float = 1, info: str | None = None, **_) -> None:
            progress.update(task, advance=amount, **({"info": info} if info is not None else {}))

        yield advance
