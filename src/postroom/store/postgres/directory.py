"""Directory and API rows on PostgreSQL: local domains, users, API keys, message meta
and Idempotency-Key answers. Rows are built and read back as on SQLite."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from postroom.store.models import ApiKeyRecord, IdempotencyRecord, MessageMeta, UserRecord
from postroom.store.postgres.connection import Conn
from postroom.store.rows import (
    ANSWER_COLUMNS,
    answer_of,
    answer_row,
    api_key_row,
    meta_of,
    meta_row,
    user_row,
)

__all__ = [
    "ADD_API_KEY",
    "ADD_DOMAIN",
    "ADD_USER",
    "REMOVE_API_KEY",
    "REMOVE_DOMAIN",
    "REMOVE_USER",
    "SET_API_KEY_SENDERS",
    "SET_PASSWORD",
    "SET_USER_SENDERS",
    "api_key",
    "api_keys",
    "changed",
    "domains",
    "idempotent",
    "message_meta",
    "recipient",
    "save_send_job",
    "user",
    "users",
]

_USER_COLUMNS = "address, password_hash, sender_domains, created_at, any_sender"
# Domain names compare without case (the domains_name index on lower(name)).
ADD_DOMAIN = "INSERT INTO domains (name, created_at) VALUES (%s, %s) ON CONFLICT DO NOTHING"
REMOVE_DOMAIN = "DELETE FROM domains WHERE lower(name) = lower(%s)"
ADD_USER = f"INSERT INTO users ({_USER_COLUMNS}) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
SET_PASSWORD = "UPDATE users SET password_hash = %s WHERE address = %s"
SET_USER_SENDERS = "UPDATE users SET sender_domains = %s, any_sender = %s WHERE address = %s"
REMOVE_USER = "DELETE FROM users WHERE address = %s"

_KEY_COLUMNS = "name, key_id, secret_hash, sender_domains, created_at, scopes, any_sender"
ADD_API_KEY = (
    f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT DO NOTHING"
)
REMOVE_API_KEY = "DELETE FROM api_keys WHERE name = %s"
SET_API_KEY_SENDERS = "UPDATE api_keys SET sender_domains = %s, any_sender = %s WHERE name = %s"
# A message deleted before its meta arrives: nothing to describe (the FK would refuse).
_INSERT_META = (
    "INSERT INTO message_meta (id, message_id, subject, tags, metadata)"
    " SELECT %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM messages WHERE id = %s)"
    " ON CONFLICT (id) DO UPDATE SET message_id = excluded.message_id,"
    " subject = excluded.subject, tags = excluded.tags, metadata = excluded.metadata"
)
_INSERT_ANSWER = (
    f"INSERT INTO idempotency ({ANSWER_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (key_name, key) DO UPDATE SET request_hash = excluded.request_hash,"
    " status = excluded.status, body = excluded.body, created_at = excluded.created_at"
)


def changed(sql: str, params: tuple[Any, ...], conn: Conn) -> bool:
    """A writer job: did the statement change a row?"""
    return conn.execute(sql, params).rowcount > 0


# -- domains and users --------------------------------------------------------------------
def domains(conn: Conn) -> list[str]:
    return [row[0] for row in conn.execute("SELECT name FROM domains ORDER BY name")]


def recipient(domain: str, address: str, conn: Conn) -> tuple[bool, bool]:
    """RCPT's two questions in one read: is the domain ours, does the user exist?"""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM domains WHERE lower(name) = lower(%s)),"
        " EXISTS (SELECT 1 FROM users WHERE address = %s)",
        (domain, address),
    ).fetchone()
    assert row is not None
    local, known = row
    return bool(local), bool(local and known)


def user(address: str, conn: Conn) -> UserRecord | None:
    sql = f"SELECT {_USER_COLUMNS} FROM users WHERE address = %s"
    row = conn.execute(sql, (address,)).fetchone()
    return None if row is None else user_row(row)


def users(conn: Conn) -> list[UserRecord]:
    sql = f"SELECT {_USER_COLUMNS} FROM users ORDER BY address"
    return [user_row(row) for row in conn.execute(sql)]


# -- API keys, meta and answers -----------------------------------------------------------
def api_key(key_id: str, conn: Conn) -> ApiKeyRecord | None:
    sql = f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = %s"
    row = conn.execute(sql, (key_id,)).fetchone()
    return None if row is None else api_key_row(row)


def api_keys(conn: Conn) -> list[ApiKeyRecord]:
    sql = f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY name"
    return [api_key_row(row) for row in conn.execute(sql)]


def message_meta(ids: Sequence[str], conn: Conn) -> dict[str, MessageMeta]:
    sql = "SELECT id, message_id, subject, tags, metadata FROM message_meta WHERE id = ANY(%s)"
    return {row[0]: meta_of(row) for row in conn.execute(sql, (list(ids),))}


def idempotent(key_name: str, key: str, since: float, conn: Conn) -> IdempotencyRecord | None:
    sql = (
        f"SELECT {ANSWER_COLUMNS} FROM idempotency"
        " WHERE key_name = %s AND key = %s AND created_at >= %s"
    )
    row = conn.execute(sql, (key_name, key, since)).fetchone()
    return None if row is None else answer_of(row)


def save_send_job(
    meta: MessageMeta, answer: IdempotencyRecord | None, forget_before: float
) -> Callable[[Conn], None]:
    """A writer job: the message's meta and the answer to replay, in one transaction;
    answers older than ``forget_before`` go."""
    meta_params = meta_row(meta)

    def job(conn: Conn) -> None:
        conn.execute(_INSERT_META, meta_params)
        conn.execute("DELETE FROM idempotency WHERE created_at < %s", (forget_before,))
        if answer is not None:
            conn.execute(_INSERT_ANSWER, answer_row(answer))

    return job
