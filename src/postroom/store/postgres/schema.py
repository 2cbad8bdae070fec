"""Creating and upgrading the PostgreSQL schema, in one transaction.

As on SQLite (``postroom.store.sqlite.schema``): ``schema.sql`` is the whole latest
schema and running it again changes nothing; ``UPGRADES[n]`` brings a version-n database
to version n + 1 before it runs, and ``FILLS[n]`` then fills new tables from the data.
Nodes starting together take an advisory lock, so one of them creates or upgrades the
schema and the others then find it done. A database
newer than this code, or older than any upgrade it knows, is refused with one line.
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Any

import psycopg

from postroom.errors import StoreError

__all__ = ["FILLS", "SCHEMA_VERSION", "UPGRADES", "migrate", "schema_version"]

SCHEMA_VERSION = 9
# UPGRADES[n] brings a version-n database to version n + 1 (before schema.sql runs).
UPGRADES: dict[int, str] = {
    # ---- version 2: shared limits; schema.sql's block of version 2 makes the tables
    1: "SELECT 1",
    # ---- end of version 2
    # ---- version 3: the dashboard's admins; schema.sql's block of version 3 makes the tables
    2: "SELECT 1",
    # ---- end of version 3
}
# ---- schema version 4: a body above inline_body_max is a large object (schema.sql
# makes the trigger that unlinks it with its row) ----
UPGRADES[3] = """
ALTER TABLE message_bodies ALTER COLUMN data DROP NOT NULL;
ALTER TABLE message_bodies ADD COLUMN IF NOT EXISTS large oid;
ALTER TABLE message_bodies DROP CONSTRAINT IF EXISTS message_bodies_one_place;
ALTER TABLE message_bodies ADD CONSTRAINT message_bodies_one_place
    CHECK ((data IS NULL) <> (large IS NULL));
"""
# ---- end of schema version 4 ----
# ---- version 5 (events): new tables only (events, webhook_deliveries, suppressions),
# which schema.sql creates.
UPGRADES[4] = "SELECT 1"
# ---- end of version 5
# FILLS[n], when upgrading past version n, runs after schema.sql (so on the latest shape).
FILLS: dict[int, str] = {}
# ---- version 6 (log speed): new tables, indexes and triggers (schema.sql); then the
# counters those triggers keep from now on, from the data already there: the overview's
# attempt counts and the queue's waiting recipients.
UPGRADES[5] = "SELECT 1"
FILLS[5] = """
INSERT INTO attempt_rollups (period, slot, mailer, sender_domain, disposition, count)
    SELECT p.period, (floor(a.at / p.period) * p.period)::bigint, a.mailer,
           lower(split_part(m.sender, '@', 2)), a.disposition, count(*)
    FROM attempts a JOIN messages m ON m.id = a.message_id,
         (VALUES (300), (3600)) AS p (period)
    WHERE p.period = 3600 OR a.at >= (SELECT max(at) FROM attempts) - 172800
    GROUP BY 1, 2, 3, 4, 5;
INSERT INTO queue_totals (status, held, recipients)
    SELECT status, held, count(*) FROM recipients
    WHERE status IN ('queued', 'deferred') GROUP BY status, held;
"""
# ---- end of version 6
# ---- version 7 (complaints): indexes only (schema.sql:
# events_complained, webhook_deliveries_message)
UPGRADES[6] = "SELECT 1"
# ---- end of version 7
# ---- version 8 (directory cache): triggers only (schema.sql: domains_changed,
# users_changed NOTIFY postroom_directory on every change)
UPGRADES[7] = "SELECT 1"
# ---- end of version 8
# ---- version 9 (recorded routes and DSN links): the route each attempt took and why;
# the queue id a DSN reports on (schema.sql: its index). The DSNs made before are linked
# by the X-Postroom-Queue-ID field of their delivery-status part, the first in the body
# (a large body is searched in its first megabyte). Routes taken before are not known.
UPGRADES[8] = """
ALTER TABLE attempts ADD COLUMN IF NOT EXISTS route text;
ALTER TABLE attempts ADD COLUMN IF NOT EXISTS route_reason text;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS dsn_of text COLLATE "C";
"""
FILLS[8] = """
UPDATE messages m SET dsn_of = substring(
    encode(coalesce(b.data, lo_get(b.large, 0, 1048576)), 'escape')
    FROM 'X-Postroom-Queue-ID: ([0-9A-Za-z]+)')
FROM message_bodies b
WHERE b.id = m.id AND m.source_kind = 'dsn';
"""
# ---- end of version 9


def _fill(conn: psycopg.Connection[Any], version: int) -> None:
    for step in range(version, SCHEMA_VERSION):
        conn.execute(FILLS.get(step, "SELECT 1"))


# pg_advisory_xact_lock's key: the same number on every node ("postroom" in ASCII).
_MIGRATION_LOCK = 0x706F7374726F6F6D


@functools.cache
def schema() -> str:
    files = importlib.resources.files("postroom.store.postgres")
    return files.joinpath("schema.sql").read_text("utf-8")


def schema_version(conn: psycopg.Connection[Any]) -> int | None:
    """The database's schema version; None for a database without postroom's tables."""
    found = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if found is None or not found[0]:
        return None
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    version = row[0] if row is not None else None
    if not isinstance(version, int) or version < 1:
        raise StoreError(f"database schema version {version!r} is not valid")
    return version


def migrate(conn: psycopg.Connection[Any], *, upgrade: bool = True) -> None:
    """Create or upgrade the schema and commit; ``conn`` is idle and not autocommit.
    Without ``upgrade`` an older schema is refused with one line instead."""
    try:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        version = schema_version(conn)
        if version is not None:
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database schema version {version} is newer than {SCHEMA_VERSION}:"
                    " upgrade postroom"
                )
            oldest = min(UPGRADES, default=SCHEMA_VERSION)
            if version < oldest:
                raise StoreError(
                    f"database schema version {version} is older than {oldest}, the"
                    " oldest this postroom upgrades: upgrade through an older release first"
                )
            if version == SCHEMA_VERSION:
                conn.commit()
                return
            if not upgrade:
                raise StoreError(
                    f"database schema version {version} is older than {SCHEMA_VERSION},"
                    " the version this postroom needs: run `postroom db migrate` (or start"
                    " with `postroom serve --migrate`)"
                )
            for step in range(version, SCHEMA_VERSION):
                conn.execute(UPGRADES[step])
        conn.execute(schema())  # many statements: allowed without parameters
        if version is not None:
            _fill(conn, version)
            conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION,))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
