"""Terminal output: results on stdout (plain JSON with --json), progress and notes on stderr."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

PIPE_WIDTH = 200
"""Table width when output goes to a pipe or a CI log (no terminal, no COLUMNS): rich's 80 would fold
job ids and keys across lines."""


def _width(stream: TextIO) -> int | None:
    """The terminal's width (rich finds it), COLUMNS when set, else PIPE_WIDTH."""
    if stream.isatty() or os.environ.get("COLUMNS"):
        return None
    return PIPE_WIDTH


# soft_wrap: a message or an error is one line however long; only tables are laid out to the width.
out = Console(highlight=False, soft_wrap=True, width=_width(sys.stdout))
err = Console(stderr=True, highlight=False, soft_wrap=True, width=_width(sys.stderr))


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def note(message: str) -> None:
    err.print(message)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}")


def table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> None:
    grid = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    out.print(grid)


def progress(transient: bool = False) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=transient,
    )


def short_time(value: str | None) -> str:
    if not value:
        return ""
    moment = datetime.fromisoformat(value)
    return moment.astimezone().strftime("%H:%M:%S")


def seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}s"


def size(value: int | None) -> str:
    if value is None:
        return ""
    number = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if number < 1024 or unit == "GiB":
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return str(value)
