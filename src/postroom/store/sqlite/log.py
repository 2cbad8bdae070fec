"""The email log: messages newest first, filtered, continued by cursor (reader side)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from postroom.store.logsearch import LogDialect, nth_newest, search
from postroom.store.models import LogQuery, StoredMessage
from postroom.store.sqlite.queue import select_messages

__all__ = ["DIALECT", "newest_before", "query"]

_DOMAIN = "substr({0}, instr({0}, '@') + 1)"
# The index expressions are schema.sql's recipients_address and recipients_domain.
DIALECT = LogDialect(
    mark="?",
    true="1",
    held="m.held = 1",
    contains=lambda c: f"instr(unicode_lower({c}), ?) > 0",
    lower=lambda c: f"unicode_lower({c})",
    address_key="lower(r.address)",
    domain_key=f"lower({_DOMAIN.format('r.address')})",
    domain=_DOMAIN.format,
)


def query(q: LogQuery, conn: sqlite3.Connection) -> list[StoredMessage]:
    def select(where: str, params: Sequence[Any], limit: int) -> list[StoredMessage]:
        return select_messages(conn, where, params, limit=limit, newest_first=True)

    return search(q, DIALECT, select, conn)


def newest_before(cursor: str | None, count: int, conn: sqlite3.Connection) -> str | None:
    return nth_newest(conn, DIALECT, cursor, count)
