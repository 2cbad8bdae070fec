"""One SQLite writer for two stores: a worker's store hands its new messages to the
primary's writer over a real Unix socket (``store.sqlite.sharedwriter``)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uvloop

from postroom.errors import StoreUnavailable
from postroom.mail.events import EventType, MailEvent, new_event_id
from postroom.mail.spool import SpooledBody
from postroom.store import RecipientStatus
from postroom.store.sqlite import SqliteStore
from postroom.store.sqlite.delivery import outcome_rows_of
from postroom.store.sqlite.queue import EnqueueRows
from postroom.store.sqlite.sharedwriter import SharedWriter, WritePort, socket_path
from tests.store.factories import NOW, attempt, delivered, new_message


def writes(home: Path) -> Path:
    path = socket_path(home)
    assert path is not None
    return path


@pytest.fixture
def home() -> Iterator[Path]:
    # Short: a Unix socket's path must fit its address (about 108 bytes).
    with tempfile.TemporaryDirectory(prefix="pr-sw-") as path:
        yield Path(path)


@pytest.fixture
async def primary(home: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(home / "queue.db")
    await store.start()
    yield store
    await store.aclose()


@pytest.fixture
async def worker(home: Path, primary: SqliteStore) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(home / "queue.db")
    await store.start()
    store.write_through(SharedWriter(writes(home)))
    yield store
    await store.aclose()


@contextlib.asynccontextmanager
async def port_of(home: Path, primary: SqliteStore) -> AsyncIterator[WritePort]:
    port = WritePort(writes(home), primary)
    await port.start()
    try:
        yield port
    finally:
        await port.aclose()


async def test_a_workers_messages_commit_in_the_primarys_writer_one_commit_for_a_turn(
    home: Path, primary: SqliteStore, worker: SqliteStore
) -> None:
    async with port_of(home, primary):
        messages = [new_message() for _ in range(20)]
        await asyncio.gather(*(worker.enqueue(m) for m in messages))
        assert primary.committer.commits == 1  # one transaction, one fsync, for all 20
        assert worker.committer.commits == 0  # the worker wrote nothing itself
        for message in messages:
            stored = await worker.message(message.id)  # reads stay local, and see it
            assert stored is not None
            assert await worker.read_body(message.id) == message.header + b"".join(
                message.body.iter_chunks()
            )


async def test_a_workers_delivery_outcomes_commit_in_the_primarys_writer(
    home: Path, primary: SqliteStore, worker: SqliteStore
) -> None:
    """Local mail a worker delivered at once: its outcome, attempt and event rows go
    to the primary's writer as its new messages do; the worker writes nothing itself."""
    message = new_message()
    bob = "bob@example.net"
    event = MailEvent(
        id=new_event_id(), type=EventType.DELIVERED, at=NOW, recipient=bob, queue_id=message.id
    )
    async with port_of(home, primary):
        await worker.enqueue(message)
        await worker.record_outcomes(
            message.id, [delivered(bob)], [attempt(message.id, bob, NOW, mailer="local")], [event]
        )
        assert (primary.committer.commits, worker.committer.commits) == (2, 0)
    stored = await primary.message(message.id)
    assert stored is not None
    assert [(r.address, r.status, r.attempts) for r in stored.recipients] == [
        (bob, RecipientStatus.DELIVERED, 1)
    ]
    assert [(a.recipient, a.mailer) for a in await primary.attempts(message.id)] == [(bob, "local")]
    assert [e.id for e in await primary.events(message.id)][-1] == event.id


async def test_without_the_primarys_writer_a_workers_outcome_is_recorded_by_its_own(
    home: Path, primary: SqliteStore, worker: SqliteStore
) -> None:
    """A primary that is gone (killed: the worker drains) must not leave a delivered
    message's outcome unrecorded, which would deliver it again when its lease ends."""
    message = new_message()
    bob = "bob@example.net"
    async with port_of(home, primary):
        await worker.enqueue(message)
    await worker.record_outcomes(message.id, [delivered(bob)], [attempt(message.id, bob, NOW)])
    assert worker.committer.commits == 1
    stored = await primary.message(message.id)
    assert stored is not None
    assert [r.status for r in stored.recipients] == [RecipientStatus.DELIVERED]


async def test_outcome_rows_written_twice_are_recorded_once(
    home: Path, primary: SqliteStore
) -> None:
    """The primary committed a worker's outcome, but its answer was lost: the worker
    writes the same rows itself, and the attempt and event are not doubled."""
    message = new_message()
    bob = "bob@example.net"
    await primary.enqueue(message)
    event = MailEvent(
        id=new_event_id(), type=EventType.DELIVERED, at=NOW, recipient=bob, queue_id=message.id
    )
    rows = outcome_rows_of(message.id, [delivered(bob)], [attempt(message.id, bob, NOW)], [event])
    await primary.write_rows_soon(rows)
    await primary.write_rows_soon(rows)
    assert len(await primary.attempts(message.id)) == 1
    assert [e.id for e in await primary.events(message.id)].count(event.id) == 1


async def test_a_spooled_body_is_written_by_the_workers_own_writer(
    home: Path, primary: SqliteStore, worker: SqliteStore
) -> None:
    spool = SpooledBody(home / "spool", threshold=16)
    spool.write(b"Subject: big\r\n\r\n" + b"x" * 100 + b"\r\n")
    message = new_message(spool=spool)
    async with port_of(home, primary):
        try:
            await worker.enqueue(message)
        finally:
            spool.close()
    assert (primary.committer.commits, worker.committer.commits) == (0, 1)
    assert await primary.read_body(message.id) is not None


async def test_without_the_primarys_writer_a_message_fails_and_the_next_connects_anew(
    home: Path, primary: SqliteStore, worker: SqliteStore
) -> None:
    lost = new_message()
    with pytest.raises(StoreUnavailable, match="unreachable"):
        await worker.enqueue(lost)
    assert await primary.message(lost.id) is None
    async with port_of(home, primary):
        kept = new_message()
        await worker.enqueue(kept)
    assert await primary.message(kept.id) is not None


async def test_a_message_in_flight_when_the_primary_hangs_up_fails_and_is_not_answered_as_stored(
    home: Path, worker: SqliteStore
) -> None:
    """The primary dies with the request read and not answered: the worker must not
    take that for a commit."""
    got_request = asyncio.Event()

    async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got_request.set()
        writer.transport.abort()

    dying = await asyncio.start_unix_server(hang_up, writes(home))
    try:
        with pytest.raises(StoreUnavailable, match="went away"):
            await worker.enqueue(new_message())
        assert got_request.is_set()
    finally:
        dying.close()
        await dying.wait_closed()


async def test_a_primary_that_never_answers_fails_the_message_at_the_deadline(
    home: Path, primary: SqliteStore
) -> None:
    """A stopped or stuck primary (it reads the request and says nothing) must not hold
    the client: 451 at the deadline, and a late answer is dropped."""
    got_request = asyncio.Event()
    silent: list[asyncio.StreamWriter] = []

    async def say_nothing(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)
        got_request.set()

    stuck = await asyncio.start_unix_server(say_nothing, writes(home))
    worker = SqliteStore(home / "queue.db")
    await worker.start()
    worker.write_through(SharedWriter(writes(home), deadline=0.2))
    try:
        with pytest.raises(StoreUnavailable, match=r"did not answer within 0\.2 s"):
            await worker.enqueue(new_message())
        assert got_request.is_set()
    finally:
        for writer in silent:
            writer.close()
        stuck.close()
        await stuck.wait_closed()
        await worker.aclose()


async def test_one_failed_message_of_a_batch_fails_alone(
    home: Path, primary: SqliteStore, worker: SqliteStore
) -> None:
    first = new_message()
    async with port_of(home, primary):
        await worker.enqueue(first)
        again = new_message(message_id=first.id)  # the same queue id: the insert fails
        other = new_message()
        outcomes = await asyncio.gather(
            worker.enqueue(again), worker.enqueue(other), return_exceptions=True
        )
    assert isinstance(outcomes[0], StoreUnavailable)
    assert outcomes[1] is None
    assert await primary.message(other.id) is not None


async def test_a_message_sent_after_the_primarys_store_closed_is_answered_as_failed(
    home: Path, primary: SqliteStore, worker: SqliteStore
) -> None:
    async with port_of(home, primary):
        await worker.enqueue(new_message())  # connected
        await primary.aclose()  # stopping: its writer is gone, its port not yet
        with pytest.raises(StoreUnavailable, match="closed"):
            await worker.enqueue(new_message())


async def test_rows_the_wire_cannot_carry_fail_their_message_only(home: Path) -> None:
    writer = SharedWriter(writes(home))
    rows = EnqueueRows(("id",), [], [], None, b"")
    bad = EnqueueRows((object(),), [], [], None, b"")
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(writer.aclose)
        # No primary listens: both fail, but the bad one for its own reason.
        outcomes = await asyncio.gather(
            writer.write(rows), writer.write(bad), return_exceptions=True
        )
    assert all(isinstance(o, StoreUnavailable) for o in outcomes)


def test_the_shared_writer_works_on_uvloop_as_serve_runs_it(home: Path) -> None:
    """``postroom serve`` runs on uvloop, whose transports are not asyncio's classes."""

    async def scenario() -> None:
        primary = SqliteStore(home / "queue.db")
        worker = SqliteStore(home / "queue.db")
        await primary.start()
        await worker.start()
        worker.write_through(SharedWriter(writes(home)))
        try:
            async with port_of(home, primary):
                messages = [new_message() for _ in range(5)]
                await asyncio.gather(*(worker.enqueue(m) for m in messages))
            for message in messages:
                assert await primary.message(message.id) is not None
        finally:
            await worker.aclose()
            await primary.aclose()

    uvloop.run(scenario())


def test_a_data_directory_too_long_for_a_socket_address_has_no_shared_writer() -> None:
    assert socket_path(Path("/" + "d" * 95)) is not None  # 107 bytes with "/write.sock"
    assert socket_path(Path("/" + "d" * 96)) is None
