"""Large bodies, on every engine: a body above the store's ``inline_body_max`` is kept
apart from its row where the engine has somewhere for it (PostgreSQL: a large object;
SQLite keeps every body in its row), reads back byte for byte, goes when its message or
its body is removed, and a write that fails half way leaves neither a row nor an object.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import psycopg
import pytest

from postroom.errors import StoreUnavailable
from postroom.mail.spool import SpooledBody
from tests.store.conftest import Backend, PostgresBackend
from tests.store.factories import HEADER, NOW, delivered, new_message
from tests.store.test_log import settle
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.store_parts("log", "queue")

LIMIT = 64 * 1024  # inline_body_max of the stores here


class Spooled(Protocol):
    def __call__(
        self, data: bytes, kind: Callable[[Path], SpooledBody] = ..., /
    ) -> SpooledBody: ...


def _spool_file(directory: Path) -> SpooledBody:
    return SpooledBody(directory, threshold=1024)


@pytest.fixture
def spooled(tmp_path: Path) -> Iterator[Spooled]:
    """Bodies in spool files (closed at the end), as large messages arrive."""
    made: list[SpooledBody] = []

    def spool(data: bytes, kind: Callable[[Path], SpooledBody] = _spool_file, /) -> SpooledBody:
        body = kind(tmp_path)
        made.append(body)
        body.write(data)
        assert not body.in_memory
        return body

    yield spool
    for body in made:
        body.close()


async def test_bodies_on_either_side_of_the_limit_read_back_exactly(
    backend: Backend, spooled: Spooled
) -> None:
    store = await backend.open(inline_body_max=LIMIT)
    data = random.Random(13).randbytes(3 * LIMIT)
    at_limit = new_message(data[: LIMIT - len(HEADER)])
    above_in_memory = new_message(data[: LIMIT - len(HEADER) + 1])
    above_spooled = new_message(spool=spooled(data))
    empty_header = new_message(data, header=b"")
    messages = (at_limit, above_in_memory, above_spooled, empty_header)
    for message in messages:
        await store.enqueue(message)
    for message in messages:
        assert await store.read_body(message.id) == message.header + message.body.getvalue()
        stored = await store.message(message.id)
        assert stored is not None and stored.size == message.size
    apart = 3 if backend.stores_large_bodies_apart else 0
    assert backend.bodies_apart(store) == (apart, 0)


async def test_removing_a_message_removes_its_large_body(
    backend: Backend, spooled: Spooled
) -> None:
    store = await backend.open(inline_body_max=LIMIT)
    deleted, purged, body_purged, kept = (
        new_message(spool=spooled(bytes([i]) * (2 * LIMIT)), at=NOW + i) for i in range(4)
    )
    for message in (deleted, purged, body_purged, kept):
        await store.enqueue(message)
    assert await store.delete(deleted.id)
    await settle(store, purged, delivered("bob@example.net"))
    assert await store.purge(NOW + 2) == 1  # purged; body_purged was received later
    await settle(store, body_purged, delivered("bob@example.net"))
    assert await store.purge_bodies(NOW + 3) == 1
    assert await store.read_body(body_purged.id) is None
    assert await store.message(body_purged.id) is not None  # its log stays
    for gone in (deleted, purged):
        assert backend.rows_of(store, gone.id) == 0
    assert await store.read_body(kept.id) == HEADER + bytes([3]) * (2 * LIMIT)
    assert backend.bodies_apart(store) == ((1, 0) if backend.stores_large_bodies_apart else (0, 0))


class FailingBody(SpooledBody):
    """A spooled body whose reading fails after its first chunk: the writer is half way
    through the body when the fault strikes. ``fault`` runs then; it raises by default."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, threshold=1024)

    def fault(self) -> None:
        raise OSError("the spool file could not be read")

    def iter_chunks(self, chunk_size: int = 1 << 20, start: int = 0) -> Iterator[bytes]:
        chunks = super().iter_chunks(min(chunk_size, LIMIT), start)
        yield next(chunks)
        self.fault()
        yield from chunks


async def fails_leaving_nothing(
    backend: Backend, spooled: Spooled, kind: Callable[[Path], SpooledBody]
) -> None:
    """A large body of ``kind`` fails to be stored, and leaves no row and no object; the
    store then stores the next one."""
    store = await backend.open(inline_body_max=LIMIT)
    message = new_message(spool=spooled(b"x" * (4 * LIMIT), kind))
    with pytest.raises(StoreUnavailable):
        await store.enqueue(message)
    assert backend.rows_of(store, message.id) == 0
    assert backend.bodies_apart(store) == (0, 0)
    after = new_message(spool=spooled(b"y" * (2 * LIMIT)))
    await store.enqueue(after)  # the writer goes on (connecting again if it must)
    assert await store.read_body(after.id) == HEADER + b"y" * (2 * LIMIT)
    apart = 1 if backend.stores_large_bodies_apart else 0
    assert backend.bodies_apart(store) == (apart, 0)


async def test_a_large_body_failing_half_way_leaves_nothing(
    backend: Backend, spooled: Spooled
) -> None:
    await fails_leaving_nothing(backend, spooled, FailingBody)


class KilledWriterBody(FailingBody):
    """Half way through the body, the writer's database session is killed (as when its
    node dies: the server sees the connection go and aborts the transaction)."""

    def __init__(self, directory: Path, url: str) -> None:
        super().__init__(directory)
        self.url = url

    def fault(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            killed = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND state = 'idle in transaction'"
            ).fetchall()
        assert killed == [(True,)]


async def test_a_session_killed_while_writing_a_large_body_leaves_nothing(
    postgres_cluster: PostgresCluster, spooled: Spooled
) -> None:
    """PostgreSQL only: SQLite has no session apart from the process."""
    backend = PostgresBackend(postgres_cluster)
    try:
        killed = functools.partial(KilledWriterBody, url=backend.url)
        await fails_leaving_nothing(backend, spooled, killed)
    finally:
        await backend.aclose()
