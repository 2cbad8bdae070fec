"""Listener: a handler that fails is logged and gives its connection slot back; on a
shared socket, new connections go to the process holding fewer, and a reserve takes
them only while no other process accepts."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import ssl
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import pytest
import trustme
import uvloop

from postroom.net.listener import Handler, Listener
from postroom.net.shares import MARGIN, AcceptShares, AcceptSlot
from postroom.net.sockets import listening_socket
from postroom.net.stream import Stream
from postroom.net.throttle import ConnectionCounter


async def test_a_failing_handler_is_logged_and_keeps_no_connection_slot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def handler(stream: Stream) -> None:
        nonlocal calls
        calls += 1
        if calls <= 5:
            raise RuntimeError("handler fault")
        stream.write(b"served\r\n")
        await stream.drain()

    counter = ConnectionCounter(max_total=1, max_per_ip=1)
    listener = Listener(
        address="127.0.0.1", port=0, handler=handler, counter=counter, refusal=b"refused\r\n"
    )
    await listener.start()
    try:
        with caplog.at_level(logging.ERROR, logger="postroom.net"):
            for _ in range(6):
                reader, writer = await asyncio.open_connection("127.0.0.1", listener.bound_port)
                async with asyncio.timeout(10):
                    answer = await reader.read()
                writer.close()
                await writer.wait_closed()
    finally:
        listener.stop_accepting()
        await listener.wait_closed()

    assert answer == b"served\r\n"  # not b"refused": the five failures kept no slot
    assert counter.total == 0
    failures = [r for r in caplog.records if r.name == "postroom.net"]
    assert len(failures) == 5
    assert all(r.exc_info is not None for r in failures)
    assert "client=127.0.0.1 listener=127.0.0.1:" in failures[0].getMessage()


async def test_a_listener_on_a_shared_socket_leaves_new_connections_to_one_holding_fewer() -> None:
    """Two listeners on one listening socket stand for two accepting processes. The
    first took 8 connections while the second was not accepting; of the next 8, opened
    all at once, the first steps aside for the second until it leads by less than
    MARGIN. Each taking its turn (the event loop's own servers) would split them 4/4."""
    release = asyncio.Event()
    handler = greets_until(release)

    shared = listening_socket("127.0.0.1", 0, backlog=64)
    shares = AcceptShares(2)

    def listener(sock: socket.socket, index: int) -> Listener:
        return shared_listener(handler, sock, shares.slot(index))

    duplicate = shared.dup()  # another process's descriptor of the same socket
    first, second = listener(shared, 0), listener(duplicate, 1)
    port = first.bound_port
    clients: list[asyncio.StreamWriter] = []

    async def connect(count: int) -> None:
        async def one() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            clients.append(writer)
            assert await reader.readline() == b"hello\r\n"

        async with asyncio.timeout(10):
            await asyncio.gather(*(one() for _ in range(count)))

    await first.start()
    try:
        await connect(8)
        assert (first.connections, second.connections) == (8, 0)
        await second.start()
        await connect(8)
        assert first.connections + second.connections == 16
        assert first.connections - second.connections <= MARGIN, (
            first.connections,
            second.connections,
        )
        assert shares.held(0) == first.connections
        assert shares.held(1) == second.connections
    finally:
        await close_all(release, clients, (first, second), (shared, duplicate))
    assert shares.held(0) is None and shares.held(1) is None  # withdrawn at stop


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_an_implicit_tls_listener_on_a_shared_socket_serves_after_the_handshake(
    run: Callable[[Coroutine[Any, Any, bytes]], bytes],
) -> None:
    """The listener opens what it accepted with the loop's ``connect_accepted_socket``,
    which on uvloop answers with its own TLS layer, not the protocol the listener made."""
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)

    async def handler(stream: Stream) -> None:
        stream.write(b"hello over " + str(stream.get_extra_info("ssl_object").version()).encode())
        await stream.drain()

    async def main() -> bytes:
        sock = listening_socket("127.0.0.1", 0, backlog=8)
        listener = shared_listener(handler, sock, AcceptShares(2).slot(0), server_tls)
        await listener.start()
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", listener.bound_port, ssl=client_tls
            )
            async with asyncio.timeout(10):
                answer = await reader.read()
            writer.close()
            return answer
        finally:
            listener.stop_accepting()
            await listener.wait_closed()
            sock.close()

    assert run(main()).startswith(b"hello over TLSv1.")


async def test_a_shared_listener_that_cannot_accept_says_so_and_accepts_again_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Out of file descriptors (EMFILE): the error is logged, the listener pauses rather
    than spin on a socket that stays readable, and takes the connection once it can."""

    async def handler(stream: Stream) -> None:
        stream.write(b"hello\r\n")
        await stream.drain()

    sock = listening_socket("127.0.0.1", 0, backlog=8)
    listener = shared_listener(handler, sock, AcceptShares(1).slot(0))
    await listener.start()
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    client = socket.create_connection(("127.0.0.1", listener.bound_port))
    try:
        lowest_free = os.open(os.devnull, os.O_RDONLY)  # the kernel gives the lowest
        os.close(lowest_free)
        logged = _Logged()
        net_log = logging.getLogger("postroom.net")
        net_log.addHandler(logged)
        with caplog.at_level(logging.ERROR, logger="postroom.net"):
            resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, limits[1]))
            try:
                async with asyncio.timeout(10):
                    await logged.event.wait()
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, limits)
                net_log.removeHandler(logged)
        assert "cannot accept on 127.0.0.1:" in caplog.records[0].getMessage()
        assert len(caplog.records) == 1  # paused, not spinning
        client.setblocking(False)
        async with asyncio.timeout(10):  # taken once the pause ended
            assert await asyncio.get_running_loop().sock_recv(client, 100) == b"hello\r\n"
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        client.close()
        listener.stop_accepting()
        await listener.wait_closed()
        sock.close()


async def test_a_reserve_listener_accepts_only_while_no_other_process_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The primary's listener beside its accept workers. Alone (at the start) it takes
    the connections; once a worker accepts (told at once, as when the workers say they
    listen) it leaves every one to the worker, and publishes no count the worker would
    step aside for; the worker gone (withdrawn at its stop), it takes them again, and
    leaves them to a worker started again from its next look on."""
    release = asyncio.Event()
    handler = greets_until(release)

    sock = listening_socket("127.0.0.1", 0, backlog=64)
    duplicate = sock.dup()  # the worker's descriptor of the same socket
    shares = AcceptShares(2)
    reserve = shared_listener(handler, sock, shares.slot(0), reserve=True)
    worker = shared_listener(handler, duplicate, shares.slot(1))
    again = shared_listener(handler, duplicate, shares.slot(1))  # the worker restarted
    clients: list[asyncio.StreamWriter] = []

    async def connect(count: int) -> None:
        for _ in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", reserve.bound_port)
            clients.append(writer)
            async with asyncio.timeout(10):
                assert await reader.readline() == b"hello\r\n"

    net_log = logging.getLogger("postroom.net")

    def watching(text: str) -> _Logged:
        watch = _Logged(logging.INFO, text)
        net_log.addHandler(watch)
        return watch

    async def seen(watch: _Logged) -> None:
        try:
            async with asyncio.timeout(10):
                await watch.event.wait()
        finally:
            net_log.removeHandler(watch)

    caplog.set_level(logging.INFO, logger="postroom.net")
    await reserve.start()
    try:
        assert reserve.serving
        await connect(2)
        assert (reserve.connections, shares.held(0)) == (2, None)
        await worker.start()
        reserve.look()
        await connect(6)
        assert (reserve.connections, worker.connections) == (2, 6)
        gone = watching("no accept worker is up: this process accepts on 127.0.0.1:")
        worker.stop_accepting()
        await seen(gone)
        await connect(2)
        assert (reserve.connections, worker.connections) == (4, 6)
        back = watching("an accept worker is up again: this process leaves 127.0.0.1:")
        await again.start()
        await seen(back)
        await connect(3)
        assert (reserve.connections, again.connections) == (4, 3)
    finally:
        await close_all(release, clients, (reserve, worker, again), (sock, duplicate))
    assert not reserve.serving


def greets_until(release: asyncio.Event) -> Handler:
    """A handler that says hello and holds its connection until ``release``."""

    async def handler(stream: Stream) -> None:
        stream.write(b"hello\r\n")
        await stream.drain()
        await release.wait()

    return handler


async def close_all(
    release: asyncio.Event,
    clients: list[asyncio.StreamWriter],
    listeners: Sequence[Listener],
    sockets: Sequence[socket.socket],
) -> None:
    """The end of a test of listeners on one socket: their sessions released, the
    clients closed, the listeners stopped, the socket's descriptors closed."""
    release.set()
    for writer in clients:
        writer.close()
    for each in listeners:
        each.stop_accepting()
        await each.wait_closed()
    for sock in sockets:
        sock.close()


def shared_listener(
    handler: Handler,
    sock: socket.socket,
    slot: AcceptSlot,
    ssl_context: ssl.SSLContext | None = None,
    *,
    reserve: bool = False,
) -> Listener:
    """A listener on ``sock``, shared with other accepting processes as ``slot``."""
    return Listener(
        address="127.0.0.1",
        port=0,
        handler=handler,
        counter=ConnectionCounter(max_total=100, max_per_ip=100),
        refusal=b"refused\r\n",
        ssl_context=ssl_context,
        sock=sock,
        slot=slot,
        reserve=reserve,
    )


class _Logged(logging.Handler):
    """Sets ``event`` at the first record of ``level`` or above with ``text`` in it
    (emitted on the event loop's thread)."""

    def __init__(self, level: int = logging.ERROR, text: str = "") -> None:
        super().__init__(level)
        self.text = text
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()
