"""The Store contract: every engine passes this suite unchanged (see conftest.BACKENDS)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from postroom.errors import StoreError, StoreFull, StoreUnavailable
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
    RecipientState,
    RecipientStatus,
    Store,
    StoredMessage,
    UserRecord,
    open_store,
)
from postroom.store.groupcommit import GroupCommitter
from tests.store.conftest import Backend
from tests.store.factories import HEADER, NOW, new_message


@contextlib.asynccontextmanager
async def writer_held(committer: GroupCommitter[Any]) -> AsyncIterator[None]:
    """Keep the writer busy meanwhile, so what is submitted now forms the next batch."""
    entered, release = threading.Event(), threading.Event()

    def hold(conn: object) -> None:
        entered.set()
        release.wait(30)

    holder = asyncio.create_task(committer.submit(hold))
    await asyncio.to_thread(entered.wait, 30)
    try:
        yield
    finally:
        release.set()
        await holder


async def queued(tasks: list[asyncio.Task[Any]]) -> None:
    """Let each task run up to its first await, where its job is in the queue."""
    for _ in range(3):
        await asyncio.sleep(0)
    assert not any(task.done() for task in tasks)


# -- the queue --------------------------------------------------------------------------
async def test_round_trip_of_every_field(store: Store) -> None:
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


async def test_null_sender_and_no_dsn_parameters(store: Store) -> None:
    message = new_message(sender=None)
    await store.enqueue(message)
    stored = await store.message(message.id)
    assert stored is not None
    assert (stored.sender, stored.ret, stored.envid, stored.smtputf8) == ("", None, None, False)
    assert stored.body_type == "7BIT"
    assert (stored.principal, stored.client_port, stored.tls, stored.listener) == (None,) * 4
    assert stored.recipients[0].notify is None
    assert stored.recipients[0].orcpt is None


async def test_unknown_message(store: Store) -> None:
    assert await store.message("0" * 16) is None
    assert await store.read_body("0" * 16) is None


async def test_empty_body_and_empty_message(store: Store) -> None:
    header_only = new_message(b"")
    nothing = new_message(b"", header=b"")
    await store.enqueue(header_only)
    await store.enqueue(nothing)
    assert await store.read_body(header_only.id) == HEADER
    assert await store.read_body(nothing.id) == b""
    stored = await store.message(nothing.id)
    assert stored is not None and stored.size == 0


async def test_large_spooled_body_is_exact(store: Store, tmp_path: Path) -> None:
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


async def test_concurrent_enqueues_share_commits(store: Store, backend: Backend) -> None:
    committer = backend.committer(store)
    before = committer.commits
    messages = [new_message(b"x" * 4096, at=NOW + i / 1000) for i in range(200)]
    await asyncio.gather(*(store.enqueue(m) for m in messages))
    commits = committer.commits - before
    assert 1 <= commits <= 20, commits
    stored = await store.messages(limit=1000)
    assert [m.id for m in stored] == sorted(m.id for m in messages)
    assert await store.count_messages() == 200


async def test_messages_are_in_id_order_and_paginated(store: Store) -> None:
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
    store: Store, backend: Backend, tmp_path: Path
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


# -- the directory ------------------------------------------------------------------------
async def test_domains(store: Store) -> None:
    assert await store.domains() == []
    assert await store.add_domain("example.org", NOW) is True
    assert await store.add_domain("xn--bcher-kva.example", NOW) is True
    assert await store.add_domain("example.org", NOW) is False
    assert await store.domains() == ["example.org", "xn--bcher-kva.example"]
    assert await store.is_local_domain("example.org") is True
    assert await store.is_local_domain("example.net") is False
    assert await store.remove_domain("example.org") is True
    assert await store.remove_domain("example.org") is False
    assert await store.is_local_domain("example.org") is False
    assert await store.domains() == ["xn--bcher-kva.example"]


async def test_users(store: Store) -> None:
    app = UserRecord("app@example.org", "$argon2id$one", ("example.org", "example.net"), NOW)
    bob = UserRecord("bob@example.org", "$argon2id$two", (), NOW + 1)
    assert await store.user(app.address) is None
    assert await store.add_user(bob) is True
    assert await store.add_user(app) is True
    assert await store.add_user(UserRecord(app.address, "other", (), NOW)) is False
    assert await store.user(app.address) == app
    assert await store.users() == [app, bob]
    assert await store.set_password(bob.address, "$argon2id$new") is True
    assert await store.set_password("nobody@example.org", "x") is False
    assert await store.user(bob.address) == UserRecord(bob.address, "$argon2id$new", (), NOW + 1)
    assert await store.remove_user(app.address) is True
    assert await store.remove_user(app.address) is False
    assert await store.users() == [UserRecord(bob.address, "$argon2id$new", (), NOW + 1)]


async def test_user_sender_rights_are_stored_and_replaced(store: Store) -> None:
    anyone = UserRecord("any@example.org", "h", (), NOW, any_sender=True)
    assert await store.add_user(anyone)
    assert await store.user(anyone.address) == anyone
    assert await store.set_user_senders(anyone.address, ["example.net"], False) is True
    assert await store.user(anyone.address) == UserRecord(
        anyone.address, "h", ("example.net",), NOW, any_sender=False
    )
    assert await store.set_user_senders("nobody@example.org", [], True) is False


async def test_recipient_lookup(store: Store) -> None:
    await store.add_user(UserRecord("app@example.org", "h", (), NOW))
    assert await store.recipient("example.org", "app@example.org") == (False, False)
    await store.add_domain("example.org", NOW)
    assert await store.recipient("example.org", "app@example.org") == (True, True)
    assert await store.recipient("EXAMPLE.org", "app@example.org") == (True, True)
    assert await store.recipient("example.org", "ghost@example.org") == (True, False)
    assert await store.recipient("example.net", "app@example.org") == (False, False)


async def test_a_second_process_sees_writes_at_once(store: Store, backend: Backend) -> None:
    cli = await backend.open()
    assert await store.add_domain("example.org", NOW) is True
    assert await cli.is_local_domain("example.org") is True
    assert await cli.add_user(UserRecord("app@example.org", "h", (), NOW)) is True
    assert await store.user("app@example.org") is not None
    assert await store.add_user(UserRecord("app@example.org", "h2", (), NOW)) is False
    await cli.remove_domain("example.org")
    assert await store.is_local_domain("example.org") is False
    message = new_message()
    await cli.enqueue(message)
    assert await store.read_body(message.id) == HEADER + b"Subject: hi\r\n\r\nHello\r\n"
    await store.enqueue(other := new_message(at=NOW + 1))
    assert [m.id for m in await cli.messages()] == [message.id, other.id]


# -- open_store ---------------------------------------------------------------------------
async def test_open_store_sqlite_relative_and_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for url, path in [
        ("sqlite:///data/a/postroom.db", tmp_path / "data" / "a" / "postroom.db"),
        (f"sqlite:///{tmp_path}/b/postroom.db", tmp_path / "b" / "postroom.db"),
    ]:
        store = await open_store(url)
        try:
            assert await store.add_domain("example.org", NOW) is True
        finally:
            await store.aclose()
        assert path.is_file()


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("postgresql://postroom@db/postroom", StoreError),
        ("sqlite:///", StoreError),
        ("sqlite:///:memory:", StoreError),
        ("mysql://db/postroom", StoreError),
        ("/var/lib/postroom/postroom.db", StoreError),
    ],
)
async def test_open_store_refuses(url: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        await open_store(url)
