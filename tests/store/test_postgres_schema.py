"""The PostgreSQL engine beyond the contract: opening by URL with libpq's password and
TLS rules, the versioned schema, refusals in one line, durable commits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from postroom.errors import StoreError, StoreUnavailable
from postroom.store import logsearch, open_store
from postroom.store.models import LogQuery
from postroom.store.open import shown_url
from postroom.store.postgres import PostgresStore, log, schema
from postroom.store.postgres.connection import Link
from tests.store.factories import NOW, UnlinkedDsns, fill_log, new_message, to
from tests.support.postgres import PASSWORD, PASSWORD_USER, PostgresCluster
from tests.support.servers import smtp_client
from tests.support.thread import ServerThread


@pytest.fixture
def empty_database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A database without postroom's tables, owned by the password-only role."""
    name = postgres_cluster.new_database(template="template0", owner=PASSWORD_USER)
    yield name
    postgres_cluster.drop_database(name)


@pytest.fixture
def migrated_database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    name = postgres_cluster.new_database()
    yield name
    postgres_cluster.drop_database(name)


def set_version(url: str, version: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (version,))


async def test_open_store_takes_the_password_from_pgpassword(
    postgres_cluster: PostgresCluster, empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres_cluster.url(empty_database, user=PASSWORD_USER)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with pytest.raises(StoreUnavailable) as refused:
        await open_store(url)
    assert "password" in str(refused.value) and "\n" not in str(refused.value)
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    store = await open_store(url)
    try:
        assert await store.add_domain("example.org", NOW) is True
        assert await store.domains() == ["example.org"]
    finally:
        await store.aclose()


async def test_open_store_takes_the_password_from_a_pgpass_file(
    postgres_cluster: PostgresCluster,
    empty_database: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"*:*:{empty_database}:{PASSWORD_USER}:{PASSWORD}\n")
    pgpass.chmod(0o600)  # libpq ignores a file others may read
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    store = await open_store(postgres_cluster.url(empty_database, user=PASSWORD_USER))
    try:
        assert len(await store.instance_id()) == 32
    finally:
        await store.aclose()


async def test_tls_to_the_database_as_the_url_asks(
    postgres_cluster: PostgresCluster, migrated_database: str
) -> None:
    """The loopback listener accepts TLS only; verify-full checks its certificate
    against the CA named in the URL."""
    store = await open_store(postgres_cluster.tls_url(migrated_database, "verify-full"))
    try:
        assert await store.add_domain("example.org", NOW) is True
        assert await store.is_local_domain("example.org") is True
    finally:
        await store.aclose()
    with pytest.raises(StoreUnavailable):  # in clear: refused by the server
        await open_store(postgres_cluster.tls_url(migrated_database, "disable"))


async def test_an_unreachable_database_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable) as refused:
        await open_store(f"postgresql://postroom@/postroom?host={tmp_path}")
    message = str(refused.value)
    assert message.startswith("storage failed:") and "\n" not in message


def test_a_password_in_the_url_is_never_shown() -> None:
    assert shown_url("postgresql://mail:hunter2@db.example/mail?sslmode=verify-full") == (
        "postgresql://mail:***@db.example/mail?sslmode=verify-full"
    )
    assert shown_url("postgresql://mail@db.example/mail") == "postgresql://mail@db.example/mail"


async def test_a_newer_schema_is_refused_in_one_line(
    postgres_cluster: PostgresCluster, migrated_database: str
) -> None:
    url = postgres_cluster.url(migrated_database)
    set_version(url, schema.SCHEMA_VERSION + 1)
    with pytest.raises(StoreError) as refused:
        await open_store(url)
    assert str(refused.value) == (
        f"database schema version {schema.SCHEMA_VERSION + 1} is newer than"
        f" {schema.SCHEMA_VERSION}: upgrade postroom"
    )


async def test_an_older_schema_is_upgraded_step_by_step(
    postgres_cluster: PostgresCluster, migrated_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later release's upgrade adds a column, under the same lock, when the node is
    told to migrate (``serve --migrate``)."""
    url = postgres_cluster.url(migrated_database)
    now = schema.SCHEMA_VERSION
    monkeypatch.setattr(schema, "SCHEMA_VERSION", now + 1)
    upgrades = {**schema.UPGRADES, now: "ALTER TABLE messages ADD COLUMN note text"}
    monkeypatch.setattr(schema, "UPGRADES", upgrades)
    store = await open_store(url, migrate=True)
    await store.aclose()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(now + 1,)]
        conn.execute("SELECT note FROM messages")  # the upgrade ran


async def test_a_version_1_database_gets_the_shared_limit_tables(
    postgres_cluster: PostgresCluster, migrated_database: str
) -> None:
    url = postgres_cluster.url(migrated_database)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE limit_windows, limit_buckets, limit_hits, limit_slots")
    set_version(url, 1)
    store = await open_store(url, migrate=True)
    try:
        assert await store.take_slot("k", 1, "node", 1.0, lease=60)
    finally:
        await store.aclose()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [
            (schema.SCHEMA_VERSION,)
        ]
        unlogged = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'limit_%%' AND relkind = 'r'"
            " AND relpersistence = 'u'"
        ).fetchone()
        assert unlogged == (4,)


async def test_a_schema_older_than_any_upgrade_is_refused_in_one_line(
    postgres_cluster: PostgresCluster, migrated_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = schema.SCHEMA_VERSION
    monkeypatch.setattr(schema, "SCHEMA_VERSION", now + 2)
    monkeypatch.setattr(schema, "UPGRADES", {now + 1: "SELECT 1"})
    with pytest.raises(StoreError) as refused:
        await open_store(postgres_cluster.url(migrated_database))
    assert str(refused.value) == (
        f"database schema version {now} is older than {now + 1}, the oldest this postroom"
        " upgrades: upgrade through an older release first"
    )


async def test_version_1_bodies_are_kept_by_the_upgrade_to_large_objects(
    postgres_cluster: PostgresCluster, migrated_database: str
) -> None:
    """A version-1 database (every body a bytea, NOT NULL) keeps its bodies through the
    upgrade, and takes large ones as large objects afterwards."""
    url = postgres_cluster.url(migrated_database)
    kept = new_message(b"Subject: kept\r\n\r\nfrom version 1\r\n")
    store = PostgresStore(url)
    await store.start()
    await store.enqueue(kept)
    await store.aclose()
    with psycopg.connect(url, autocommit=True) as conn:  # back to version 1's table
        conn.execute("DROP TRIGGER message_bodies_unlink ON message_bodies")
        conn.execute("DROP FUNCTION postroom_unlink_body")
        conn.execute("ALTER TABLE message_bodies DROP COLUMN large")  # and its CHECK
        conn.execute("ALTER TABLE message_bodies ALTER COLUMN data SET NOT NULL")
    set_version(url, 1)
    store = PostgresStore(url, inline_body_max=1024)
    await store.start()
    try:
        large = new_message(b"L" * 4096)
        await store.enqueue(large)
        assert await store.read_body(kept.id) == kept.header + kept.body.getvalue()
        assert await store.read_body(large.id) == large.header + b"L" * 4096
        assert await store.delete(large.id)
    finally:
        await store.aclose()
    with psycopg.connect(url) as conn:
        version = conn.execute("SELECT version FROM schema_version").fetchall()
        assert version == [(schema.SCHEMA_VERSION,)]
        assert conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchall() == [(0,)]


async def test_nodes_starting_together_create_the_schema_once(
    postgres_cluster: PostgresCluster, empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    url = postgres_cluster.url(empty_database, user=PASSWORD_USER)
    stores = [PostgresStore(url) for _ in range(3)]
    await asyncio.gather(*(store.start() for store in stores))
    try:
        ids = {await store.instance_id() for store in stores}
        assert len(ids) == 1
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT version FROM schema_version").fetchall() == [
                (schema.SCHEMA_VERSION,)
            ]
    finally:
        for store in stores:
            await store.aclose()


async def test_commits_are_synchronous_whatever_the_database_default(
    postgres_cluster: PostgresCluster, migrated_database: str
) -> None:
    url = postgres_cluster.url(migrated_database)
    with postgres_cluster.admin() as conn:
        conn.execute(f'ALTER DATABASE "{migrated_database}" SET synchronous_commit = off')
    store = PostgresStore(url)
    await store.start()
    try:

        def setting(link: Link) -> object:
            row = link.conn.execute("SHOW synchronous_commit").fetchone()
            return row[0] if row else None

        assert await store.committer.submit(setting) == "on"
    finally:
        await store.aclose()


def test_a_server_configured_with_a_postgresql_url_accepts_mail_into_it(
    postgres_cluster: PostgresCluster,
    migrated_database: str,
    make_server: Callable[..., ServerThread],
) -> None:
    """``storage = "postgresql://..."`` through the configuration: the node starts, takes
    the store's id into its data directory, and a 250 means the message is in PostgreSQL."""
    url = postgres_cluster.url(migrated_database)
    server = make_server(storage=url)
    server.add_domain("example.test")
    with smtp_client(server.ports["mx"]) as client:
        refused = client.sendmail(
            "sender@example.net", ["postmaster@example.test"], b"Subject: hi\r\n\r\nHello\r\n"
        )
    assert refused == {}
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT sender FROM messages").fetchall()
        (instance,) = conn.execute("SELECT id FROM instance").fetchone() or ("",)
    assert rows == [("sender@example.net",)]
    assert (server.data_dir / "instance-id").read_text().strip() == instance


class Wakes:
    """Counts a watcher's calls; ``next()`` waits for the next one."""

    def __init__(self) -> None:
        self.calls = 0
        self._event = asyncio.Event()

    def __call__(self) -> None:
        self.calls += 1
        self._event.set()

    async def next(self) -> None:
        await asyncio.wait_for(self._event.wait(), timeout=10)
        self._event.clear()


async def test_other_nodes_hear_of_mail_that_became_due(
    postgres_cluster: PostgresCluster, migrated_database: str
) -> None:
    """LISTEN/NOTIFY: node B's watcher is called when node A commits a message, makes
    mail due again (retry, release of a hold), not for what changes nothing due."""
    url = postgres_cluster.url(migrated_database)
    node_a, node_b = PostgresStore(url), PostgresStore(url)
    await node_a.start()
    await node_b.start()
    wakes = Wakes()
    watching = asyncio.create_task(node_b.watch_queue(wakes))
    try:
        await wakes.next()  # listening: one call for what came before
        message = new_message()
        await node_a.enqueue(message)
        await wakes.next()
        await node_a.hold(message.id)
        await node_a.release_hold(message.id)
        await wakes.next()
        await node_a.claim_due(NOW, limit=10, lease=60)
        assert await node_a.retry_now(None, NOW) == 0  # leased: nothing made due
        await node_a.release(message.id, ["bob@example.net"])
        assert await node_a.retry_now(None, NOW) == 1
        await wakes.next()
        calls = wakes.calls
        await node_a.add_domain("example.org", NOW)  # not mail: no wake-up
        await node_a.enqueue(new_message(at=NOW + 1))  # a commit after it, heard
        await wakes.next()
        assert wakes.calls == calls + 1
    finally:
        watching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watching
        await node_a.aclose()
        await node_b.aclose()


async def test_a_watcher_that_loses_the_database_says_so(
    postgres_cluster: PostgresCluster, migrated_database: str
) -> None:
    store = PostgresStore(postgres_cluster.url(migrated_database))
    await store.start()
    wakes = Wakes()
    watching = asyncio.create_task(store.watch_queue(wakes))
    try:
        await wakes.next()
        with postgres_cluster.admin() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND query LIKE 'LISTEN%%'",
                (migrated_database,),
            )
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(watching, timeout=10)
    finally:
        watching.cancel()
        await store.aclose()


# The objects schema version 6 added, as its block in schema.sql makes them.
_V6_OBJECTS = """
    DROP TRIGGER attempts_rollups ON attempts;
    DROP TRIGGER recipients_count_added ON recipients;
    DROP TRIGGER recipients_count_gone ON recipients;
    DROP TRIGGER recipients_count_moved ON recipients;
    DROP FUNCTION postroom_rollup_attempts, postroom_count_added, postroom_count_waiting;
    DROP TABLE attempt_rollups, queue_totals;
    DROP INDEX recipients_address, recipients_domain, recipients_waiting, attempts_at,
        attempts_delivered;
"""
_COUNTS = (
    "SELECT period, slot, mailer, sender_domain, disposition, sum(count) FROM attempt_rollups"
    " GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
    "SELECT status, held, sum(recipients) FROM queue_totals GROUP BY 1, 2 ORDER BY 1, 2",
)


async def test_a_version_5_database_gets_the_counts_its_log_and_queue_imply(
    postgres_cluster: PostgresCluster, migrated_database: str
) -> None:
    # The counts the triggers keep on a database used since version 6, then the same data
    # as a version-5 database had it (without those objects), upgraded: the same counts.
    url = postgres_cluster.url(migrated_database)
    store = await open_store(url)
    try:
        await fill_log(store)
    finally:
        await store.aclose()

    def counts() -> list[list[tuple[object, ...]]]:
        with psycopg.connect(url) as conn:
            return [conn.execute(sql).fetchall() for sql in _COUNTS]

    kept = counts()
    assert kept[0] and kept[1]  # the log had attempts and the queue had recipients
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_V6_OBJECTS)
    set_version(url, 5)
    store = await open_store(url, migrate=True)
    await store.aclose()
    assert counts() == kept
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [
            (schema.SCHEMA_VERSION,)
        ]
        indexes = {row[0] for row in conn.execute("SELECT indexname FROM pg_indexes")}
    assert {"recipients_address", "recipients_domain", "recipients_waiting"} <= indexes


async def test_a_version_7_database_links_the_dsns_it_made_to_their_messages(
    postgres_cluster: PostgresCluster, migrated_database: str
) -> None:
    # A body above inline_body_max is a large object: the upgrade reads it too.
    url = postgres_cluster.url(migrated_database)
    made = UnlinkedDsns(padding=4096)
    store = PostgresStore(url, inline_body_max=1024)
    await store.start()
    try:
        for message in made.all:
            await store.enqueue(message)
    finally:
        await store.aclose()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "DROP INDEX messages_dsn_of; ALTER TABLE messages DROP COLUMN dsn_of;"
            " ALTER TABLE attempts DROP COLUMN route, DROP COLUMN route_reason"
        )
    set_version(url, 7)
    store = PostgresStore(url)
    await store.start()
    try:
        await made.check(store)
    finally:
        await store.aclose()


@pytest.mark.parametrize("term", ["müller", "Ünal@", "@bücher.example", "bob"])
async def test_a_recipient_search_reads_the_indexes_whatever_its_first_letter(
    postgres_cluster: PostgresCluster, migrated_database: str, term: str
) -> None:
    url = postgres_cluster.url(migrated_database)
    store = PostgresStore(url)
    await store.start()
    await store.aclose()
    where, params = logsearch.conditions(LogQuery(to=term), log.DIALECT, indexed=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")  # an empty table: the plan if it can
        found = conn.execute(f"EXPLAIN SELECT m.id FROM messages m WHERE {where}", params)
        plan = "\n".join(row[0] for row in found)
    assert "Seq Scan on recipients" not in plan
    assert "recipients_address" in plan or "recipients_domain" in plan


async def test_a_counter_row_being_written_is_left_for_the_next_merge(
    postgres_cluster: PostgresCluster, migrated_database: str
) -> None:
    # Another node's transaction is counting into its own rows (not committed yet): the
    # merge neither waits for it nor folds a count that may still change or roll back.
    url = postgres_cluster.url(migrated_database)
    store = PostgresStore(url, timeout=2.0)
    await store.start()

    def shards(conn: psycopg.Connection[tuple[int]]) -> int:
        row = conn.execute("SELECT count(*) FROM queue_totals WHERE shard <> 0").fetchone()
        assert row is not None
        return row[0]

    try:
        message = new_message(at=NOW, recipients=to("a@example.net", "b@example.net"))
        await store.enqueue(message)  # counted in the store's writer's rows
        defer = "UPDATE recipients SET status = 'deferred' WHERE message_id = %s AND address = %s"
        with psycopg.connect(url) as writing, psycopg.connect(url, autocommit=True) as looking:
            writing.execute(defer, (message.id, "a@example.net"))
            writing.commit()
            assert shards(looking) == 3  # the store's queued; the other's queued, deferred
            writing.execute(defer, (message.id, "b@example.net"))  # its rows, locked
            assert await asyncio.wait_for(store.merge_counters(), 1.0) == 1
            assert shards(looking) == 2
            writing.commit()
        summary = await store.queue_summary()
        assert (summary.queued, summary.deferred) == (0, 2)
        assert await store.merge_counters() == 2
        with psycopg.connect(url, autocommit=True) as looking:
            assert shards(looking) == 0
        assert await store.queue_summary() == summary
    finally:
        await store.aclose()
