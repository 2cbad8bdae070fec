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
from collections.abc import Callable
from typing import Protocol

from postroom.net.listener import Handler, Listener
from postroom.net.stream import Stream

__all__ = ["Session", "Sessions"]


class Session(Protocol):
    async def run(self) -> None: ...

    def request_stop(self) -> None: ...


class Sessions:
    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self.listeners: list[Listener] = []
        self._running: set[Session] = set()
        self._none = asyncio.Event()
        self._none.set()

    def handler(self, make: Callable[[Stream], Session]) -> Handler:
        """A listener's handler: one session per connection, counted while it runs."""

        async def handle(stream: Stream) -> None:
            session = make(stream)
            self._running.add(session)
            self._none.clear()
            try:
                await session.run()
            finally:
                self._running.discard(session)
                if not self._running:
                    self._none.set()

        return handle

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
        for session in list(self._running):
            session.request_stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._none.wait()
        for listener in self.listeners:
            listener.cancel_connections()
        for listener in self.listeners:
            await listener.wait_closed()
