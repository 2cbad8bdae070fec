"""Rows of the HTTP API: API keys, message tags and metadata, Idempotency-Key answers."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from postroom.store.models import ApiKeyRecord, IdempotencyRecord, MessageMeta
from postroom.store.rows import (
    ANSWER_COLUMNS,
    answer_of,
    answer_row,
    api_key_row,
    meta_of,
    meta_row,
)
from postroom.store.sqlite.queue import IN_IDS, ids_param

__all__ = [
    "ADD_API_KEY",
    "REMOVE_API_KEY",
    "SET_API_KEY_SENDERS",
    "api_key",
    "api_keys",
    "idempotent",
    "message_meta",
    "save_send_job",
]

_KEY_COLUMNS = "name, key_id, secret_hash, sender_domains, created_at, scopes, any_sender"
ADD_API_KEY = f"INSERT OR IGNORE INTO api_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
REMOVE_API_KEY = "DELETE FROM api_keys WHERE name = ?"
SET_API_KEY_SENDERS = "UPDATE api_keys SET sender_domains = ?, any_sender = ? WHERE name = ?"
# A message deleted before its meta arrives: nothing to describe (the FK would refuse).
_INSERT_META = (
    "INSERT OR REPLACE INTO message_meta (id, message_id, subject, tags, metadata)"
    " SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM messages WHERE id = ?)"
)
_INSERT_ANSWER = (
    "INSERT OR REPLACE INTO idempotency (key_name, key, request_hash, status, body, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


def api_key(key_id: str, conn: sqlite3.Connection) -> ApiKeyRecord | None:
    sql = f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = ?"
    row = conn.execute(sql, (key_id,)).fetchone()
    return None if row is None else api_key_row(row)


def api_keys(conn: sqlite3.Connection) -> list[ApiKeyRecord]:
    sql = f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY name"
    return [api_key_row(row) for row in conn.execute(sql)]


def message_meta(ids: Sequence[str], conn: sqlite3.Connection) -> dict[str, MessageMeta]:
    sql = f"SELECT id, message_id, subject, tags, metadata FROM message_meta WHERE id IN {IN_IDS}"
    return {row[0]: meta_of(row) for row in conn.execute(sql, (ids_param(ids),))}


def idempotent(
    key_name: str, key: str, since: float, conn: sqlite3.Connection
) -> IdempotencyRecord | None:
    sql = (
        f"SELECT {ANSWER_COLUMNS} FROM idempotency"
        " WHERE key_name = ? AND key = ? AND created_at >= ?"
    )
    row = conn.execute(sql, (key_name, key, since)).fetchone()
    return None if row is None else answer_of(row)


def save_send_job(
    meta: MessageMeta, answer: IdempotencyRecord | None, forget_before: float
) -> Callable[[sqlite3.Connection], None]:
    """A writer job: the message's meta and the answer to replay, in one transaction;
    answers older than ``forget_before`` go."""
    meta_params = meta_row(meta)

    def job(conn: sqlite3.Connection) -> None:
        conn.execute(_INSERT_META, meta_params)
        conn.execute("DELETE FROM idempotency WHERE created_at < ?", (forget_before,))
        if answer is not None:
            conn.execute(_INSERT_ANSWER, answer_row(answer))

    return job
