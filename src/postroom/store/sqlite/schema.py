"""Creating and upgrading the schema, in one transaction at each start.

``schema.sql`` is the whole latest schema, written so that running it again changes
nothing. An older database first gets the upgrade steps that ``CREATE ... IF NOT EXISTS``
cannot express (new columns, dropped indexes, data moves), then ``schema.sql`` adds the
new tables and indexes, then ``FILLS`` give new tables what the data already there
implies. A database newer than this code is refused.
"""

from __future__ import annotations

import functools
import importlib.resources
import sqlite3
from collections.abc import Iterator

from postroom.errors import StoreError

__all__ = ["FILLS", "SCHEMA_VERSION", "UPGRADES", "migrate", "schema_version"]

SCHEMA_VERSION = 8

# UPGRADES[n] brings a version-n database to version n + 1 (before schema.sql runs).
UPGRADES: dict[int, str] = {
    1: """
        ALTER TABLE recipients ADD COLUMN claimed_until REAL;
        ALTER TABLE recipients ADD COLUMN delay_warned INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE recipients ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
        UPDATE recipients SET held = 1
            WHERE message_id IN (SELECT id FROM messages WHERE held = 1);
        DROP INDEX IF EXISTS recipients_due;
    """,
    # API key scopes, and sender rights made explicit. A version-2 database made before
    # the API has no api_keys table: it gets the old shape first. Keys made before scopes
    # existed keep what they could do for their own mail: send, and read what they sent.
    # An empty sender list meant "any domain" before version 3 and means "the defaults"
    # since; rows that had it keep their meaning through any_sender.
    2: """
        CREATE TABLE IF NOT EXISTS api_keys (
            name           TEXT PRIMARY KEY,
            key_id         TEXT NOT NULL UNIQUE,
            secret_hash    TEXT NOT NULL,
            sender_domains TEXT NOT NULL DEFAULT '',
            created_at     REAL NOT NULL
        ) WITHOUT ROWID;
        ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT 'send,read';
        ALTER TABLE users ADD COLUMN any_sender INTEGER NOT NULL DEFAULT 0;
        UPDATE users SET any_sender = 1 WHERE sender_domains = '';
        ALTER TABLE api_keys ADD COLUMN any_sender INTEGER NOT NULL DEFAULT 0;
        UPDATE api_keys SET any_sender = 1 WHERE sender_domains = '';
    """,
    # -- dashboard (admins) ------------------------------------------------------------
    # New tables only (admins, admin_actions): schema.sql creates them.
    3: "",
    # -- end dashboard (admins) --------------------------------------------------------
    # >>> events (version 5): new tables only (events, webhook_deliveries, suppressions),
    # which schema.sql creates.
    4: "",
    # <<< events
    # >>> log speed (version 6): new tables, indexes and triggers only (schema.sql)
    5: "",
    # <<< log speed
    # >>> complaints (version 7): indexes only (schema.sql:
    # events_complained, webhook_deliveries_message)
    6: "",
    # <<< complaints
    # >>> recorded routes and DSN links (version 8): the route each attempt took and
    # why; the queue id a DSN reports on (schema.sql: its index). A database made before
    # the email log has no attempts table: it gets the old shape first.
    7: """
        CREATE TABLE IF NOT EXISTS attempts (
            id          INTEGER PRIMARY KEY,
            message_id  TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
            recipient   TEXT NOT NULL,
            at          REAL NOT NULL,
            mailer      TEXT NOT NULL,
            disposition TEXT NOT NULL,
            code        INTEGER,
            enhanced    TEXT,
            text        TEXT NOT NULL,
            host        TEXT,
            ip          TEXT,
            port        INTEGER,
            tls         TEXT,
            provider_id TEXT,
            duration    REAL NOT NULL DEFAULT 0
        );
        ALTER TABLE attempts ADD COLUMN route TEXT;
        ALTER TABLE attempts ADD COLUMN route_reason TEXT;
        ALTER TABLE messages ADD COLUMN dsn_of TEXT;
    """,
    # <<< recorded routes and DSN links
}

# FILLS[n], when upgrading past version n, runs after schema.sql (so on the latest shape).
FILLS: dict[int, str] = {
    # >>> log speed (version 6): the counters the triggers keep from now on, from the data
    # already there: the overview's attempt counts, the queue's waiting recipients.
    5: """
        INSERT INTO attempt_rollups (period, slot, mailer, sender_domain, disposition, count)
            SELECT p.period, CAST(a.at / p.period AS INTEGER) * p.period, a.mailer,
                   lower(substr(m.sender, instr(m.sender, '@') + 1)), a.disposition, count(*)
            FROM attempts a JOIN messages m ON m.id = a.message_id,
                 (SELECT 300 AS period UNION ALL SELECT 3600) p
            WHERE p.period = 3600 OR a.at >= (SELECT max(at) FROM attempts) - 172800
            GROUP BY 1, 2, 3, 4, 5;
        INSERT INTO queue_totals (status, held, recipients)
            SELECT status, held, count(*) FROM recipients
            WHERE status IN ('queued', 'deferred') GROUP BY status, held;
    """,
    # <<< log speed
    # >>> recorded routes and DSN links (version 8): the DSNs postroom made before, linked
    # by the X-Postroom-Queue-ID field of their delivery-status part (the first in the
    # body: the returned message comes after it). Routes taken before are not known.
    7: """
        UPDATE messages SET dsn_of = (
            SELECT CAST(substr(v, 1, instr(v, X'0D') - 1) AS TEXT)
            FROM (SELECT substr(b.data, instr(b.data, CAST('X-Postroom-Queue-ID: ' AS BLOB))
                                        + 21, 64) AS v
                  FROM message_bodies b WHERE b.id = messages.id
                      AND instr(b.data, CAST('X-Postroom-Queue-ID: ' AS BLOB)) > 0)
            WHERE instr(v, X'0D') > 1
        )
        WHERE source_kind = 'dsn';
    """,
    # <<< recorded routes and DSN links
}


@functools.cache
def schema() -> str:
    files = importlib.resources.files("postroom.store.sqlite")
    return files.joinpath("schema.sql").read_text("utf-8")


def migrate(conn: sqlite3.Connection) -> None:
    """Create or upgrade the schema; another process starting at once waits for it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(conn)
        if version is not None:
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database schema version {version} is newer than {SCHEMA_VERSION}:"
                    " upgrade postroom"
                )
            for step in range(version, SCHEMA_VERSION):
                _run(conn, UPGRADES[step])
        _run(conn, schema())
        for step in range(version or SCHEMA_VERSION, SCHEMA_VERSION):
            _run(conn, FILLS.get(step, ""))
        if version is not None and version != SCHEMA_VERSION:
            conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def schema_version(conn: sqlite3.Connection) -> int | None:
    """The database's schema version; None for a new, empty database."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return None
    version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    if not isinstance(version, int) or version < 1:
        raise StoreError(f"database schema version {version!r} is not valid")
    return version


def _run(conn: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it would commit the transaction this runs in.
    for statement in _statements(script):
        conn.execute(statement)


def _statements(script: str) -> Iterator[str]:
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
