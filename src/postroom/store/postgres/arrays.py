"""Many rows in one statement: a table's rows passed as one array per column.

The text of such a statement is the same however many rows go (prepared once, planned
once), and every row is handled by one executor run: one round trip, and one run of a
statement trigger, for a whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["EVENT_COLUMNS", "FLOAT", "TEXT", "columns_of", "names", "unnest"]

TEXT, FLOAT = "text", "double precision"
# outbox.event_params' columns and their types.
EVENT_COLUMNS = (
    ("id", TEXT), ("type", TEXT), ("at", FLOAT), ("queue_id", TEXT), ("recipient", TEXT),
    ("mailer", TEXT), ("reply", TEXT), ("reason", TEXT), ("origin", TEXT),
    ("details", TEXT),
)  # fmt: skip


def unnest(alias: str, columns: Sequence[tuple[str, str]], *, ordinal: bool = False) -> str:
    """A table of rows passed as one array per column: ``unnest(%b::type[], ...)``
    (binary: a body goes as its bytes, not as hex text to be quoted and escaped);
    ``ordinal``: with the rows' order as one more column, ``ordinal``."""
    arrays = ", ".join(f"%b::{kind}[]" for _, kind in columns)
    column_names = [name for name, _ in columns] + (["ordinal"] if ordinal else [])
    order = " WITH ORDINALITY" if ordinal else ""
    return f"unnest({arrays}){order} AS {alias}({', '.join(column_names)})"


def names(columns: Sequence[tuple[str, str]], alias: str = "") -> str:
    return ", ".join(f"{alias}{name}" for name, _ in columns)


def columns_of(
    rows: Sequence[Sequence[Any]], columns: Sequence[tuple[str, str]]
) -> list[list[Any]]:
    """``unnest``'s parameters: the rows turned into one list per column."""
    return [list(column) for column in zip(*rows, strict=True)] or [[] for _ in columns]
