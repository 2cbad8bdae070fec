"""Faults below the session: an exception from intake or the store reaches no client.

The fault is injected through the ``Store`` seam (the real SQLite store with a fault
armed), into a real SMTP server on real sockets: the command in progress gets 451 4.3.0,
the session ends with 421 4.3.0, the traceback goes to the log with the client, the
listener and the queue id, and the connection slot is given back.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from postroom.clock import SystemClock
from postroom.events import Bus, SmtpTransaction
from postroom.events.catalog import Event
from postroom.intake import Intake
from postroom.net.throttle import FailureThrottle
from postroom.smtp.server import SmtpServer
from postroom.store import NewMessage
from postroom.store.sqlite import SqliteStore
from tests.support.fds import open_files_under
from tests.support.servers import loopback_settings

MESSAGE = b"From: a@elsewhere.test\r\nTo: postmaster@example.test\r\nSubject: hi\r\n\r\nHello.\r\n"


class FaultyStore(SqliteStore):
    """The real store, with a fault that can be armed for RCPT's lookup or the commit."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.fail_recipient: Exception | None = None
        self.fail_enqueue: Exception | None = None

    async def recipient(self, domain: str, address: str) -> tuple[bool, bool]:
        if self.fail_recipient is not None:
            raise self.fail_recipient
        return await super().recipient(domain, address)

    async def enqueue(self, message: NewMessage) -> None:
        if self.fail_enqueue is not None:
            raise self.fail_enqueue
        await super().enqueue(message)


@dataclass
class Running:
    store: FaultyStore
    port: int
    spool_dir: Path
    transactions: list[SmtpTransaction]


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    # One connection per address at a time: a slot kept by a failed session would make
    # the next connection from 127.0.0.1 get 421 4.7.0.
    settings = loopback_settings(
        tmp_path / "data",
        listeners=[{"address": "127.0.0.1", "port": 0, "role": "mx"}],
        limits={"max_connections_per_ip": 1, "max_connections": 1},
    )
    store = FaultyStore(tmp_path / "postroom.db")
    await store.start()
    await store.add_domain("example.test", 0.0)
    transactions: list[SmtpTransaction] = []

    def keep(event: Event) -> None:
        if isinstance(event, SmtpTransaction):
            transactions.append(event)

    bus = Bus()
    bus.subscribe(keep)
    spool_dir = tmp_path / "spool"
    clock = SystemClock()
    intake = Intake(
        store=store,
        clock=clock,
        hostname="mail.test",
        spool_dir=spool_dir,
        spool_memory=0,  # every body in a spool file, so an unclosed one shows
        max_message_size=1024 * 1024,
        bus=bus,
    )

    async def nobody(username: str, password: str) -> None:
        return None

    server = SmtpServer(
        settings,
        intake=intake,
        authenticate=nobody,
        auth_throttle=FailureThrottle(store, clock, max_failures=3, window=60),
        ssl_context=None,
        bus=bus,
    )
    await server.start()
    try:
        yield Running(store, server.listeners[0].bound_port, spool_dir, transactions)
    finally:
        await server.stop(1.0)
        await store.aclose()


class Client:
    """Raw SMTP lines over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def reply(self) -> bytes:
        """One whole reply (its last line), or b"" at end of stream."""
        async with asyncio.timeout(10):
            while True:
                line = await self.reader.readline()
                if line[3:4] != b"-":
                    return line

    async def command(self, line: bytes) -> bytes:
        self.writer.write(line + b"\r\n")
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _send(client: Client) -> bytes:
    assert (await client.reply()).startswith(b"220 ")
    assert (await client.command(b"EHLO client.test")).startswith(b"250 ")
    assert (await client.command(b"MAIL FROM:<a@elsewhere.test>")).startswith(b"250 ")
    assert (await client.command(b"RCPT TO:<postmaster@example.test>")).startswith(b"250 ")
    assert (await client.command(b"DATA")).startswith(b"354 ")
    return await client.command(MESSAGE + b".")


# An OSError from below is a fault too, not the peer going away: the client is still there.
FAULTS = [
    RuntimeError("injected fault in enqueue()"),
    OSError(errno.EIO, "injected fault in enqueue()"),
    TimeoutError("injected fault in enqueue()"),
]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda fault: type(fault).__name__)
async def test_fault_at_commit_gets_451_then_421_and_the_traceback_goes_to_the_log(
    running: Running, caplog: pytest.LogCaptureFixture, fault: Exception
) -> None:
    running.store.fail_enqueue = fault
    with caplog.at_level(logging.ERROR, logger="postroom.smtp"):
        async with await Client.connect(running.port) as client:
            end_of_data = await _send(client)
            closing = await client.reply()
            after = await client.reader.read()

    assert end_of_data.startswith(b"451 4.3.0 ")
    assert closing.startswith(b"421 4.3.0 ")
    assert after == b""  # the server closed, and said nothing more (no traceback)
    [record] = [r for r in caplog.records if r.name == "postroom.smtp"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[1] is fault
    assert "client=127.0.0.1 listener=mx queue_id=" in record.getMessage()
    [transaction] = running.transactions
    queue_id = record.getMessage().rsplit("queue_id=", 1)[1]
    assert len(queue_id) == 16
    assert transaction.reply is not None
    assert (transaction.result, transaction.reply[:9]) == ("rejected", "451 4.3.0")
    assert await running.store.count_messages() == 0


async def test_fault_at_rcpt_answers_that_command_even_when_pipelined(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    running.store.fail_recipient = RuntimeError("injected fault in recipient()")
    with caplog.at_level(logging.ERROR, logger="postroom.smtp"):
        async with await Client.connect(running.port) as client:
            assert (await client.reply()).startswith(b"220 ")
            assert (await client.command(b"EHLO client.test")).startswith(b"250 ")
            client.writer.write(
                b"MAIL FROM:<a@elsewhere.test>\r\nRCPT TO:<postmaster@example.test>\r\nDATA\r\n"
            )
            replies = [await client.reply() for _ in range(3)]
            after = await client.reader.read()

    assert [r[:9] for r in replies] == [b"250 2.1.0", b"451 4.3.0", b"421 4.3.0"]
    assert after == b""
    assert "queue_id=" in caplog.records[-1].getMessage()
    assert "queue_id=-" not in caplog.records[-1].getMessage()


async def test_repeated_faults_leak_no_connection_slot_and_no_spool_file(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """With one connection allowed per address, every faulty session must give its slot
    back, or the next connection would be refused with 421 4.7.0."""
    running.store.fail_enqueue = RuntimeError("injected fault in enqueue()")
    with caplog.at_level(logging.ERROR, logger="postroom.smtp"):
        for _ in range(20):
            async with await Client.connect(running.port) as client:
                assert (await _send(client)).startswith(b"451 4.3.0 ")
                await client.reader.read()  # to the server's close
    assert len([r for r in caplog.records if r.name == "postroom.smtp"]) == 20
    assert open_files_under(running.spool_dir) == []

    running.store.fail_enqueue = None
    async with await Client.connect(running.port) as client:
        reply = await _send(client)
        assert (await client.command(b"QUIT")).startswith(b"221 ")
    assert reply.startswith(b"250 2.0.0 Ok: queued as ")
    assert await running.store.count_messages() == 1
