"""The PostgreSQL engine when the database misbehaves: a server that stops answering
without closing its connections, a commit whose answer was lost, and connections the
server ended between two calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterator

import psycopg
import pytest

from postroom.errors import StoreUnavailable
from postroom.store.groupcommit import GroupCommitter
from postroom.store.models import NewMessage
from postroom.store.postgres import PostgresStore
from postroom.store.postgres.connection import Link, Writer
from postroom.store.postgres.guard import Guard
from tests.store.factories import HEADER, NOW, new_message, to
from tests.support.postgres import PostgresCluster, end_connections

TIMEOUT = 1.0  # [database] timeout of the stores here: seconds a call may go unanswered
# A call that runs out of time answers within its timeout, give or take the watchdog's
# tick and a loaded machine; a hang would be the client's own timeout, or forever.
ANSWERED_WITHIN = 6 * TIMEOUT


@pytest.fixture
def database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    name = postgres_cluster.new_database()
    yield postgres_cluster.url(name)
    postgres_cluster.drop_database(name)


def rows(url: str, message_id: str) -> tuple[int, int, int]:
    """The message's rows: messages, recipients, bodies."""
    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute(
            "SELECT (SELECT count(*) FROM messages WHERE id = %s),"
            " (SELECT count(*) FROM recipients WHERE message_id = %s),"
            " (SELECT count(*) FROM message_bodies WHERE id = %s)",
            (message_id, message_id, message_id),
        ).fetchone()
    assert found is not None
    return (found[0], found[1], found[2])


async def answered_in(call: Awaitable[object]) -> float:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await call
    return time.monotonic() - started


async def test_a_frozen_database_fails_calls_within_the_timeout_and_the_store_recovers_alone(
    postgres_cluster: PostgresCluster, database: str
) -> None:
    store = PostgresStore(database, timeout=TIMEOUT)
    await store.start()
    try:
        before = new_message(at=NOW)
        await store.enqueue(before)
        assert await store.recipient("example.net", "bob@example.net") == (False, False)
        during = new_message(at=NOW + 1)
        with postgres_cluster.frozen():
            # The writer's and a reader's connections are open: their calls wait for an
            # answer that does not come, until the watchdog ends them.
            write = asyncio.ensure_future(store.enqueue(during))
            read = asyncio.ensure_future(store.recipient("example.net", "bob@example.net"))
            assert await answered_in(write) < ANSWERED_WITHIN
            assert await answered_in(read) < ANSWERED_WITHIN
            # Meanwhile every call fails at once instead of waiting out its own timeout.
            assert await answered_in(asyncio.ensure_future(store.message(before.id))) < TIMEOUT
            # After the pause one call tries again, connecting: that is bounded too.
            await asyncio.sleep(TIMEOUT)
            assert await answered_in(asyncio.ensure_future(store.domains())) < ANSWERED_WITHIN
        after = new_message(at=NOW + 2)
        deadline = time.monotonic() + 30
        while True:  # the first call after the pause connects again
            try:
                await store.enqueue(after)
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the store did not recover"
                await asyncio.sleep(0.1)
        assert [m.id for m in await store.messages()] == [before.id, after.id]
        assert rows(database, during.id) == (0, 0, 0)  # its transaction never committed
        assert await store.recipient("example.net", "bob@example.net") == (False, False)
    finally:
        await store.aclose()


class AnswerLost(Writer):
    """A writer whose first commit reaches the database, and whose connection is then
    lost before the answer comes back: the batch's result is unknown to the node."""

    answer_lost = False

    def commit(self, link: Link) -> None:
        super().commit(link)
        if not self.answer_lost:
            self.answer_lost = True
            link.conn.close()
            raise psycopg.OperationalError("server closed the connection unexpectedly")


async def test_a_batch_retried_after_its_commit_answer_was_lost_stores_each_message_once(
    database: str,
) -> None:
    store = PostgresStore(database, timeout=TIMEOUT)
    writer = AnswerLost(database, TIMEOUT / 2, guard=Guard(TIMEOUT))
    store.committer = GroupCommitter(writer)
    await store.start()
    try:
        messages: list[NewMessage] = [
            new_message(at=NOW + i, recipients=to("bob@example.net", "carol@example.net"))
            for i in range(5)
        ]
        fallbacks = store.committer.fallbacks
        # Submitted in one loop iteration: one batch, one (lost) commit answer; each job
        # is then tried again alone, and finds its message stored by that commit.
        await asyncio.gather(*(store.enqueue(m) for m in messages))
        assert writer.answer_lost and store.committer.fallbacks == fallbacks + 1
        assert [m.id for m in await store.messages()] == [m.id for m in messages]
        for message in messages:
            assert rows(database, message.id) == (1, 2, 1)
            assert await store.read_body(message.id) == HEADER + b"Subject: hi\r\n\r\nHello\r\n"
    finally:
        await store.aclose()


async def test_another_message_with_a_stored_queue_id_is_refused_not_taken_for_it(
    database: str,
) -> None:
    store = PostgresStore(database, timeout=TIMEOUT)
    await store.start()
    try:
        first = new_message(b"Subject: first\r\n\r\n1\r\n", at=NOW)
        await store.enqueue(first)
        other = new_message(b"Subject: other\r\n\r\n2\r\n", message_id=first.id, at=NOW + 5)
        neighbour = new_message(at=NOW + 6)
        results = await asyncio.gather(
            store.enqueue(other), store.enqueue(neighbour), return_exceptions=True
        )
        assert isinstance(results[0], StoreUnavailable) and results[1] is None
        assert await store.read_body(first.id) == HEADER + b"Subject: first\r\n\r\n1\r\n"
        assert [m.id for m in await store.messages()] == [first.id, neighbour.id]
    finally:
        await store.aclose()


async def test_connections_ended_between_calls_are_made_anew_and_the_next_calls_succeed(
    database: str,
) -> None:
    store = PostgresStore(database, timeout=TIMEOUT)
    await store.start()
    try:
        first, second = new_message(at=NOW), new_message(at=NOW + 1)
        await store.enqueue(first)
        assert await store.recipient("example.net", "bob@example.net") == (False, False)
        assert await store.take_token("api:key", NOW, per_second=10, burst=10) == 0
        assert end_connections(database) >= 3  # the writer's, a reader's, the limits'
        fallbacks = store.committer.fallbacks
        await store.enqueue(second)  # the writer's
        assert await store.message(second.id) is not None  # a reader's
        assert await store.take_token("api:key", NOW, per_second=10, burst=10) == 0  # the limits'
        assert store.committer.fallbacks == fallbacks
        assert rows(database, second.id) == (1, 1, 1)
    finally:
        await store.aclose()


class EndedAtBegin(Writer):
    """A writer whose connection the server ends once just as a batch begins, after
    the writer looked at it: the batch's first statement finds it dead."""

    ended = False

    def begin(self, link: Link) -> None:
        super().begin(link)
        if not self.ended:
            self.ended = True
            end_connections(self._url)


async def test_a_batch_whose_connection_was_found_dead_runs_again_whole_and_commits_once(
    database: str,
) -> None:
    store = PostgresStore(database, timeout=TIMEOUT)
    guard = Guard(TIMEOUT, pause=0.0)
    writer = EndedAtBegin(database, TIMEOUT / 2, guard=guard)
    store.committer = GroupCommitter(writer)
    await store.start()
    try:
        # Just after a failure: this batch is the guard's one try, and so is its rerun.
        guard.failed()
        messages = [new_message(at=NOW + i) for i in range(3)]
        commits, fallbacks = store.committer.commits, store.committer.fallbacks
        await asyncio.gather(*(store.enqueue(m) for m in messages))
        assert writer.ended
        # One batch, run twice: not failed, not split into jobs run alone.
        assert (store.committer.commits, store.committer.fallbacks) == (commits + 1, fallbacks)
        for message in messages:
            assert rows(database, message.id) == (1, 1, 1)
    finally:
        await store.aclose()
