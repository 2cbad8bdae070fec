"""Directory rows: local domains and users."""

from __future__ import annotations

import sqlite3
from typing import Any

from postroom.store.models import UserRecord
from postroom.store.rows import user_row

__all__ = [
    "ADD_DOMAIN",
    "ADD_USER",
    "IS_LOCAL_DOMAIN",
    "RECIPIENT",
    "REMOVE_DOMAIN",
    "REMOVE_USER",
    "SET_PASSWORD",
    "SET_USER_SENDERS",
    "changed",
    "domains",
    "exists",
    "recipient",
    "user",
    "users",
]

_USER_COLUMNS = "address, password_hash, sender_domains, created_at, any_sender"

ADD_DOMAIN = "INSERT OR IGNORE INTO domains (name, created_at) VALUES (?, ?)"
REMOVE_DOMAIN = "DELETE FROM domains WHERE name = ?"
IS_LOCAL_DOMAIN = "SELECT 1 FROM domains WHERE name = ?"
# RCPT's two questions in one read: is the domain ours, and does the user exist?
RECIPIENT = (
    "SELECT EXISTS (SELECT 1 FROM domains WHERE name = ?),"
    " EXISTS (SELECT 1 FROM users WHERE address = ?)"
)
ADD_USER = f"INSERT OR IGNORE INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
SET_PASSWORD = "UPDATE users SET password_hash = ? WHERE address = ?"
SET_USER_SENDERS = "UPDATE users SET sender_domains = ?, any_sender = ? WHERE address = ?"
REMOVE_USER = "DELETE FROM users WHERE address = ?"


def changed(sql: str, params: tuple[Any, ...], conn: sqlite3.Connection) -> bool:
    """A writer job: did the statement change a row?"""
    return conn.execute(sql, params).rowcount > 0


def exists(sql: str, params: tuple[Any, ...], conn: sqlite3.Connection) -> bool:
    return conn.execute(sql, params).fetchone() is not None


def recipient(domain: str, address: str, conn: sqlite3.Connection) -> tuple[bool, bool]:
    local, known = conn.execute(RECIPIENT, (domain, address)).fetchone()
    return bool(local), bool(local and known)


def domains(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT name FROM domains ORDER BY name")]


def user(address: str, conn: sqlite3.Connection) -> UserRecord | None:
    sql = f"SELECT {_USER_COLUMNS} FROM users WHERE address = ?"
    row = conn.execute(sql, (address,)).fetchone()
    return None if row is None else user_row(row)


def users(conn: sqlite3.Connection) -> list[UserRecord]:
    sql = f"SELECT {_USER_COLUMNS} FROM users ORDER BY address"
    return [user_row(row) for row in conn.execute(sql)]
