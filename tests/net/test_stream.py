"""Stream: one accepted connection, its read buffer ours; over real loopback sockets, on
asyncio's event loop and on uvloop's (what `postroom serve` runs on when installed)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pytest
import trustme
import uvloop

from postroom.net.stream import Stream


@dataclass
class Pair:
    server: Stream
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


async def connected(limit: int = 256 * 1024) -> tuple[asyncio.Server, Pair]:
    accepted: asyncio.Future[Stream] = asyncio.get_running_loop().create_future()
    listener = await asyncio.get_running_loop().create_server(
        lambda: Stream(accepted.set_result, limit=limit), "127.0.0.1", 0
    )
    port = listener.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    async with asyncio.timeout(10):
        stream = await accepted
    return listener, Pair(stream, reader, writer)


Runner = Callable[[Coroutine[Any, Any, None]], None]
LOOPS = pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])


async def with_pair(scenario: Callable[[Pair], Coroutine[Any, Any, None]]) -> None:
    listener, pair = await connected()
    try:
        await scenario(pair)
    finally:
        pair.writer.close()
        pair.server.close()
        listener.close()
        await listener.wait_closed()


async def read_exactly(stream: Stream, size: int) -> bytes:
    data = b""
    async with asyncio.timeout(10):
        while len(data) < size:
            chunk = await stream.read(size - len(data))
            assert chunk, "end of stream before the data"
            data += chunk
    return data


@LOOPS
def test_plaintext_behind_starttls_is_never_read_as_if_it_came_over_tls(run: Runner) -> None:
    run(with_pair(plaintext_behind_starttls))


async def plaintext_behind_starttls(pair: Pair) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    # One write: the injected command arrives with STARTTLS, before the handshake.
    pair.writer.write(b"STARTTLS\r\nMAIL FROM:<evil@elsewhere.test>\r\n")
    assert await read_exactly(pair.server, 10) == b"STARTTLS\r\n"
    pair.server.write(b"220 2.0.0 ready\r\n")
    assert await pair.reader.readline() == b"220 2.0.0 ready\r\n"

    async with asyncio.timeout(10):
        await asyncio.gather(
            pair.server.start_tls(server_context, handshake_timeout=10),
            pair.writer.start_tls(client_context, server_hostname="localhost"),
        )
    pair.writer.write(b"RCPT TO:<app@example.test>\r\n")
    # what follows the handshake, and not the plaintext read along with STARTTLS
    assert await pair.server.read(1024) == b"RCPT TO:<app@example.test>\r\n"
    assert pair.server.get_extra_info("ssl_object") is not None


@LOOPS
def test_more_than_the_limit_arrives_whole_and_in_order(run: Runner) -> None:
    run(more_than_the_limit())


async def more_than_the_limit() -> None:
    listener, pair = await connected(limit=1024)
    data = bytes(range(256)) * 4096  # 1 MiB: reading pauses and resumes many times
    try:
        pair.writer.write(data)
        assert await read_exactly(pair.server, len(data)) == data
    finally:
        pair.writer.close()
        pair.server.close()
        listener.close()
        await listener.wait_closed()


@LOOPS
def test_the_peer_closing_reads_as_end_of_stream_after_its_data(run: Runner) -> None:
    run(with_pair(peer_closing))


async def peer_closing(pair: Pair) -> None:
    pair.writer.write(b"QUIT\r\n")
    pair.writer.close()
    assert await read_exactly(pair.server, 6) == b"QUIT\r\n"
    async with asyncio.timeout(10):
        assert await pair.server.read(1024) == b""
        pair.server.close()
        await pair.server.wait_closed()
    with pytest.raises(ConnectionResetError):
        await pair.server.drain()


@LOOPS
def test_a_close_needs_no_bound_only_when_nothing_is_left_to_send(run: Runner) -> None:
    run(close_with_and_without_unsent_data())


async def close_with_and_without_unsent_data() -> None:
    listener, idle = await connected()
    other, stalled = await connected()
    try:
        idle.server.close()
        assert idle.server.closes_at_once()
        async with asyncio.timeout(10):
            await idle.server.wait_closed()  # the loop's next turn, no timer needed
        # A peer that reads nothing: what the transport still holds may never leave, so
        # waiting for the close must be bounded (the listener's timeout).
        while not stalled.server.transport.get_write_buffer_size():
            stalled.server.write(b"x" * 65536)
        stalled.server.close()
        assert not stalled.server.closes_at_once()
    finally:
        idle.writer.close()
        stalled.writer.transport.abort()
        stalled.server.transport.abort()
        for server in (listener, other):
            server.close()
            await server.wait_closed()
