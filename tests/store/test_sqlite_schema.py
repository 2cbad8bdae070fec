"""SQLite only: the schema is created, upgraded from version 1, and its indexes used.

The engine-neutral behaviour is in the contract suite; this file holds what only an
SQLite file has: old databases on disk and the query planner.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from postroom.errors import StoreError
from postroom.store import RecipientStatus, logsearch, rows, totals
from postroom.store.models import LogQuery
from postroom.store.sqlite import SqliteStore, log
from postroom.store.sqlite import delivery as sql
from postroom.store.sqlite.schema import SCHEMA_VERSION
from tests.store.factories import (
    HEADER,
    NOW,
    UnlinkedDsns,
    attempt,
    deferred,
    delivered,
    fill_log,
    new_message,
)

# The schema as version 1 wrote it, kept verbatim: databases like this exist on disk.
SCHEMA_V1 = """\
-- postroom SQLite schema, version 1. Every statement is idempotent: run at each start.

CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
INSERT INTO schema_version (version)
    SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM schema_version);

CREATE TABLE IF NOT EXISTS messages (
    id          TEXT PRIMARY KEY,     -- queue id: time-ordered, so ORDER BY id is arrival order
    sender      TEXT NOT NULL,        -- '' for the null reverse-path
    ret         TEXT,                 -- RFC 3461 RET: FULL | HDRS
    envid       TEXT,                 -- RFC 3461 ENVID, xtext-decoded
    body_type   TEXT NOT NULL,        -- 7BIT | 8BITMIME
    smtputf8    INTEGER NOT NULL,
    size        INTEGER NOT NULL,     -- octets in message_bodies.data
    received_at REAL NOT NULL,
    source_kind TEXT NOT NULL,        -- smtp | api | sendmail | dsn
    principal   TEXT,
    client_ip   TEXT,
    client_port INTEGER,
    helo        TEXT,
    reverse_dns TEXT,
    protocol    TEXT,
    tls         TEXT,
    listener    TEXT,
    held        INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- A rowid table: Connection.blobopen() addresses a blob by rowid.
CREATE TABLE IF NOT EXISTS message_bodies (
    id   TEXT NOT NULL UNIQUE REFERENCES messages (id) ON DELETE CASCADE,
    data BLOB NOT NULL            -- trace headers, then the body, byte for byte
);

CREATE TABLE IF NOT EXISTS recipients (
    message_id      TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    position        INTEGER NOT NULL, -- RCPT order
    address         TEXT NOT NULL,
    notify          TEXT,             -- RFC 3461 NOTIFY, comma-separated; NULL when not given
    orcpt           TEXT,             -- RFC 3461 ORCPT, "addr-type;address"
    status          TEXT NOT NULL,    -- RecipientStatus
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    last_reply      TEXT,
    PRIMARY KEY (message_id, position)
) WITHOUT ROWID;

-- The scheduler's question: which recipients are due now?
CREATE INDEX IF NOT EXISTS recipients_due ON recipients (status, next_attempt_at);

CREATE TABLE IF NOT EXISTS domains (
    name       TEXT PRIMARY KEY COLLATE NOCASE, -- A-label form
    created_at REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS users (
    address        TEXT PRIMARY KEY,       -- Address.key
    password_hash  TEXT NOT NULL,
    sender_domains TEXT NOT NULL DEFAULT '', -- comma-separated; '' means any domain
    created_at     REAL NOT NULL
) WITHOUT ROWID;
"""

V1_MESSAGE = "06HHGQ2G00ABCDEF"
V1_HELD = "06HHGQ2G01ABCDEF"


def write_v1_database(path: Path) -> None:
    """A version-1 database with a message of two recipients, a held one and a user."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(SCHEMA_V1)
        for mid, held in ((V1_MESSAGE, 0), (V1_HELD, 1)):
            conn.execute(
                "INSERT INTO messages (id, sender, body_type, smtputf8, size, received_at,"
                " source_kind, client_ip, held) VALUES (?, ?, '7BIT', 0, 5, ?, 'smtp', ?, ?)",
                (mid, "alice@example.org", NOW, "192.0.2.1", held),
            )
            conn.execute(
                "INSERT INTO message_bodies (id, data) VALUES (?, ?)", (mid, b"Hi\r\n\r\n")
            )
        conn.executemany(
            "INSERT INTO recipients (message_id, position, address, notify, orcpt, status,"
            " attempts, next_attempt_at) VALUES (?, ?, ?, NULL, NULL, 'queued', 0, ?)",
            [
                (V1_MESSAGE, 0, "bob@example.net", NOW),
                (V1_MESSAGE, 1, "carol@example.net", NOW),
                (V1_HELD, 0, "dave@example.net", NOW),
            ],
        )
        conn.execute("INSERT INTO domains (name, created_at) VALUES ('example.org', ?)", (NOW,))


def version_of(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT max(version) FROM schema_version").fetchone()[0])


async def test_a_version_1_database_opens_and_works(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    write_v1_database(path)
    store = SqliteStore(path)
    await store.start()
    try:
        assert version_of(path) == SCHEMA_VERSION
        stored = await store.message(V1_MESSAGE)
        assert stored is not None
        assert [(r.address, r.status, r.delay_warned) for r in stored.recipients] == [
            ("bob@example.net", RecipientStatus.QUEUED, False),
            ("carol@example.net", RecipientStatus.QUEUED, False),
        ]
        assert await store.read_body(V1_MESSAGE) == b"Hi\r\n\r\n"
        assert await store.is_local_domain("example.org")
        # The held message stays held: its recipients are not claimed.
        claims = await store.claim_due(NOW + 1, limit=10, lease=60)
        assert [c.message.id for c in claims] == [V1_MESSAGE]
        await store.record_outcomes(
            V1_MESSAGE,
            [delivered("bob@example.net"), deferred("carol@example.net", NOW + 300)],
            [attempt(V1_MESSAGE, a, NOW + 1) for a in ("bob@example.net", "carol@example.net")],
        )
        assert len(await store.attempts(V1_MESSAGE)) == 2
        assert [m.id for m in await store.query(LogQuery(status="held"))] == [V1_HELD]
        assert await store.release_hold(V1_HELD)
        assert [c.message.id for c in await store.claim_due(NOW + 2, limit=10, lease=60)] == [
            V1_HELD
        ]
        await store.enqueue(new := new_message(at=NOW + 5))
        assert await store.read_body(new.id) == HEADER + b"Subject: hi\r\n\r\nHello\r\n"
    finally:
        await store.aclose()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        indexes = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
    assert "recipients_due" not in indexes
    assert {"recipients_pending", "recipients_leased", "attempts_message"} <= indexes
    # Opening again changes nothing.
    again = SqliteStore(path)
    await again.start()
    try:
        assert await again.next_due() == NOW + 5  # the message enqueued above
        assert await again.count_messages() == 3
    finally:
        await again.aclose()


async def test_upgrade_keeps_the_meaning_of_empty_sender_domains_as_any_sender(
    tmp_path: Path,
) -> None:
    """Before version 3 an empty list meant any domain; since, it means the defaults. Rows
    written before keep their meaning through any_sender; limited rows stay limited."""
    path = tmp_path / "old.db"
    write_v1_database(path)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.executemany(
            "INSERT INTO users (address, password_hash, sender_domains, created_at)"
            " VALUES (?, 'x', ?, 0)",
            [("open@example.org", ""), ("limited@example.org", "example.org,other.org")],
        )
        conn.execute(
            "CREATE TABLE api_keys (name TEXT PRIMARY KEY, key_id TEXT NOT NULL UNIQUE,"
            " secret_hash TEXT NOT NULL, sender_domains TEXT NOT NULL DEFAULT '',"
            " created_at REAL NOT NULL) WITHOUT ROWID"
        )
        conn.executemany(
            "INSERT INTO api_keys VALUES (?, ?, 'h', ?, 0)",
            [("open", "k1", ""), ("limited", "k2", "example.org")],
        )
    store = SqliteStore(path)
    await store.start()
    try:
        users = {u.address: (u.sender_domains, u.any_sender) for u in await store.users()}
        assert users == {
            "open@example.org": ((), True),
            "limited@example.org": (("example.org", "other.org"), False),
        }
        keys = {k.name: (k.sender_domains, k.any_sender) for k in await store.api_keys()}
        assert keys == {"open": ((), True), "limited": (("example.org",), False)}
    finally:
        await store.aclose()
    assert version_of(path) == SCHEMA_VERSION


async def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    store = SqliteStore(path)
    await store.start()
    await store.aclose()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer"):
        await SqliteStore(path).start()


async def test_processes_starting_together_create_the_schema_once(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    stores = [SqliteStore(path) for _ in range(4)]
    await asyncio.gather(*(s.start() for s in stores))
    for store in stores:
        await store.aclose()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def plan(path: Path, query: str, params: Sequence[object] | dict[str, float] = ()) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.create_function("unicode_lower", 1, str.lower, deterministic=True)
        rows = conn.execute(f"EXPLAIN QUERY PLAN {query}", params).fetchall()
    return " | ".join(row[3] for row in rows)


async def test_the_scheduler_queries_use_their_indexes(tmp_path: Path) -> None:
    path = tmp_path / "plan.db"
    store = SqliteStore(path)
    await store.start()
    await store.aclose()
    now = {"now": NOW}
    due = f"SELECT message_id FROM recipients WHERE {sql.DUE} ORDER BY next_attempt_at"
    assert "USING INDEX recipients_pending (next_attempt_at<?)" in plan(path, due, now)
    free = (
        f"SELECT next_attempt_at FROM recipients WHERE {sql.CLAIMABLE} AND claimed_until IS NULL"
        " AND next_attempt_at IS NOT NULL ORDER BY next_attempt_at LIMIT 1"
    )
    assert "USING INDEX recipients_pending" in plan(path, free)
    leased = f"SELECT 1 FROM recipients WHERE claimed_until IS NOT NULL AND {sql.CLAIMABLE}"
    assert "USING INDEX recipients_leased" in plan(path, leased)
    held = "SELECT id FROM messages m WHERE m.held = 1 ORDER BY m.id DESC"
    assert "USING INDEX messages_held" in plan(path, held)
    newest = "SELECT id FROM messages m WHERE m.received_at >= ? ORDER BY m.id DESC LIMIT 10"
    assert "TEMP B-TREE" not in plan(path, newest, (NOW,))


async def test_api_keys_from_before_scopes_may_send_and_read_their_own_mail(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v2.db"
    store = SqliteStore(path)
    await store.start()
    await store.aclose()
    # Back to version 2 as it was on disk: no scopes or any_sender columns, one key.
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(_V8_OBJECTS)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("ALTER TABLE api_keys DROP COLUMN scopes")
        conn.execute("ALTER TABLE api_keys DROP COLUMN any_sender")
        conn.execute("ALTER TABLE users DROP COLUMN any_sender")
        conn.execute(
            "INSERT INTO api_keys (name, key_id, secret_hash, sender_domains, created_at)"
            " VALUES ('shop', 'abcdefghijklmnop', ?, 'example.com', ?)",
            ("ff" * 32, NOW),
        )
        conn.execute("UPDATE schema_version SET version = 2")
    store = SqliteStore(path)
    await store.start()
    try:
        assert version_of(path) == SCHEMA_VERSION
        key = await store.api_key("abcdefghijklmnop")
        assert key is not None
        assert (key.sender_domains, key.scopes) == (("example.com",), ("send", "read"))
        assert not key.any_sender
    finally:
        await store.aclose()


async def test_a_new_database_is_made_at_the_current_version(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "new.db")
    await store.start()
    await store.aclose()
    with contextlib.closing(sqlite3.connect(tmp_path / "new.db")) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


async def test_the_log_and_overview_queries_use_their_indexes(tmp_path: Path) -> None:
    path = tmp_path / "plan.db"
    store = SqliteStore(path)
    await store.start()
    await store.aclose()
    where, params = logsearch.conditions(LogQuery(to="bob", cursor="Z"), log.DIALECT, indexed=True)
    search = plan(path, f"SELECT m.id FROM messages m WHERE {where} ORDER BY m.id DESC", params)
    assert "USING INDEX recipients_address (<expr>>? AND <expr><?)" in search
    assert "USING INDEX recipients_domain (<expr>>? AND <expr><?)" in search
    assert "SCAN m" not in search
    where, params = logsearch.conditions(LogQuery(dsn_of="Q1"), log.DIALECT, indexed=True)
    dsns = plan(path, f"SELECT {rows.STORED_COLUMNS} FROM messages m WHERE {where}"
                " ORDER BY m.id DESC LIMIT 50", params)  # fmt: skip
    assert "INDEX messages_dsn_of (dsn_of=?)" in dsns and "TEMP B-TREE" not in dsns
    rollups = plan(path, rows.attempt_counts_sql("?"), rows.rollup_params(NOW, 3600))
    assert "USING PRIMARY KEY (period=? AND slot>?)" in rollups
    oldest = plan(path, "SELECT min(message_id) FROM recipients WHERE " + sql.PENDING)
    assert "INDEX recipients_waiting" in oldest
    waiting = f"SELECT DISTINCT message_id FROM recipients WHERE {sql.PENDING} LIMIT 10"
    assert "USING COVERING INDEX recipients_waiting" in plan(path, waiting)
    sent = totals.SENT.format(m="?")
    assert "USING COVERING INDEX attempts_delivered (mailer=? AND at>?)" in plan(
        path, sent, ("mx", NOW)
    )
    last = "SELECT at FROM attempts WHERE mailer = ? AND disposition = ? ORDER BY at DESC LIMIT 1"
    assert "TEMP B-TREE" not in plan(path, last, ("mx", "delivered"))


# The objects schema version 6 added, as its block in schema.sql makes them.
_V6_OBJECTS = """
    DROP TRIGGER attempts_rollup;
    DROP TRIGGER recipients_count_new;
    DROP TRIGGER recipients_count_gone;
    DROP TRIGGER recipients_count_moved;
    DROP TABLE attempt_rollups;
    DROP TABLE queue_totals;
    DROP INDEX recipients_address;
    DROP INDEX recipients_domain;
    DROP INDEX recipients_waiting;
    DROP INDEX attempts_at;
    DROP INDEX attempts_delivered;
    UPDATE schema_version SET version = 5;
"""


async def test_a_version_5_store_gets_the_counts_its_log_and_queue_imply(tmp_path: Path) -> None:
    # The counts the triggers keep on a store used since version 6, then the same data
    # as a version-5 store had it (without those objects), upgraded: the same counts.
    path = tmp_path / "v5.db"
    store = SqliteStore(path)
    await store.start()
    try:
        await fill_log(store)
        kept = counts(path)
    finally:
        await store.aclose()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(_V8_OBJECTS + _V6_OBJECTS)
    assert version_of(path) == 5
    store = SqliteStore(path)
    await store.start()
    await store.aclose()
    assert version_of(path) == SCHEMA_VERSION
    assert counts(path) == kept
    assert kept[0] and kept[1]  # the log had attempts and the queue had recipients
    with contextlib.closing(sqlite3.connect(path)) as conn:
        made = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"recipients_address", "recipients_domain", "recipients_waiting", "attempts_at"} <= made
    assert {"attempts_rollup", "recipients_count_moved"} <= made


async def test_a_version_6_store_gets_the_complaints_and_message_webhook_indexes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v6.db"
    store = SqliteStore(path)
    await store.start()
    await store.aclose()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(_V8_OBJECTS)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("DROP INDEX events_complained")
        conn.execute("DROP INDEX webhook_deliveries_message")
        conn.execute("UPDATE schema_version SET version = 6")
    store = SqliteStore(path)
    await store.start()
    await store.aclose()
    assert version_of(path) == SCHEMA_VERSION
    complaints = "SELECT at FROM events WHERE type = 'complained' AND at >= ?"
    assert "events_complained" in plan(path, complaints, (NOW,))
    one_message = "SELECT seq FROM webhook_deliveries WHERE queue_id = ? ORDER BY seq DESC"
    assert "webhook_deliveries_message" in plan(path, one_message, ("Q1",))


async def test_a_recipient_search_beginning_beyond_ascii_reads_the_indexes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "plan.db"
    store = SqliteStore(path)
    await store.start()
    await store.aclose()
    for term in ("müller", "Ünal@", "@bücher.example", "élodie@xn--bcher-kva.example"):
        where, params = logsearch.conditions(LogQuery(to=term), log.DIALECT, indexed=True)
        search = plan(path, f"SELECT m.id FROM messages m WHERE {where}", params)
        assert "SCAN r" not in search and "SCAN m" not in search, term
        assert "USING INDEX recipients_" in search, term


# The objects schema version 8 added: columns (schema.py's upgrade step) and an index.
_V8_OBJECTS = """
    DROP INDEX messages_dsn_of;
    ALTER TABLE messages DROP COLUMN dsn_of;
    ALTER TABLE attempts DROP COLUMN route;
    ALTER TABLE attempts DROP COLUMN route_reason;
    UPDATE schema_version SET version = 7;
"""


async def test_a_version_7_store_links_the_dsns_it_made_to_their_messages(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v7.db"
    made = UnlinkedDsns(padding=70_000)
    store = SqliteStore(path)
    await store.start()
    try:
        for message in made.all:
            await store.enqueue(message)
    finally:
        await store.aclose()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(_V8_OBJECTS)
    store = SqliteStore(path)
    await store.start()
    try:
        assert version_of(path) == SCHEMA_VERSION
        await made.check(store)
        assert await store.attempts(made.original.id) == []
    finally:
        await store.aclose()


def counts(path: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rollups = conn.execute("SELECT * FROM attempt_rollups ORDER BY 1, 2, 3, 4, 5").fetchall()
        queue = conn.execute("SELECT * FROM queue_totals ORDER BY 1, 2").fetchall()
    return rollups, queue
