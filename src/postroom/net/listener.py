"""Accept loops: one asyncio server per listener, connection limits, drain on stop.

The listener knows nothing of SMTP: it is given a ``handler`` that makes the awaitable
serving each accepted connection (a ``Stream``, net/stream.py), an ``on_end`` told when
that has ended, and a ``refusal`` (bytes) to write when a limit is hit (421 4.7.0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable

from postroom.net.stream import Stream
from postroom.net.throttle import ConnectionCounter

__all__ = ["Handler", "Listener"]

Handler = Callable[[Stream], Awaitable[None]]
"""The awaitable serving one connection: a session's own coroutine, with no wrapper
coroutine around it that every idle connection would hold."""
_log = logging.getLogger("postroom.net")


class Listener:
    def __init__(
        self,
        *,
        address: str,
        port: int,
        handler: Handler,
        counter: ConnectionCounter,
        refusal: bytes,
        on_end: Callable[[Stream], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        handshake_timeout: float = 30.0,
        sock: socket.socket | None = None,
    ) -> None:
        self.address = address
        self.port = port
        self._handler = handler
        self._on_end = on_end  # the handler's awaitable for this stream ended (or failed)
        self._counter = counter
        self._refusal = refusal
        self._ssl = ssl_context
        self._handshake_timeout = handshake_timeout
        self._sock = sock  # already bound and listening (shared with accept workers)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # connections being served
        self._accepting: set[asyncio.Task[None]] = set()  # every connection's task

    @property
    def bound_port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ssl_timeout = self._handshake_timeout if self._ssl else None
        if self._sock is not None:
            self._server = await loop.create_server(
                self._stream, sock=self._sock, ssl=self._ssl, ssl_handshake_timeout=ssl_timeout
            )
            return
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        self._server = await loop.create_server(
            self._stream,
            host=self.address,
            port=self.port,
            family=family,
            ssl=self._ssl,
            ssl_handshake_timeout=ssl_timeout,
            reuse_address=True,
            backlog=1024,
        )

    def _stream(self) -> Stream:
        return Stream(self._connected)

    def _connected(self, stream: Stream) -> None:
        task = asyncio.get_running_loop().create_task(self._accept(stream))
        # Held until it ends (the loop keeps only weak references); it takes itself out
        # at its end, where a done callback would be memory every connection holds.
        self._accepting.add(task)

    async def _accept(self, stream: Stream) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            peer = stream.get_extra_info("peername")
            ip = str(peer[0]) if peer else "unknown"
            if not self._counter.try_acquire(ip):
                with contextlib.suppress(OSError):
                    stream.write(self._refusal)
                    await stream.drain()
                stream.close()
                return
            self._tasks.add(task)
            try:
                await self._handler(stream)
            except Exception:  # the handler's own boundary failed: log it, keep accepting
                _log.exception(
                    "connection handler failed: client=%s listener=%s:%d",
                    ip,
                    self.address,
                    self.bound_port,
                )
            finally:
                if self._on_end is not None:
                    self._on_end(stream)
                self._tasks.discard(task)
                self._counter.release(ip)
                stream.close()
                with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                    if stream.closes_at_once():  # no timer per connection where none is needed
                        await stream.wait_closed()
                    else:
                        async with asyncio.timeout(5):
                            await stream.wait_closed()
        finally:
            self._accepting.discard(task)

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    def cancel_connections(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    @property
    def serving(self) -> bool:
        """Started and still accepting (false once its socket is closed, by stop or
        under it)."""
        return self._server is not None and self._server.is_serving()

    @property
    def connections(self) -> int:
        return len(self._tasks)

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
