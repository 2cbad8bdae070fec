"""The email log: messages newest first, filtered, continued by cursor (reader side)."""

from __future__ import annotations

import sqlite3

from postroom.store.models import LogQuery, StoredMessage
from postroom.store.rows import log_conditions
from postroom.store.sqlite.queue import select_messages

__all__ = ["query"]


def query(q: LogQuery, conn: sqlite3.Connection) -> list[StoredMessage]:
    """Walk messages from the newest (the primary key, backwards) and keep those that
    match, until ``limit``. "held" reads the small messages_held index instead."""
    where, params = log_conditions(
        q, mark="?", contains=lambda c: f"instr(unicode_lower({c}), ?) > 0", held="m.held = 1"
    )
    return select_messages(conn, where or "1", params, limit=q.limit, newest_first=True)
