"""Progress bars for long work (rich), silent when stderr is not a terminal or when disabled.

Chunked passes over the data report the rows they read with :func:`rows_read`; the innermost
bar on screen shows the running count, so a long pass (seconds at HIGGS size) visibly moves.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Iterator

_state = {"enabled": None}
_shown: list[Callable[..., None]] = []  # advance functions of the bars on screen, innermost last


def set_progress(enabled: bool | None) -> None:
    """Force progress bars on or off; ``None`` restores the default (on for a terminal)."""
    _state["enabled"] = enabled


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Hide progress bars inside the block (restoring the previous setting after it)."""
    previous = _state["enabled"]
    set_progress(False)
    try:
        yield
    finally:
        set_progress(previous)


def progress_enabled() -> bool:
    if _state["enabled"] is not None:
        return bool(_state["enabled"])
    if os.environ.get("MINIUNLEARN_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()


def rows_read(n: int) -> None:
    """Count ``n`` rows read by a chunked pass on the innermost bar (a no-op when none is shown)."""
    if _shown:
        _shown[-1](0, rows_read=n)


def _count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit} rows read"
    return f"{n} rows read"


@contextlib.contextmanager
def progress_bar(description: str, total: float | None, unit: str = "") -> Iterator[Callable[..., None]]:
    """Yield ``advance(amount=1, **fields)``; shows a bar with rate and ETA on a terminal."""
    if not progress_enabled():
        yield lambda amount=1, **_: None
        return
    # imported here: rich takes ~0.15 s to load and is needed only when a bar is shown (on a terminal)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
               TextColumn("[dim]{task.fields[rows]}")]
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total, info="", rows="")
        rows = [0]

        def advance(amount: float = 1, info: str | None = None, rows_read: int = 0, **_) -> None:
            fields = {} if info is None else {"info": info}
            if rows_read:
                rows[0] += rows_read
                fields["rows"] = _count(rows[0])
            progress.update(task, advance=amount, **fields)

        _shown.append(advance)
        try:
            yield advance
        finally:
            _shown.remove(advance)
