"""Limits that hold across nodes: two nodes (two stores, or two in-process servers) on
one PostgreSQL database share the sending limits, the AUTH throttle, the API rate
limits and the destinations' connection slots; two processes on one SQLite store (the
accept workers of ``workers = N``) share the AUTH throttle."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from postroom.config.providers import PostmarkMailerSettings, SendLimits
from postroom.delivery.mailers.api.postmark import PostmarkMailer
from postroom.delivery.mailers.mta.pool import ConnectionPool
from postroom.delivery.outcome import Disposition
from postroom.delivery.slots import SharedSlots
from postroom.directory.apikeys import Scope
from postroom.errors import StoreError
from postroom.net.throttle import FailureThrottle
from postroom.store import Store
from postroom.store.postgres import PostgresStore
from postroom.store.sqlite import SqliteStore
from tests.conftest import FakeClock
from tests.delivery.provider_messages import message, recipients
from tests.delivery.providers.kinds import KINDS
from tests.support.http_fake import serve
from tests.support.postgres import PostgresCluster
from tests.support.servers import client_context, smtp_client
from tests.support.thread import ServerThread

MIDNIGHT = 1_800_057_600.0  # the next midnight UTC after FakeClock's start


@pytest.fixture
def database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    name = postgres_cluster.lend_database()
    yield postgres_cluster.url(name)
    postgres_cluster.give_back(name)


@pytest.fixture
async def nodes(database: str) -> AsyncIterator[tuple[Store, Store]]:
    """The stores of two nodes on one database."""
    first, second = PostgresStore(database), PostgresStore(database)
    await first.start()
    await second.start()
    yield first, second
    await first.aclose()
    await second.aclose()


async def test_a_per_day_limit_of_10_across_two_nodes_sends_10_in_all(
    nodes: tuple[Store, Store], fake_clock: FakeClock
) -> None:
    kind = KINDS["postmark"]
    fake = kind.fake()
    with serve(fake) as server:
        settings = PostmarkMailerSettings(
            name="postmark",
            base_url=server.url,
            api_key_env="PM_TOKEN",
            limits=SendLimits(per_day=10),
            timeout=1.0,
        )
        # The same mailer on each node, each counting in its own node's store.
        mailers = [
            PostmarkMailer(settings, clock=fake_clock, environ={"PM_TOKEN": kind.key}, limits=s)
            for s in nodes
        ]
        try:
            outcomes = [
                outcome
                for n in range(15)
                for outcome in await mailers[n % 2].deliver(
                    message(), recipients(f"r{n}@example.net")
                )
            ]
        finally:
            for mailer in mailers:
                await mailer.aclose()
    sent = [o for o in outcomes if o.disposition is Disposition.DELIVERED]
    assert len(sent) == 10
    assert len(fake.received) == 10
    assert {o.retry_at for o in outcomes if o not in sent} == {MIDNIGHT}


async def test_auth_failures_on_one_node_count_on_another(
    nodes: tuple[Store, Store], fake_clock: FakeClock
) -> None:
    throttles = [FailureThrottle(store, fake_clock, max_failures=3, window=300) for store in nodes]
    assert await throttles[0].begin("192.0.2.1", "app@example.test") is not None
    assert await throttles[1].begin("192.0.2.1", "app@example.test") is not None
    assert await throttles[0].begin("192.0.2.1", "app@example.test") is not None
    assert await throttles[1].begin("192.0.2.1", "app@example.test") is None
    fake_clock.advance(300)
    attempt = await throttles[1].begin("192.0.2.1", "app@example.test")
    assert attempt is not None
    await attempt.succeeded()  # on node B: forgets the account's failures everywhere
    assert await throttles[0].begin("192.0.2.1", "app@example.test") is not None


async def test_the_accept_workers_of_one_sqlite_store_share_the_auth_throttle(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    path = tmp_path / "postroom.db"
    stores = [SqliteStore(path), SqliteStore(path)]  # the primary's and a worker's
    for store in stores:
        await store.start()
    try:
        throttles = [
            FailureThrottle(store, fake_clock, max_failures=2, window=60) for store in stores
        ]
        assert await throttles[0].begin("192.0.2.1", "a@example.test") is not None
        assert await throttles[1].begin("192.0.2.1", "b@example.test") is not None
        assert await throttles[0].begin("192.0.2.1", "c@example.test") is None
        assert await throttles[1].begin("192.0.2.1", "c@example.test") is None
    finally:
        for store in stores:
            await store.aclose()


class Session:
    """An outbound connection as the pool sees one (``Reusable``): the slots are the
    pool's business, not the protocol's."""

    def __init__(self) -> None:
        self.uses = 0
        self.closed = False

    @property
    def usable(self) -> bool:
        return not self.closed

    async def aclose(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


class CountedSlots(SharedSlots):
    """The node's shared slots, counting the calls it makes to the store."""

    calls = 0

    async def take(self, key: str, limit: int) -> bool:
        self.calls += 1
        return await super().take(key, limit)

    async def release(self, key: str) -> None:
        self.calls += 1
        await super().release(key)


def slot_pools(
    nodes: tuple[Store, Store], clock: FakeClock, limit: int
) -> list[tuple[ConnectionPool[Session], CountedSlots]]:
    made = []
    for store in nodes:
        slots = CountedSlots(store, clock, poll=0.01)
        pool: ConnectionPool[Session] = ConnectionPool(
            clock=clock, max_per_destination=limit, slots=slots, mailer="mx"
        )
        made.append((pool, slots))
    return made


async def new_session() -> Session:
    return Session()


async def test_a_destinations_connections_are_limited_across_two_nodes(
    nodes: tuple[Store, Store], fake_clock: FakeClock
) -> None:
    (pool_a, _), (pool_b, _) = slot_pools(nodes, fake_clock, limit=2)
    held = [await pool_a.connect("example.com", new_session) for _ in range(2)]
    waiting = asyncio.create_task(pool_b.connect("example.com", new_session))
    other = await pool_b.connect("other.example", new_session)  # another destination
    for _ in range(5):
        await asyncio.sleep(0.02)  # B asks the database meanwhile, and is refused
    assert not waiting.done()
    # An idle connection in A's cache still holds its slot: it is open to the peer.
    pool_a.give(pool_a.key("example.com", "mx1"), held[0])
    await asyncio.sleep(0.05)
    assert not waiting.done()
    pool_a.discard(held[1])  # closed: its slot goes to B
    session = await asyncio.wait_for(waiting, 10)
    assert not session.closed and held[1].closed
    pool_b.give(pool_b.key("other.example", "mx2"), other)
    for pool in (pool_a, pool_b):
        await pool.aclose()
    assert other.closed and held[0].closed


async def test_messages_over_a_kept_connection_ask_the_database_nothing(
    nodes: tuple[Store, Store], fake_clock: FakeClock
) -> None:
    (pool, slots), (other_pool, _) = slot_pools(nodes, fake_clock, limit=1)
    key = pool.key("example.com", "mx1")
    session = await pool.connect("example.com", new_session)
    for _ in range(10):  # ten messages, one after another, over the cached connection
        async with pool.limit("example.com"):
            session.uses += 1
        pool.give(key, session)
        taken = pool.take(key)
        assert taken is session
    assert slots.calls == 1  # the slot was taken once, when the connection opened
    # A new connection to another host of the same domain takes over an idle
    # connection's slot on this node: no call, and the limit of 1 still holds.
    pool.give(key, session)
    second = await pool.connect("example.com", new_session)
    await asyncio.sleep(0)  # the idle one closes in the background
    assert slots.calls == 1 and session.closed
    pool.drop(second)  # an aborted session gives its slot back too
    await pool.aclose()
    assert slots.calls == 2
    # The slot is free for the other node.
    reopened = await asyncio.wait_for(other_pool.connect("example.com", new_session), 10)
    other_pool.drop(reopened)
    await other_pool.aclose()


async def test_the_slots_of_a_killed_node_end_with_their_lease(
    database: str, fake_clock: FakeClock
) -> None:
    killed, survivor = PostgresStore(database), PostgresStore(database)
    await killed.start()
    await survivor.start()
    try:
        key = "connections mx example.com"
        for _ in range(2):
            assert await killed.take_slot(key, 2, "dead-node", fake_clock.time(), lease=60)
        await killed.aclose()  # the node dies holding both slots: nothing is given back
        live = SharedSlots(survivor, fake_clock, lease=60, poll=0.01)
        waiting = asyncio.create_task(_enter(live, key, 2))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # both slots still leased to the dead node
        fake_clock.advance(60)
        await asyncio.wait_for(waiting, 10)
    finally:
        await survivor.aclose()


async def _enter(slots: SharedSlots, key: str, limit: int) -> None:
    async with slots.hold(key, limit):
        pass


def test_an_api_keys_rate_limit_holds_across_two_nodes(
    make_server: Callable[..., ServerThread], database: str, fake_clock: FakeClock
) -> None:
    api = {"port": 0, "rate_limit": 60, "burst": 3}
    first = make_server(clock=fake_clock, storage=database, api=api)
    second = make_server(clock=fake_clock, storage=database, api=api)
    key = first.create_api_key("app", (), (Scope.SEND, Scope.READ), fake_clock)

    def get(node: ServerThread) -> httpx.Response:
        return httpx.get(
            f"http://127.0.0.1:{node.api_port}/api/v1/messages",
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )

    assert [get(n).status_code for n in (first, second, first)] == [200, 200, 200]
    refused = get(second)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    fake_clock.advance(1)
    assert get(second).status_code == 200


def test_auth_failures_on_one_server_are_throttled_on_another(
    make_server: Callable[..., ServerThread], database: str, fake_clock: FakeClock
) -> None:
    limits = {"auth": {"max_failures": 3}}
    first = make_server(clock=fake_clock, storage=database, limits=limits)
    second = make_server(clock=fake_clock, storage=database, limits=limits)
    first.add_domain("example.test")
    first.add_user("app@example.test", "s3cret-pass")

    def attempt(node: ServerThread, password: str) -> int:
        with smtp_client(node.ports["submission"]) as client:
            client.starttls(context=client_context(node.data_dir))
            client.ehlo("client.test")
            client.user, client.password = "app@example.test", password
            try:
                return client.auth("PLAIN", client.auth_plain, initial_response_ok=True)[0]
            except smtplib.SMTPAuthenticationError as exc:
                return exc.smtp_code

    assert [attempt(n, "wrong") for n in (first, second, first)] == [535, 535, 535]
    assert attempt(second, "s3cret-pass") == 454  # the right password waits too
    fake_clock.advance(301)
    assert attempt(second, "s3cret-pass") == 235


async def test_a_slot_not_given_back_while_the_database_was_away_is_given_back_after(
    database: str, postgres_cluster: PostgresCluster, fake_clock: FakeClock
) -> None:
    """A node renews all of its slots every round, so one it could not give back would
    be kept for ever: the round gives it back first."""
    node, other = PostgresStore(database), PostgresStore(database)
    await node.start()
    await other.start()
    try:
        key = "connections mx example.com"
        slots = SharedSlots(node, fake_clock, lease=0.3, poll=0.01)
        assert await slots.take(key, 1)
        postgres_cluster.halt()
        try:
            await slots.release(key)  # the database is away: owed
        finally:
            postgres_cluster.resume()
        keeper = asyncio.create_task(_supervised(slots.keep))
        try:
            waiting = SharedSlots(other, fake_clock, poll=0.01)
            assert await asyncio.wait_for(waiting.take(key, 1), 30)
        finally:
            keeper.cancel()
    finally:
        await node.aclose()
        await other.aclose()


async def _supervised(task: Callable[[], Awaitable[None]]) -> None:
    """``task`` run again whenever it ends with a StoreError, as the task supervisor
    does (the first round after the database is back may still meet the store's pause
    after its failed reconnect)."""
    while True:
        with contextlib.suppress(StoreError):
            await task()
