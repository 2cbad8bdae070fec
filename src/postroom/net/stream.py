"""One accepted connection as a byte stream whose read buffer is ours.

An ``asyncio.Protocol`` in place of asyncio's StreamReader/StreamWriter pair, for one
reason: STARTTLS must discard plaintext that arrived after the command (a client, or a
man in the middle, may pipeline commands behind STARTTLS to have them read as if they
came over TLS: the CVE-2011-0411 class), and StreamReader offers no public way to drop
what it buffered. Holding the buffer here, ``start_tls`` empties it and upgrades the
transport with the event loop's public ``start_tls`` with no await in between.

Flow control as asyncio's streams do it: reading pauses while more than ``limit`` bytes
wait unread, ``drain()`` waits while the transport's write buffer is over its high mark.

An idle connection costs what a stream holds while it waits, times every connection:
``take`` and ``readable`` let a session wait on the bare future, with no coroutine of
``read`` under it, and the future that ``wait_closed`` waits on is made only if asked.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, cast

__all__ = ["Stream"]

_LIMIT = 128 * 1024  # unread bytes held before the socket is no longer read (as asyncio's)


class Stream(asyncio.Protocol):
    def __init__(
        self, on_connect: Callable[[Stream], None] | None = None, *, limit: int = _LIMIT
    ) -> None:
        """``on_connect``: called once the connection is made (after the handshake of a
        TLS listener), to start serving it."""
        self._loop = asyncio.get_running_loop()
        self._on_connect = on_connect
        self._limit = limit
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._eof = False
        self._lost = False
        self._error: BaseException | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._data_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None  # made by wait_closed()

    # -- the protocol's side: called by the transport ----------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream socket's transport (uvloop's do not subclass asyncio.Transport)
        self._transport = cast(asyncio.Transport, transport)
        if self._on_connect is not None:
            self._on_connect(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._wake_reader()
        if len(self._buffer) > self._limit and not self._reading_paused:
            assert self._transport is not None
            self._transport.pause_reading()
            self._reading_paused = True

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        # Over plain TCP the other side may still read what we write after its EOF;
        # a TLS transport cannot stay half open (and warns when asked to).
        return self.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = self._eof = True
        self._error = exc
        self._wake_reader()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc or ConnectionResetError("connection lost"))
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_reader(self) -> None:
        waiter, self._data_waiter = self._data_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the session's side --------------------------------------------------------
    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes, waiting for some; b"" at end of stream. Raises the
        connection's error (OSError, ssl.SSLError) when it was lost to one."""
        while (data := self.take(size)) is None:
            await self.readable()
        return data

    def take(self, size: int) -> bytes | None:
        """Up to ``size`` bytes if some have arrived; b"" at end of stream; None when
        there is nothing yet (then await ``readable()``). Raises as ``read``."""
        if self._error is not None:
            raise self._error
        if not self._buffer:
            return b"" if self._eof else None
        data = bytes(memoryview(self._buffer)[:size])
        del self._buffer[:size]
        if self._reading_paused and len(self._buffer) <= self._limit:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    def readable(self) -> asyncio.Future[None]:
        """Done once bytes, the end of the stream or an error have come (``take`` after
        ``take`` gave None); one reader at a time."""
        waiter = self._data_waiter = self._loop.create_future()
        if self._buffer or self._eof:
            waiter.set_result(None)
        return waiter

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport's write buffer is full; raises once the connection
        is lost (as StreamWriter.drain does)."""
        if self._error is not None:
            raise self._error
        if self._lost:
            raise ConnectionResetError("connection lost")
        if not self._writing_paused:
            return
        self._drain_waiter = self._loop.create_future()
        try:
            await self._drain_waiter
        finally:
            self._drain_waiter = None

    async def start_tls(self, context: ssl.SSLContext, *, handshake_timeout: float) -> None:
        """Upgrade to TLS as the server. Bytes received before the handshake are thrown
        away first: only what arrives over TLS is read from here on. A handshake not
        done within ``handshake_timeout`` seconds aborts the connection (OSError), as
        the loop does for an implicit-TLS listener: its own timer, where a timeout
        around the call cost a timer and a context of our own per connection."""
        await self.drain()
        self._buffer.clear()
        # No await between the clear above and start_tls() pausing the old transport.
        transport = await self._loop.start_tls(
            self.transport,
            self,
            context,
            server_side=True,
            ssl_handshake_timeout=handshake_timeout,
        )
        if transport is None:  # the loop gives None only when the connection is gone
            raise ConnectionResetError("connection lost during the TLS handshake")
        self._transport = transport
        self._reading_paused = False  # reading starts afresh on the new transport

    @property
    def transport(self) -> asyncio.Transport:
        assert self._transport is not None, "not connected"
        return self._transport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.transport.close()

    def closes_at_once(self) -> bool:
        """Closed (``close()``) with nothing left to send over plain TCP: the transport
        lets go of the socket at once and the connection is lost at the loop's next turn.
        Otherwise (unsent data a peer may never read, TLS's closing exchange) waiting for
        it needs a bound."""
        if self._lost:
            return True
        tls = self.get_extra_info("sslcontext") is not None
        return not tls and not self.transport.get_write_buffer_size()

    async def wait_closed(self) -> None:
        if self._lost:
            return
        if self._closed is None:
            self._closed = self._loop.create_future()
        await asyncio.shield(self._closed)
