"""The email log: messages newest first, filtered, continued by cursor (reader side)."""

from __future__ import annotations

import sqlite3
from typing import Any

from postroom.store.models import LogQuery, StoredMessage
from postroom.store.rows import HELD
from postroom.store.sqlite.queue import select_messages

__all__ = ["query"]


def query(q: LogQuery, conn: sqlite3.Connection) -> list[StoredMessage]:
    """Walk messages from the newest (the primary key, backwards) and keep those that
    match, until ``limit``. "held" reads the small messages_held index instead."""
    where: list[str] = []
    params: list[Any] = []
    if q.cursor is not None:
        where.append("m.id < ?")
        params.append(q.cursor)
    if q.since is not None:
        where.append("m.received_at >= ?")
        params.append(q.since)
    if q.status == HELD:
        where.append("m.held = 1")
    elif q.status is not None:
        where.append(
            "EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.status = ?)"
        )
        params.append(q.status)
    if q.sender:
        where.append("instr(unicode_lower(m.sender), ?) > 0")
        params.append(q.sender.lower())
    if q.source_kind is not None:
        where.append("m.source_kind = ?")
        params.append(q.source_kind)
    if q.principal is not None:
        where.append("m.principal = ?")
        params.append(q.principal)
    if q.to:
        where.append(
            "EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id"
            " AND instr(unicode_lower(r.address), ?) > 0)"
        )
        params.append(q.to.lower())
    return select_messages(
        conn, " AND ".join(where) or "1", params, limit=q.limit, newest_first=True
    )
