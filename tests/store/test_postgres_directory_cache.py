"""RCPT's directory cache on PostgreSQL: answers kept in memory, exact because every
change to the directory NOTIFYs every store, whoever made it, and read through whenever
the store is not listening; the scheduler's wake-ups share its listening connection."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator

import psycopg
import pytest

from postroom.errors import StoreUnavailable
from postroom.store.models import UserRecord
from postroom.store.postgres import PostgresStore
from postroom.store.postgres.dircache import DIRECTORY_CHANNEL, DirectoryCache
from postroom.store.postgres.notices import Notices
from postroom.store.postgres.queue import QUEUE_CHANNEL
from tests.store.factories import NOW, new_message
from tests.support.postgres import PostgresCluster, end_connections

TIMEOUT = 1.0  # [database] timeout: a read the frozen server never answers fails in this
USER = UserRecord(address="bob@example.net", password_hash="x", sender_domains=(), created_at=NOW)


@pytest.fixture
def database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    name = postgres_cluster.new_database()
    yield postgres_cluster.url(name)
    postgres_cluster.drop_database(name)


@pytest.fixture
async def store(database: str) -> AsyncIterator[PostgresStore]:
    node = PostgresStore(database, timeout=TIMEOUT)
    await node.start()
    await node.add_domain("example.net", NOW)
    await node.add_user(USER)
    yield node
    await node.aclose()


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "not within 10 s"
        await asyncio.sleep(0.005)


async def listening(store: PostgresStore) -> None:
    """Look up once (which starts the listener) and wait until answers may be kept."""
    await store.recipient("example.net", USER.address)
    await until(lambda: store.directory_cache.listening)


def psql(url: str, statement: str) -> None:
    """A change made outside postroom, as an operator's psql would."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement.encode())


async def test_a_user_removed_elsewhere_is_refused_as_soon_as_the_notification_arrives(
    store: PostgresStore, database: str
) -> None:
    await listening(store)
    assert await store.recipient("example.net", USER.address) == (True, True)
    heard = store.directory_cache.generation
    psql(database, "DELETE FROM users WHERE address = 'bob@example.net'")
    await until(lambda: store.directory_cache.generation > heard)
    assert await store.recipient("example.net", USER.address) == (True, False)


async def test_another_node_removing_a_domain_is_seen_by_this_one(
    store: PostgresStore, database: str
) -> None:
    other = PostgresStore(database, timeout=TIMEOUT)
    await other.start()
    try:
        await listening(store)
        assert await store.is_local_domain("example.net")
        heard = store.directory_cache.generation
        assert await other.remove_domain("example.net")
        await until(lambda: store.directory_cache.generation > heard)
        assert not await store.is_local_domain("example.net")
        assert await store.recipient("example.net", USER.address) == (False, False)
    finally:
        await other.aclose()


async def test_a_kept_answer_is_given_without_asking_the_database(
    store: PostgresStore, postgres_cluster: PostgresCluster
) -> None:
    await listening(store)
    for address in ("nobody@example.net", USER.address):
        await store.recipient("example.net", address)  # read, then kept
    with postgres_cluster.frozen():
        # A read now would wait for a server that does not answer, then fail.
        assert await store.recipient("example.net", "nobody@example.net") == (True, False)
        assert await store.recipient("example.net", USER.address) == (True, True)


async def test_while_its_listener_is_lost_every_lookup_reads_through(database: str) -> None:
    store = PostgresStore(database, timeout=TIMEOUT)
    # After the loss it listens again only a minute later: meanwhile nothing is kept.
    channels = (QUEUE_CHANNEL, DIRECTORY_CHANNEL)
    store.notices = Notices(database, TIMEOUT, channels, retry=(60.0, 60.0))
    store.directory_cache = DirectoryCache(store.notices)
    await store.start()
    try:
        await store.add_domain("example.net", NOW)
        await store.add_user(USER)
        await listening(store)
        end_connections(database)
        await until(lambda: not store.directory_cache.listening)
        # Changes nobody hears of: each lookup still gives the database's answer.
        for present in (False, True, False):
            statement = (
                "INSERT INTO users (address, password_hash, created_at)"
                " VALUES ('bob@example.net', 'x', 0)"
                if present
                else "DELETE FROM users WHERE address = 'bob@example.net'"
            )
            psql(database, statement)
            assert await store.recipient("example.net", USER.address) == (True, present)
    finally:
        await store.aclose()


def listeners(url: str) -> int:
    """How many connections to ``url``'s database last ran a LISTEN."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN %'"
        ).fetchone()
    assert row is not None
    count: int = row[0]
    return count


async def test_the_queue_watch_and_the_cache_share_one_listening_connection(
    store: PostgresStore, database: str
) -> None:
    wakes = 0

    def woken() -> None:
        nonlocal wakes
        wakes += 1

    watch = asyncio.create_task(store.watch_queue(woken))
    try:
        await listening(store)
        await until(lambda: wakes == 1)  # once on listening, for what came before
        assert listeners(database) == 1
        other = PostgresStore(database, timeout=TIMEOUT)
        await other.start()
        try:
            await other.enqueue(new_message())  # another node's mail wakes this one
            await until(lambda: wakes >= 2)
            heard = store.directory_cache.generation
            assert await other.remove_domain("example.net")
            await until(lambda: store.directory_cache.generation > heard)
        finally:
            await other.aclose()
        assert listeners(database) == 1
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch


async def test_a_lost_listener_ends_the_queue_watch_and_both_come_back(
    store: PostgresStore, database: str
) -> None:
    watch = asyncio.create_task(store.watch_queue(lambda: None))
    await listening(store)
    end_connections(database)
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(watch, 10)  # the scheduler's supervisor hears of the loss
    assert not store.directory_cache.listening
    await until(lambda: store.directory_cache.listening)  # listening again on its own
    woken = asyncio.Event()
    again = asyncio.create_task(store.watch_queue(woken.set))
    try:
        await asyncio.wait_for(woken.wait(), 10)  # told at once: already listening
        assert listeners(database) == 1
    finally:
        again.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await again
