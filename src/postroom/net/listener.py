"""Accept loops: one asyncio server per listener, connection limits, drain on stop.

The listener knows nothing of SMTP: it is given a ``handler`` coroutine per accepted
connection (a ``Stream``, net/stream.py), and a ``refusal`` (bytes) to write when a limit
is hit (421 4.7.0).

A listener on a socket shared with other processes, given their ``AcceptShares``
(net/balance.py), accepts by itself and holds back while it has more connections open
than another process; otherwise the event loop's server accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable

from postroom.net.balance import HOLD_SECONDS, MAX_HOLDS, AcceptShares
from postroom.net.stream import Stream
from postroom.net.throttle import ConnectionCounter

__all__ = ["Handler", "Listener"]

Handler = Callable[[Stream], Awaitable[None]]
_log = logging.getLogger("postroom.net")
_ACCEPT_BATCH = 8  # connections taken at most per readiness, as the loop's servers do


class Listener:
    def __init__(
        self,
        *,
        address: str,
        port: int,
        handler: Handler,
        counter: ConnectionCounter,
        refusal: bytes,
        ssl_context: ssl.SSLContext | None = None,
        handshake_timeout: float = 30.0,
        sock: socket.socket | None = None,
        shares: AcceptShares | None = None,
    ) -> None:
        """``sock``: already bound and listening (shared with accept workers);
        ``shares``: the accepting processes' counts, to balance ``sock``'s connections."""
        self.address = address
        self.port = port
        self._handler = handler
        self._counter = counter
        self._refusal = refusal
        self._ssl = ssl_context
        self._handshake_timeout = handshake_timeout
        self._sock = sock
        self._shares = shares if sock is not None else None
        self._server: asyncio.Server | None = None
        self._watching = False  # balanced: the socket's readiness is being watched
        self._holds = 0  # balanced: holds in a row (see net/balance.py)
        self._hold: asyncio.TimerHandle | None = None
        self._port = port  # balanced: the socket's port, once started
        self._tasks: set[asyncio.Task[None]] = set()  # connections being served
        self._accepting: set[asyncio.Task[None]] = set()  # every connection's task

    @property
    def bound_port(self) -> int:
        if self._shares is not None:
            return self._port
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ssl_timeout = self._handshake_timeout if self._ssl else None
        if self._shares is not None:
            assert self._sock is not None
            self._port = int(self._sock.getsockname()[1])  # also once the socket is closed
            self._watch()
            self._shares.accepting()
            return
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

    # -- balanced accepting (a shared socket) -------------------------------------------
    def _watch(self) -> None:
        assert self._sock is not None
        self._hold = None
        if self._sock.fileno() < 0:  # stopped meanwhile
            return
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._readable)
        self._watching = True

    def _unwatch(self) -> None:
        assert self._sock is not None
        if self._watching:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._watching = False

    def _readable(self) -> None:
        """Accept what is waiting (a few at most, while no other process has fewer
        open), or hold back for a moment and leave it to one that has."""
        assert self._sock is not None and self._shares is not None
        loop = asyncio.get_running_loop()
        shares = self._shares
        for taken in range(_ACCEPT_BATCH):
            if shares.busier():
                if taken:  # the rest is for the others; still watching
                    return
                if self._holds < MAX_HOLDS:  # look again in a moment
                    self._holds += 1
                    self._unwatch()
                    self._hold = loop.call_later(HOLD_SECONDS, self._watch)
                    return
            self._holds = 0
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):  # none left, or another took it
                return
            except OSError as exc:  # out of descriptors, say: try again in a moment
                _log.warning("accept failed on %s:%d: %s", self.address, self.port, exc)
                self._unwatch()
                self._hold = loop.call_later(0.1, self._watch)
                return
            shares.opened()
            # As the loop's own servers do: replies go out at once, not after the last
            # ACK. (Non-blocking mode is the loop's to set, as it takes the socket.)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(self._connect(conn))
            self._accepting.add(task)
            task.add_done_callback(self._accepting.discard)

    async def _connect(self, conn: socket.socket) -> None:
        """Serve an accepted socket (a TLS listener's handshake first), in this task."""
        loop = asyncio.get_running_loop()
        ssl_timeout = self._handshake_timeout if self._ssl else None
        assert self._shares is not None
        try:
            try:
                # The stream is made here: with TLS, uvloop returns its own SSL
                # protocol in place of the one the factory gave.
                stream = Stream()
                await loop.connect_accepted_socket(
                    lambda: stream, conn, ssl=self._ssl, ssl_handshake_timeout=ssl_timeout
                )
            except (OSError, ssl.SSLError, TimeoutError) as exc:  # as the loop's server
                _log.debug("connection not made on %s:%d: %s", self.address, self.port, exc)
                conn.close()
                return
            await self._accept(stream)
        finally:
            self._shares.closed()

    def _connected(self, stream: Stream) -> None:
        task = asyncio.get_running_loop().create_task(self._accept(stream))
        self._accepting.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._accepting.discard)

    async def _accept(self, stream: Stream) -> None:
        peer = stream.get_extra_info("peername")
        ip = str(peer[0]) if peer else "unknown"
        if not self._counter.try_acquire(ip):
            with contextlib.suppress(OSError):
                stream.write(self._refusal)
                await stream.drain()
            stream.close()
            return
        task = asyncio.current_task()
        assert task is not None
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
            self._tasks.discard(task)
            self._counter.release(ip)
            stream.close()
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                async with asyncio.timeout(5):
                    await stream.wait_closed()

    def stop_accepting(self) -> None:
        if self._shares is not None and self._sock is not None:
            self._unwatch()
            if self._hold is not None:
                self._hold.cancel()
                self._hold = None
            self._shares.stopped()
            self._sock.close()
        if self._server is not None:
            self._server.close()

    def cancel_connections(self) -> None:
        # Balanced, a TLS handshake runs in the connection's task too: cut it as well.
        for task in list(self._accepting if self._shares is not None else self._tasks):
            task.cancel()

    @property
    def serving(self) -> bool:
        """Started and still accepting (false once its socket is closed, by stop or
        under it)."""
        if self._shares is not None:
            return self._watching or self._hold is not None
        return self._server is not None and self._server.is_serving()

    @property
    def connections(self) -> int:
        return len(self._tasks)

    async def wait_closed(self) -> None:
        if self._shares is not None and self._accepting:  # no server to wait on: its tasks
            await asyncio.wait(set(self._accepting))
        if self._server is not None:
            await self._server.wait_closed()
