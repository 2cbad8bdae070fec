"""Rows of the HTTP API: API keys, message tags and metadata, Idempotency-Key answers."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from postroom.store.models import ApiKeyRecord, IdempotencyRecord, MessageMeta
from postroom.store.sqlite.queue import IN_IDS, ids_param

__all__ = [
    "ADD_API_KEY",
    "REMOVE_API_KEY",
    "SET_API_KEY_SENDERS",
    "api_key",
    "api_key_params",
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
_ANSWER_COLUMNS = "key_name, key, request_hash, status, body, created_at"


def api_key_params(record: ApiKeyRecord) -> tuple[Any, ...]:
    return (
        record.name,
        record.key_id,
        record.secret_hash,
        ",".join(record.sender_domains),
        record.created_at,
        ",".join(record.scopes),
        int(record.any_sender),
    )


def api_key_row(row: tuple[Any, ...]) -> ApiKeyRecord:
    name, key_id, secret_hash, domains, created_at, scopes, any_sender = row
    return ApiKeyRecord(
        name,
        key_id,
        secret_hash,
        tuple(filter(None, domains.split(","))),
        created_at,
        tuple(filter(None, scopes.split(","))),
        any_sender=bool(any_sender),
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
    found = {}
    for queue_id, message_id, subject, tags, metadata in conn.execute(sql, (ids_param(ids),)):
        found[queue_id] = MessageMeta(
            queue_id,
            message_id,
            subject,
            tuple(json.loads(tags)),
            tuple(json.loads(metadata).items()),
        )
    return found


def idempotent(
    key_name: str, key: str, since: float, conn: sqlite3.Connection
) -> IdempotencyRecord | None:
    sql = (
        f"SELECT {_ANSWER_COLUMNS} FROM idempotency"
        " WHERE key_name = ? AND key = ? AND created_at >= ?"
    )
    row = conn.execute(sql, (key_name, key, since)).fetchone()
    if row is None:
        return None
    key_name, key, request_hash, status, body, created_at = row
    return IdempotencyRecord(key_name, key, request_hash, status, bytes(body), created_at)


def save_send_job(
    meta: MessageMeta, answer: IdempotencyRecord | None, forget_before: float
) -> Callable[[sqlite3.Connection], None]:
    """A writer job: the message's meta and the answer to replay, in one transaction;
    answers older than ``forget_before`` go."""

    def job(conn: sqlite3.Connection) -> None:
        conn.execute(
            _INSERT_META,
            (
                meta.id,
                meta.message_id,
                meta.subject,
                json.dumps(list(meta.tags)),
                json.dumps(dict(meta.metadata)),
                meta.id,
            ),
        )
        conn.execute("DELETE FROM idempotency WHERE created_at < ?", (forget_before,))
        if answer is not None:
            conn.execute(
                _INSERT_ANSWER,
                (
                    answer.key_name,
                    answer.key,
                    answer.request_hash,
                    answer.status,
                    answer.body,
                    answer.created_at,
                ),
            )

    return job
