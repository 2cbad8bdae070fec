"""Accept balance: processes sharing a listening socket leave new connections to the one
with fewest open, never for long, and serve them as the loop's own server would."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trustme
import uvloop

from postroom.net.balance import SLACK, AcceptShares
from postroom.net.listener import Handler, Listener
from postroom.net.sockets import listening_socket
from postroom.net.stream import Stream
from postroom.net.throttle import ConnectionCounter

# What `postroom serve` runs on (uvloop, when installed) and asyncio's own loop.
Runner = Callable[[Coroutine[Any, Any, None]], None]
LOOPS = pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])


def view(shares: AcceptShares, index: int, slots: int = 2) -> AcceptShares:
    """Another process's view of the same table (as an accept worker maps it)."""
    return AcceptShares(os.dup(shares.fd), slots, index)


def open_(shares: AcceptShares, count: int) -> None:
    for _ in range(count):
        shares.opened()


def test_a_process_is_busier_only_than_an_accepting_process_with_fewer_open() -> None:
    primary = AcceptShares.create(3)
    worker = view(primary, 1, 3)
    try:
        primary.accepting()
        open_(primary, SLACK + 1)
        assert not primary.busier()  # the others have not started accepting
        worker.accepting()
        assert primary.busier()  # more than SLACK over the worker's 0
        assert not worker.busier()
        worker.opened()
        assert not primary.busier() and not worker.busier()  # within SLACK
        open_(worker, 2 * SLACK + 1)
        assert worker.busier()
        primary.gone(0)  # the primary's view of a process that exited
        assert not worker.busier()
    finally:
        worker.close()
        primary.close()


def test_a_worker_that_stops_accepting_is_left_out() -> None:
    primary = AcceptShares.create(2)
    worker = view(primary, 1)
    try:
        primary.accepting()
        worker.accepting()
        open_(primary, SLACK + 1)
        assert primary.busier()
        worker.stopped()
        assert not primary.busier()
    finally:
        worker.close()
        primary.close()


class Served:
    """Which listener served each connection, and whether its socket had TCP_NODELAY."""

    def __init__(self) -> None:
        self.by: list[str] = []
        self.nodelay: list[bool] = []
        self.release = asyncio.Event()  # ends the held connections

    def handler(self, name: str, *, hold: bool) -> Handler:
        async def handle(stream: Stream) -> None:
            sock = stream.get_extra_info("socket")
            self.nodelay.append(bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
            self.by.append(name)
            stream.write(f"{name}\r\n".encode())
            await stream.drain()
            if hold:
                await self.release.wait()

        return handle


@asynccontextmanager
async def listening(
    sock: socket.socket,
    shares: AcceptShares,
    handler: Handler,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Listener]:
    listener = Listener(
        address="127.0.0.1",
        port=0,
        handler=handler,
        counter=ConnectionCounter(max_total=100, max_per_ip=100),
        refusal=b"refused\r\n",
        ssl_context=ssl_context,
        sock=sock,
        shares=shares,
    )
    await listener.start()
    try:
        yield listener
    finally:
        listener.stop_accepting()
        listener.cancel_connections()
        await listener.wait_closed()


async def greeting(
    port: int, ssl_context: ssl.SSLContext | None = None
) -> tuple[bytes, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ssl_context, server_hostname="localhost" if ssl_context else None
    )
    async with asyncio.timeout(10):
        return await reader.readline(), writer


async def connect(
    port: int, count: int, writers: list[asyncio.StreamWriter], *, expect: bytes
) -> None:
    """``count`` connections, one after another, each greeted with ``expect``."""
    for _ in range(count):
        line, writer = await greeting(port)
        writers.append(writer)
        assert line == expect


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
        await writer.wait_closed()


@LOOPS
def test_new_connections_go_to_the_process_with_fewer_open(run: Runner) -> None:
    run(new_connections_go_to_the_process_with_fewer_open())


async def new_connections_go_to_the_process_with_fewer_open() -> None:
    sock = listening_socket("127.0.0.1", 0, backlog=16)
    port = sock.getsockname()[1]
    primary = AcceptShares.create(2)
    worker = view(primary, 1)
    served = Served()
    writers: list[asyncio.StreamWriter] = []
    try:
        async with listening(sock, primary, served.handler("primary", hold=True)):
            held = 2 * SLACK + 2
            # The worker is not accepting yet: the primary takes all.
            await connect(port, held, writers, expect=b"primary\r\n")
            # The worker starts on the same socket (its own descriptor, as inherited).
            worker_sock = socket.socket(fileno=os.dup(sock.fileno()))
            async with listening(worker_sock, worker, served.handler("worker", hold=True)):
                # while the primary has more than SLACK over
                await connect(port, held - SLACK, writers, expect=b"worker\r\n")
                served.release.set()
    finally:
        await close_all(writers)
        worker.close()
        primary.close()
    assert served.by == ["primary"] * held + ["worker"] * (held - SLACK)
    assert all(served.nodelay)  # replies go out at once, as with the loop's own server


async def test_a_process_that_never_takes_its_share_delays_no_connection_for_good() -> None:
    sock = listening_socket("127.0.0.1", 0, backlog=16)
    port = sock.getsockname()[1]
    primary = AcceptShares.create(2)
    stuck = view(primary, 1)
    stuck.accepting()  # says it accepts, with nothing open, and never does
    served = Served()
    writers: list[asyncio.StreamWriter] = []
    try:
        async with listening(sock, primary, served.handler("primary", hold=True)):
            # busier than the stuck one from the last two on
            await connect(port, SLACK + 3, writers, expect=b"primary\r\n")
            served.release.set()
    finally:
        await close_all(writers)
        stuck.close()
        primary.close()


@LOOPS
def test_a_balanced_tls_listener_handshakes_first(run: Runner) -> None:
    run(a_balanced_tls_listener_handshakes_first())


async def a_balanced_tls_listener_handshakes_first() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    sock = listening_socket("127.0.0.1", 0, backlog=16)
    primary = AcceptShares.create(2)
    served = Served()
    try:
        async with listening(sock, primary, served.handler("tls", hold=False), server_context):
            line, writer = await greeting(sock.getsockname()[1], client_context)
            await close_all([writer])
    finally:
        primary.close()
    assert line == b"tls\r\n"


async def test_stopping_a_balanced_listener_marks_the_process_out() -> None:
    sock = listening_socket("127.0.0.1", 0, backlog=16)
    port = sock.getsockname()[1]
    primary = AcceptShares.create(2)
    worker = view(primary, 1)
    served = Served()
    try:
        worker.accepting()
        open_(worker, SLACK + 1)
        async with listening(sock, primary, served.handler("primary", hold=False)) as listener:
            serving = listener.serving
            assert worker.busier()  # more than SLACK over the primary's 0
        assert serving and not listener.serving
        assert listener.bound_port == port  # still named (in log lines) once closed
        assert not worker.busier()  # the stopped primary is not compared
    finally:
        worker.close()
        primary.close()
