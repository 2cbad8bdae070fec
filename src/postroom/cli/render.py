"""Output shared by every command: rich tables for people, ``--json`` for programs.

Text that came from outside (addresses, HELO names, remote replies) is shown as plain
text, never as rich markup, and stripped of control characters, so a client cannot
style or scramble an operator's terminal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.filesize import decimal
from rich.table import Table
from rich.text import Text

__all__ = [
    "Cell",
    "emit_json",
    "format_duration",
    "format_size",
    "format_time",
    "iso_time",
    "print_fields",
    "print_table",
    "printable",
    "status_text",
]

Cell = str | Text | None

STATUS_STYLES = {
    "queued": "cyan",
    "deferred": "yellow",
    "delivered": "green",
    "bounced": "red",
}


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Cell]], *, empty: str) -> None:
    """A table with a header; ``empty`` is printed instead when there are no rows."""
    table = Table(*columns, box=None, header_style="bold", pad_edge=False)
    for row in rows:
        table.add_row(*(_cell(value) for value in row))
    if not table.rows:
        click.echo(empty)
        return
    _console().print(table)


def print_fields(fields: Iterable[tuple[str, Cell]]) -> None:
    """``name  value`` lines, aligned."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for name, value in fields:
        grid.add_row(name, _cell(value))
    _console().print(grid)


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def format_time(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_time(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def printable(text: str) -> str:
    """``text`` with control characters shown as escapes (``\\x1b``), not executed."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def format_duration(seconds: float) -> str:
    """``3d 4h``, ``2h 0m``, ``4m 10s``, ``42s``: the largest unit and the next."""
    left = max(0, int(seconds))
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    first = next(i for i, (_, size) in enumerate(units) if left >= size or size == 1)
    parts = []
    for unit, size in units[first : first + 2]:
        parts.append(f"{left // size}{unit}")
        left %= size
    return " ".join(parts)


def format_size(size: int) -> str:
    return decimal(size)


def _cell(value: Cell) -> Text:
    if value is None:
        return Text("-", style="dim")
    if isinstance(value, Text):
        return value
    return Text(printable(value))


def _console() -> Console:
    # Piped output is not wrapped at 80 columns: each row stays on one line for grep.
    interactive = sys.stdout.isatty()
    return Console(width=None if interactive else 10_000, soft_wrap=not interactive)
