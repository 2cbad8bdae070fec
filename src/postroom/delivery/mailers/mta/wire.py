"""The socket edge of the outbound SMTP client: one connection; bytes out, replies in.

``Wire`` wraps an asyncio transport whose protocol feeds every byte received straight
into a ``ReplyParser``, also while nobody is waiting for a reply, so all the replies to a
pipelined batch (RFC 2920 3.1) are kept, in order, however they arrive. Waiting for a
reply, for the send buffer to drain and for a TLS handshake is bounded by a timeout.

What can go wrong: ``TimeoutError``; ``WireClosed`` (the peer closed or reset the
connection); ``ssl.SSLError``; ``ReplyError`` (the peer does not speak SMTP). All but the
last are ``OSError``s.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import cast

from postroom.smtp.client import ReplyError, ReplyParser
from postroom.smtp.replies import Reply

__all__ = ["Wire", "WireClosed"]


class WireClosed(ConnectionError):
    """The connection was closed by the peer, or broke."""


class _Protocol(asyncio.Protocol):
    """Bytes into the parser; wakes the one task waiting for a reply or a drain."""

    def __init__(self) -> None:
        self.parser = ReplyParser()
        self.lost: OSError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused = False

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
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
        self.timeout = timeout  # for each reply, drain and handshake (RFC 5321 4.5.3.2)

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
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
                _Protocol,
                host,
                port,
                ssl=context,
                server_hostname=server_hostname if context is not None else None,
            )
        return cls(transport, protocol, command_timeout)

    @property
    def is_open(self) -> bool:
        return (
            self._protocol.lost is None
            and not self._protocol.parser.failed
            and not self._transport.is_closing()
        )

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
        async with asyncio.timeout(self.timeout):
            await self._protocol.drain()

    async def read_reply(self) -> Reply:
        """The next reply; those that arrived earlier come first, none is dropped."""
        protocol = self._protocol
        if (reply := protocol.parser.next_reply()) is not None:
            return reply
        async with asyncio.timeout(self.timeout):
            while (reply := protocol.parser.next_reply()) is None:
                await protocol.wait()
        return reply

    async def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """The TLS handshake after ``220`` to STARTTLS (RFC 3207 4)."""
        if self._protocol.parser.pending:
            # Anything after the 220 came in the clear and may have been injected by a
            # man in the middle; it must not be read as the TLS server's (RFC 3207 6).
            raise ReplyError("the server sent more than its 220 reply to STARTTLS")
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
