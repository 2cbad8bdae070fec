"""Accept loops: one asyncio server per listener, connection limits, drain on stop.

The listener knows nothing of SMTP: it is given a ``handler`` that makes the awaitable
serving each accepted connection (a ``Stream``, net/stream.py), an ``on_end`` told when
that has ended, and a ``refusal`` (bytes) to write when a limit is hit (421 4.7.0).

On a socket shared with other accepting processes (``workers > 1``) the listener
accepts one connection at a time itself, and steps aside when another live process
holds ``MARGIN`` or more connections fewer, for as long as ``AcceptSlot.step_aside``
says (``net.shares``; never while its connections are short-lived): the event loop's
own server would take every connection waiting at once. A connection still waiting
then is taken, so a client waits at most ``MAX_STEP_ASIDE`` for a process that is
alive but slow.

A reserve listener (the primary's, beside its accept workers) leaves the socket to the
others: it looks every ``BEAT`` seconds whether any of them accepts, and reads the socket
only while none does (at the start, or while every worker is started again), so mail
is taken even then and the primary's loop is woken by no connection otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from postroom.net.shares import BEAT, AcceptSlot
from postroom.net.stream import Stream
from postroom.net.throttle import ConnectionCounter

__all__ = ["Handler", "Listener"]

Handler = Callable[[Stream], Awaitable[None]]
"""The awaitable serving one connection: a session's own coroutine, with no wrapper
coroutine around it that every idle connection would hold."""
_log = logging.getLogger("postroom.net")

# After accept() fails (out of descriptors or memory, say) the listener pauses, as
# asyncio's own servers do, rather than spin on a socket that stays readable.
_ACCEPT_RETRY = 1.0
_NO_WORKER = "no accept worker is up: this process accepts on %s:%d until one is"
_WORKER_BACK = "an accept worker is up again: this process leaves %s:%d to the workers"


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
        slot: AcceptSlot | None = None,
        reserve: bool = False,
    ) -> None:
        """``sock``: already bound and listening, shared with the other accepting
        processes whose counts ``slot`` compares (without a slot: bound before, and
        served by this process alone); ``reserve``: accept from it only while no other
        process does."""
        if slot is not None and sock is None:
            raise ValueError("a slot is for a shared socket")
        if reserve and slot is None:
            raise ValueError("a reserve listener shares its socket")
        self.address = address
        self.port = port
        self._handler = handler
        self._on_end = on_end  # the handler's awaitable for this stream ended (or failed)
        self._counter = counter
        self._refusal = refusal
        self._ssl = ssl_context
        self._handshake_timeout = handshake_timeout
        self._sock = sock
        self._slot = slot
        self._server: asyncio.Server | None = None
        self._reserve = reserve
        self._reading = False  # accepting from the shared socket (``_readable``)
        self._reader = False  # the socket's reader is on the event loop
        self._resume: asyncio.TimerHandle | None = None  # stepped aside until then
        self._look: asyncio.TimerHandle | None = None  # a reserve's next look
        self._others_seen = False  # a reserve has seen another process accept
        self._stepped_aside = False  # the connection then waiting is this one's
        self._opening: set[asyncio.Task[None]] = set()  # accepted, in their TLS handshake
        self._tasks: set[asyncio.Task[None]] = set()  # connections being served
        self._accepting: set[asyncio.Task[None]] = set()  # every connection's task

    @property
    def bound_port(self) -> int:
        if self._sock is not None:
            return int(self._sock.getsockname()[1])
        assert self._server is not None
        # Untyped: uvloop's sockets are a list where typeshed says a tuple, and a
        # compiled build checks declared types at run time.
        server: Any = self._server
        return int(server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ssl_timeout = self._handshake_timeout if self._ssl else None
        if self._sock is not None:
            if self._reserve:
                self._reading = True
                self._stand_by(loop)
                return
            if self._slot is not None:
                self._slot.present(loop)
            self._read(loop)
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

    # -- accepting from a shared socket ---------------------------------------------
    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._sock is not None
        self._resume = None
        loop.add_reader(self._sock.fileno(), self._readable)
        self._reader = self._reading = True

    def _pause(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        assert self._sock is not None
        loop.remove_reader(self._sock.fileno())
        self._reader = False
        self._resume = loop.call_later(seconds, self._read, loop)

    def look(self) -> None:
        """A reserve looks now rather than at its next beat (the other processes said
        they accept: a connection made from now on is theirs)."""
        if self._reserve and self._reading:
            self._stand_by(asyncio.get_running_loop())

    def _stand_by(self, loop: asyncio.AbstractEventLoop) -> None:
        """A reserve's look: read the socket while no other process accepts."""
        assert self._sock is not None and self._slot is not None
        wanted = not self._slot.others_live(loop.time())
        if wanted != self._reader and self._resume is None:  # not paused by a failed accept
            if self._others_seen:  # not the workers' first start
                news = _NO_WORKER if wanted else _WORKER_BACK
                _log.info(news, self.address, self.bound_port)
            if wanted:
                self._read(loop)
            else:
                loop.remove_reader(self._sock.fileno())
                self._reader = False
        self._others_seen = self._others_seen or not wanted
        if self._look is not None:
            self._look.cancel()  # when asked to look before the beat
        self._look = loop.call_later(BEAT, self._stand_by, loop)

    def _readable(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        stepped_aside, self._stepped_aside = self._stepped_aside, False
        if not stepped_aside and self._slot is not None and not self._reserve:
            aside = self._slot.step_aside(loop.time())
            if aside:
                self._stepped_aside = True
                self._pause(loop, aside)
                return
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another process took it, or its client already left
        except OSError as exc:
            _log.error(
                "cannot accept on %s:%d: %s; trying again in %g s",
                self.address,
                self.port,
                exc.strerror or exc,
                _ACCEPT_RETRY,
            )
            self._pause(loop, _ACCEPT_RETRY)
            return
        conn.setblocking(False)
        if self._slot is not None:
            self._slot.opened()  # at once: the others must see it before they next compare
        task = loop.create_task(self._accept(Stream(), conn))
        self._opening.add(task)
        self._accepting.add(task)  # held until done: the loop keeps only weak references

    async def _open(self, conn: socket.socket, stream: Stream, task: asyncio.Task[None]) -> bool:
        """Make the accepted ``conn`` a transport with ``stream``, as the event loop's
        server would, after its TLS handshake on an implicit-TLS listener; False when
        its client left or failed the handshake (no session, as with the loop's server)."""
        ssl_timeout = self._handshake_timeout if self._ssl else None
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: stream, conn, ssl=self._ssl, ssl_handshake_timeout=ssl_timeout
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            _log.debug("connection not opened on %s:%d: %s", self.address, self.port, exc)
            conn.close()
            return False
        finally:
            self._opening.discard(task)
        return True

    def _stream(self) -> Stream:
        return Stream(self._connected)

    def _connected(self, stream: Stream) -> None:
        task = asyncio.get_running_loop().create_task(self._accept(stream))
        self._accepting.add(task)  # held until done: the loop keeps only weak references

    async def _accept(self, stream: Stream, conn: socket.socket | None = None) -> None:
        """A connection's whole task, in one coroutine below the handler's (each one on
        an idle connection's stack is memory it holds): ``conn``, accepted from a shared
        socket, is opened first (``stream`` is not its protocol's yet); the task takes
        itself out of the listener's sets at its end, where a done callback would be
        memory too."""
        task = asyncio.current_task()
        assert task is not None
        try:
            if conn is not None and not await self._open(conn, stream, task):
                return
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
            if conn is not None and self._slot is not None:
                self._slot.closed()

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()
        for timer in (self._resume, self._look):
            if timer is not None:
                timer.cancel()
        self._resume = self._look = None
        if self._slot is not None:
            self._slot.withdraw()
        self._reading = False
        if self._reader:
            assert self._sock is not None
            self._reader = False
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        for task in self._opening:  # not yet a session: none will start after the stop
            task.cancel()

    def cancel_connections(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    @property
    def serving(self) -> bool:
        """Started and still accepting (false once its socket is closed, by stop or
        under it)."""
        if self._sock is not None:
            return self._reading and self._sock.fileno() != -1
        return self._server is not None and self._server.is_serving()

    @property
    def connections(self) -> int:
        return len(self._tasks)

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
        if self._opening:
            await asyncio.gather(*list(self._opening), return_exceptions=True)
