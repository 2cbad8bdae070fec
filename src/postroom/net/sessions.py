"""The sessions of one protocol's listeners: counted while they run, stopped gracefully.

SMTP and POP3 servers alike: each accepted connection becomes a session (``make``),
which runs to its end; ``stop`` stops accepting, asks every session to stop
(``request_stop``: idle ones end at once, busy ones after what they are doing), waits up
to ``grace`` seconds for them, then cuts the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Protocol

from postroom.config.settings import (
    IMPLICIT_TLS_ROLES,
    LimitSettings,
    ListenerRole,
    ListenerSettings,
)
from postroom.net.listener import Handler, Listener
from postroom.net.shares import SharedSockets
from postroom.net.stream import Stream
from postroom.net.throttle import ConnectionCounter

__all__ = ["GuardedSession", "Session", "SessionServer", "Sessions"]


class Session(Protocol):
    async def run(self) -> None: ...

    def request_stop(self) -> None: ...


class Sessions:
    def __init__(self, log: logging.Logger, limits: LimitSettings, refusal: bytes) -> None:
        """``refusal``: what a connection over ``limits.max_connections`` (in total, or
        from one address) is told before it is closed, in the protocol's words."""
        self._log = log
        self._counter = ConnectionCounter(
            max_total=limits.max_connections, max_per_ip=limits.max_connections_per_ip
        )
        self._refusal = refusal
        self._handshake_timeout = limits.command_timeout
        self.specs: list[ListenerSettings] = []  # one per listener, in the same order
        self.listeners: list[Listener] = []
        self._running: dict[Stream, Session] = {}
        self._none = asyncio.Event()
        self._none.set()

    def handler(self, make: Callable[[Stream], Session]) -> Handler:
        """A listener's handler: one session per connection, counted while it runs
        (until ``_ended``)."""

        def handle(stream: Stream) -> Awaitable[None]:
            session = make(stream)
            self._running[stream] = session
            self._none.clear()
            return session.run()

        return handle

    def _ended(self, stream: Stream) -> None:
        self._running.pop(stream, None)
        if not self._running:
            self._none.set()

    def listen(
        self,
        specs: Sequence[ListenerSettings],
        roles: Collection[ListenerRole],
        make: Callable[[ListenerSettings], Callable[[Stream], Session]],
        *,
        ssl_context: ssl.SSLContext | None,
        shared: SharedSockets | None,
    ) -> None:
        """A listener for each of ``specs`` with one of ``roles`` (the others belong to
        another protocol's server), whose connections become ``make(spec)``'s sessions.
        Implicit-TLS roles (465, 995, 993-style) handshake with ``ssl_context`` first.
        ``shared``: one bound, listening socket per entry of ``specs``, shared with the
        other accepting processes; None: each listener binds its own."""
        if shared is not None and len(shared.sockets) != len(specs):
            raise ValueError("one socket per listener")
        for index, spec in enumerate(specs):
            if spec.role not in roles:
                continue
            implicit = spec.role in IMPLICIT_TLS_ROLES
            self.specs.append(spec)
            self.listeners.append(
                Listener(
                    address=spec.address,
                    port=spec.port,
                    handler=self.handler(make(spec)),
                    counter=self._counter,
                    refusal=self._refusal,
                    on_end=self._ended,
                    ssl_context=ssl_context if implicit else None,
                    handshake_timeout=self._handshake_timeout,
                    sock=shared.sockets[index] if shared is not None else None,
                    slot=shared.slot if shared is not None else None,
                    reserve=shared is not None and shared.reserve,
                )
            )

    @property
    def count(self) -> int:
        return len(self._running)

    async def start(self) -> None:
        for listener in self.listeners:
            await listener.start()
            self._log.info("listening on %s:%d", listener.address, listener.bound_port)

    async def stop(self, grace: float) -> None:
        for listener in self.listeners:
            listener.stop_accepting()
        for session in list(self._running.values()):
            session.request_stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._none.wait()
        for listener in self.listeners:
            listener.cancel_connections()
        for listener in self.listeners:
            await listener.wait_closed()


class SessionServer:
    """What the SMTP, POP3 and IMAP servers share: their ``Sessions``, started and
    stopped as one (idle sessions end at once, busy ones get ``grace`` seconds)."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions
        self.specs = sessions.specs  # the listeners' settings, as self.listeners
        self.listeners = sessions.listeners

    async def start(self) -> None:
        await self._sessions.start()

    async def stop(self, grace: float) -> None:
        await self._sessions.stop(grace)

    @property
    def session_count(self) -> int:
        return self._sessions.count


class GuardedSession:
    """The run and the stop of a mailbox session (POP3, IMAP), the protocol left to the
    subclass (``_greeting``, ``_loop``, ``_farewell``).

    ``request_stop`` ends a session waiting for a command at once (its read is
    cancelled, it says goodbye) and lets one busy with a command finish it. An error of
    the session itself is logged with its client and listener and answered with a
    goodbye, never a traceback; a connection the client closed ends quietly."""

    def __init__(self, stream: Stream, role: str, log: logging.Logger) -> None:
        self._stream = stream
        self._role = role
        self._session_log = log
        peer = stream.get_extra_info("peername")
        self._ip: str | None = str(peer[0]) if peer else None
        self._stopping = False
        self._reading = False  # waiting for a command: a stop may cancel the read
        self._task: asyncio.Task[None] | None = None

    def request_stop(self) -> None:
        self._stopping = True
        if self._reading and self._task is not None:
            self._task.cancel()

    async def run(self) -> None:
        self._task = asyncio.current_task()
        try:
            self._stream.write(self._greeting())
            await self._loop()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._stopping or task is None or task.uncancel() > 0:
                raise
            self._farewell(stopping=True)
        except Exception as exc:
            if isinstance(exc, OSError) and self._stream.is_closing():
                self._session_log.debug("connection from %s ended: %s", self._ip, exc)
                return
            self._session_log.error(
                "session failed: client=%s listener=%s", self._ip, self._role, exc_info=True
            )
            self._farewell(stopping=False)
        await self._flush()

    async def _flush(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self._stream.drain()

    def _greeting(self) -> bytes:
        raise NotImplementedError

    async def _loop(self) -> None:
        raise NotImplementedError

    def _farewell(self, *, stopping: bool) -> None:
        """Say goodbye, if the connection can still be written: the server is stopping,
        or (``stopping`` False) the session failed."""
        raise NotImplementedError
