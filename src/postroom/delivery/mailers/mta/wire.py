"""The socket edge of the outbound SMTP client: one connection, bytes out and bytes in.

``Wire`` wraps an asyncio transport whose protocol hands every byte received straight to
a receiver (the client core's ``receive_data``), also while nobody is waiting, so all the
replies to a pipelined batch (RFC 2920 3.1) are kept, in order, however they arrive.
Waiting for bytes, for the send buffer to drain and for a TLS handshake is bounded by a
timeout. It knows nothing of SMTP.

What can go wrong, all ``OSError``s: ``TimeoutError``; ``WireClosed`` (the peer closed
or reset the connection); ``ssl.SSLError``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import cast

__all__ = ["Wire", "WireClosed"]


class WireClosed(ConnectionError):
    """The connection was closed by the peer, or broke."""


class _Protocol(asyncio.Protocol):
    """Bytes to the receiver; wakes the one task waiting for bytes or a drain."""

    def __init__(self, receiver: Callable[[bytes], None]) -> None:
        self.receiver = receiver
        self.lost: OSError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused = False

    def data_received(self, data: bytes) -> None:
        self.receiver(data)
        self._wake()

    def eof_received(self) -> bool:
        self._lose(WireClosed("connection closed by the peer"))
        return False  # close our side as well

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, OSError):
            self._lose(exc if isinstance(exc, ssl.SSLError) else WireClosed(str(exc)))
        else:
            self._lose(WireClosed("connection closed"))

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._release_drain()

    def check(self) -> None:
        if self.lost is not None:
            raise self.lost

    async def wait(self) -> None:
        """Until more bytes arrive or the connection ends."""
        self.check()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    @property
    def paused(self) -> bool:
        return self._paused

    async def drain(self) -> None:
        self.check()
        if self._paused:
            self._drain = asyncio.get_running_loop().create_future()
            try:
                await self._drain
            finally:
                self._drain = None
            self.check()

    def _lose(self, reason: OSError) -> None:
        if self.lost is None:
            self.lost = reason
        self._wake()
        self._release_drain()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _release_drain(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)


class Wire:
    def __init__(self, transport: asyncio.Transport, protocol: _Protocol, timeout: float) -> None:
        self._transport, self._protocol = transport, protocol
        self.timeout = timeout  # for each read, drain and handshake (RFC 5321 4.5.3.2)

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        receiver: Callable[[bytes], None],
        *,
        connect_timeout: float,
        command_timeout: float,
        context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> Wire:
        """TCP (IPv4 or IPv6, a name tried address by address), and TLS with ``context``."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(connect_timeout):
            transport, protocol = await loop.create_connection(
                lambda: _Protocol(receiver),
                host,
                port,
                ssl=context,
                server_hostname=server_hostname if context is not None else None,
            )
        return cls(transport, protocol, command_timeout)

    @property
    def is_open(self) -> bool:
        return self._protocol.lost is None and not self._transport.is_closing()

    @property
    def tls_version(self) -> str | None:
        ssl_object = self._transport.get_extra_info("ssl_object")
        return cast(str | None, ssl_object.version()) if ssl_object is not None else None

    @property
    def peer_ip(self) -> str | None:
        peername = self._transport.get_extra_info("peername")
        return str(peername[0]) if peername else None

    def write(self, data: bytes) -> None:
        self._protocol.check()
        self._transport.write(data)

    async def send(self, data: bytes) -> None:
        """Write and wait until the transport's buffer is below its high-water mark."""
        self.write(data)
        if self._protocol.paused:  # most writes fit the buffer: no timer for them
            async with asyncio.timeout(self.timeout):
                await self._protocol.drain()

    async def wait(self) -> None:
        """Until more bytes have reached the receiver; raises when none can come."""
        async with asyncio.timeout(self.timeout):
            await self._protocol.wait()

    async def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """The TLS handshake after ``220`` to STARTTLS (RFC 3207 4)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.timeout):
            transport = await loop.start_tls(
                self._transport, self._protocol, context, server_hostname=server_hostname
            )
        if transport is None:
            raise WireClosed("connection closed during the TLS handshake")
        self._transport = transport

    def abort(self) -> None:
        """Close at once. A graceful TLS close waits for the peer's close_notify, which
        after QUIT or trouble nobody needs, and would keep the socket open."""
        self._transport.abort()
