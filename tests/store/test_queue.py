"""The queue part of the Store contract: durable enqueue, reading messages back, group
commit and faults (every engine implementing QueueStore passes it)."""

from __future__ import annotations

import asyncio
import hashlib
import random
from pathlib import Path
from typing import Any

import pytest

from postroom.errors import StoreFull, StoreUnavailable
from postroom.ids import new_queue_id
from postroom.mail.address import Address
from postroom.mail.envelope import (
    DsnRequest,
    Envelope,
    Notify,
    Recipient,
    Ret,
    Source,
    SourceKind,
)
from postroom.mail.spool import SpooledBody
from postroom.store import (
    NewMessage,
    QueueStore,
    RecipientState,
    RecipientStatus,
    StoredMessage,
)
from tests.store.conftest import Backend
from tests.store.factories import HEADER, NOW, new_message, writer_held

pytestmark = pytest.mark.store_parts("queue")


async def queued(tasks: list[asyncio.Task[Any]]) -> None:
    """Let each task run up to its first await, where its job is in the queue."""
    for _ in range(3):
        await asyncio.sleep(0)
    assert not any(task.done() for task in tasks)


# -- the queue --------------------------------------------------------------------------
async def test_round_trip_of_every_field(store: QueueStore) -> None:
    body = b"From: Alice <alice@example.org>\r\nSubject: caf\xc3\xa9\r\n\r\n\x00\xffbytes\r\n.\r\n"
    spool = SpooledBody()
    spool.write(body)
    message = NewMessage(
        id=new_queue_id(NOW),
        envelope=Envelope(
            sender=Address("alice", "example.org"),
            recipients=(
                Recipient(
                    Address("bob", "example.net"),
                    notify=frozenset({Notify.DELAY, Notify.SUCCESS, Notify.FAILURE}),
                    orcpt="rfc822;Bob@Example.NET",
                ),
                Recipient(Address("carol", "bücher.example"), notify=frozenset({Notify.NEVER})),
                Recipient(Address("dave", "example.com")),
            ),
            dsn=DsnRequest(ret=Ret.HDRS, envid="QQ314159"),
            body="8BITMIME",
            smtputf8=True,
        ),
        source=Source(
            SourceKind.SMTP,
            principal="app@example.org",
            client_ip="2001:db8::25",
            client_port=50123,
            helo="client.example.net",
            reverse_dns="client.example.net",
            protocol="ESMTPSA",
            tls="TLSv1.3 TLS_AES_256_GCM_SHA384",
            listener="submission",
        ),
        received_at=NOW + 0.125,
        header=HEADER,
        body=spool,
    )
    await store.enqueue(message)

    def state(address: str, notify: str | None, orcpt: str | None = None) -> RecipientState:
        return RecipientState(address, RecipientStatus.QUEUED, notify, orcpt, 0, NOW + 0.125, None)

    expected = StoredMessage(
        id=message.id,
        sender="alice@example.org",
        recipients=(
            state("bob@example.net", "SUCCESS,FAILURE,DELAY", "rfc822;Bob@Example.NET"),
            state("carol@bücher.example", "NEVER"),
            state("dave@example.com", None),
        ),
        ret="HDRS",
        envid="QQ314159",
        body_type="8BITMIME",
        smtputf8=True,
        size=len(HEADER) + len(body),
        received_at=NOW + 0.125,
        source_kind="smtp",
        principal="app@example.org",
        client_ip="2001:db8::25",
        helo="client.example.net",
        protocol="ESMTPSA",
        tls="TLSv1.3 TLS_AES_256_GCM_SHA384",
        held=False,
        client_port=50123,
        reverse_dns="client.example.net",
        listener="submission",
    )
    assert await store.message(message.id) == expected
    assert await store.messages() == [expected]
    assert await store.read_body(message.id) == HEADER + body
    assert await store.count_messages() == 1


async def test_null_sender_and_no_dsn_parameters(store: QueueStore) -> None:
    message = new_message(sender=None)
    await store.enqueue(message)
    stored = await store.message(message.id)
    assert stored is not None
    assert (stored.sender, stored.ret, stored.envid, stored.smtputf8) == ("", None, None, False)
    assert stored.body_type == "7BIT"
    assert (stored.principal, stored.client_port, stored.tls, stored.listener) == (None,) * 4
    assert stored.recipients[0].notify is None
    assert stored.recipients[0].orcpt is None


async def test_unknown_message(store: QueueStore) -> None:
    assert await store.message("0" * 16) is None
    assert await store.read_body("0" * 16) is None


async def test_empty_body_and_empty_message(store: QueueStore) -> None:
    header_only = new_message(b"")
    nothing = new_message(b"", header=b"")
    await store.enqueue(header_only)
    await store.enqueue(nothing)
    assert await store.read_body(header_only.id) == HEADER
    assert await store.read_body(nothing.id) == b""
    stored = await store.message(nothing.id)
    assert stored is not None and stored.size == 0


async def test_large_spooled_body_is_exact(store: QueueStore, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool = SpooledBody(spool_dir)
    digest = hashlib.sha256(HEADER)
    block = random.Random(25).randbytes(1 << 20)
    for i in range(25):
        chunk = bytes([i]) + block[1:]
        spool.write(chunk)
        digest.update(chunk)
    assert not spool.in_memory
    message = new_message(spool=spool)
    await store.enqueue(message)
    spool.close()
    stored = await store.read_body(message.id)
    assert stored is not None
    assert len(stored) == len(HEADER) + 25 * (1 << 20)
    assert hashlib.sha256(stored).hexdigest() == digest.hexdigest()
    assert list(spool_dir.iterdir()) == []


async def test_concurrent_enqueues_share_commits(store: QueueStore, backend: Backend) -> None:
    committer = backend.committer(store)
    before = committer.commits
    messages = [new_message(b"x" * 4096, at=NOW + i / 1000) for i in range(200)]
    await asyncio.gather(*(store.enqueue(m) for m in messages))
    commits = committer.commits - before
    assert 1 <= commits <= 20, commits
    stored = await store.messages(limit=1000)
    assert [m.id for m in stored] == sorted(m.id for m in messages)
    assert await store.count_messages() == 200


async def test_messages_are_in_id_order_and_paginated(store: QueueStore) -> None:
    messages = [new_message(at=NOW + i) for i in range(25)]
    for message in random.Random(7).sample(messages, len(messages)):
        await store.enqueue(message)
    ids = [m.id for m in messages]
    first = await store.messages(limit=10)
    assert [m.id for m in first] == ids[:10]
    second = await store.messages(limit=10, after=first[-1].id)
    assert [m.id for m in second] == ids[10:20]
    third = await store.messages(limit=10, after=second[-1].id)
    assert [m.id for m in third] == ids[20:]
    assert await store.messages(limit=10, after=ids[-1]) == []
    assert await store.messages(limit=0) == []
    assert [m.id for m in await store.messages(after="")] == ids


# -- failures -----------------------------------------------------------------------------
async def test_full_store_fails_only_the_message_that_does_not_fit(
    backend: Backend, tmp_path: Path
) -> None:
    store = await backend.open_capped(256 * 1024)
    committer = backend.committer(store)
    big_spool = SpooledBody(tmp_path / "spool", threshold=64 * 1024)
    big_spool.write(b"y" * (1 << 20))
    big = new_message(spool=big_spool)
    small = [new_message(b"z" * 2048, at=NOW + i) for i in range(5)]
    fallbacks = committer.fallbacks
    async with writer_held(committer):
        tasks = [asyncio.create_task(store.enqueue(m)) for m in [small[0], big, *small[1:]]]
        await queued(tasks)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    big_spool.close()
    assert isinstance(results[1], StoreFull)
    assert [r for i, r in enumerate(results) if i != 1] == [None] * 5
    assert committer.fallbacks == fallbacks + 1  # they were one batch, and it failed
    assert await store.message(big.id) is None
    assert await store.read_body(big.id) is None
    assert backend.rows_of(store, big.id) == 0
    assert [m.id for m in await store.messages()] == sorted(m.id for m in small)
    for m in small:
        assert await store.read_body(m.id) == HEADER + b"z" * 2048
    await store.enqueue(new_message())  # the store still works


async def test_lock_held_too_long_is_unavailable(backend: Backend) -> None:
    store = await backend.open(busy_timeout=0.05)
    message = new_message()
    with backend.write_lock_held(), pytest.raises(StoreUnavailable):
        await store.enqueue(message)
    assert backend.rows_of(store, message.id) == 0
    await store.enqueue(message)
    assert await store.message(message.id) is not None


async def test_cancelled_enqueue_returns_only_after_its_job_ran(
    store: QueueStore, backend: Backend, tmp_path: Path
) -> None:
    spool = SpooledBody(tmp_path / "spool", threshold=16)
    spool.write(b"a body on disk, read by the writer thread\r\n")
    message = new_message(spool=spool)
    async with writer_held(backend.committer(store)):
        task = asyncio.create_task(store.enqueue(message))
        await queued([task])
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=0.05)
        assert not done  # still waiting for the writer, which may read the body
    with pytest.raises(asyncio.CancelledError):
        await task
    spool.close()
    assert (
        await store.read_body(message.id)
        == HEADER + b"a body on disk, read by the writer thread\r\n"
    )


async def test_aclose_finishes_pending_enqueues(backend: Backend) -> None:
    store = await backend.open()
    messages = [new_message(at=NOW + i) for i in range(50)]
    async with writer_held(backend.committer(store)):
        tasks = [asyncio.create_task(store.enqueue(m)) for m in messages]
        await queued(tasks)
        closing = asyncio.create_task(store.aclose())
        await asyncio.sleep(0)
    await closing
    assert await asyncio.gather(*tasks) == [None] * 50
    with pytest.raises(StoreUnavailable):
        await store.enqueue(new_message())
    reopened = await backend.open()
    assert await reopened.count_messages() == 50


async def test_read_heads_gives_the_first_bytes_of_each_stored_message(store: QueueStore) -> None:
    long = new_message(b"Subject: big\r\n\r\n" + b"x" * 100_000)
    short = new_message(b"Subject: small\r\n\r\nhi\r\n")
    await store.enqueue(long)
    await store.enqueue(short)
    heads = await store.read_heads([long.id, short.id, "MISSING"], 64)
    assert set(heads) == {long.id, short.id}
    assert len(heads[long.id]) == 64
    assert heads[long.id].startswith(b"Received: ")
    assert heads[short.id] == (await store.read_body(short.id) or b"")[:64]
    assert await store.read_heads([], 64) == {}
