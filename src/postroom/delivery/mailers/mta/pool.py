"""Outbound connection reuse and concurrency limits (Postfix scache(8) and qmgr's limits).

Two separate jobs, because a destination (a domain for ``mx``, the relay for ``smtp``) and
a connection (one host address, TLS mode and login) are not the same thing:

- ``limit(destination)``: at most ``max_per_destination`` transactions to one destination
  and ``max_total`` over all of them at a time; the others wait their turn (FIFO). With
  ``slots`` the destination's limit holds for every node on the store too: after its
  own slot a transaction takes one of the destination's shared slots (``SharedSlots``).
  ``max_total`` bounds this node's sockets and stays per node.
- ``take(key)`` / ``give(key, connection)``: a cache of idle connections. A connection goes
  back only while it is still open, has carried fewer than ``max_uses`` messages and
  there is room; it is closed once idle for ``idle_timeout`` seconds (by the injected
  clock; a loop timer only wakes the sweep up).

The pool knows nothing of SMTP: a connection is anything ``Reusable``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from postroom.clock import Clock
from postroom.delivery.slots import SharedSlots

__all__ = ["ConnectionPool", "Reusable"]


class Reusable(Protocol):
    @property
    def uses(self) -> int:
        """Messages sent over this connection so far."""

    @property
    def usable(self) -> bool:
        """Still open and in a state to start a new transaction."""

    async def aclose(self) -> None:
        """Say goodbye (QUIT) and close; never raises."""


C = TypeVar("C", bound=Reusable)


@dataclass(slots=True)
class _Gate:
    semaphore: asyncio.Semaphore
    active: int = 0  # holders
    waiting: int = 0


@dataclass(slots=True)
class _Idle(Generic[C]):
    connection: C
    since: float


class ConnectionPool(Generic[C]):
    def __init__(
        self,
        *,
        clock: Clock,
        max_per_destination: int = 20,
        max_total: int = 100,
        max_uses: int = 100,
        idle_timeout: float = 10.0,
        slots: SharedSlots | None = None,
        mailer: str = "",
    ) -> None:
        self._clock = clock
        self._slots = slots
        self._mailer = mailer
        self._max_per_destination = max_per_destination
        self._total = asyncio.Semaphore(max_total)
        self._max_uses = max_uses
        self._idle_timeout = idle_timeout
        self._gates: dict[str, _Gate] = {}
        self._idle: dict[Hashable, list[_Idle[C]]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    # -- concurrency ---------------------------------------------------------------------
    @asynccontextmanager
    async def limit(self, destination: str) -> AsyncIterator[None]:
        """Hold one of the destination's slots (and one of the total) for the block."""
        gate = self._gates.get(destination)
        if gate is None:
            gate = self._gates[destination] = _Gate(asyncio.Semaphore(self._max_per_destination))
        gate.waiting += 1
        entered = False
        try:
            # Always the destination first, then the total: one order, so no deadlock, and
            # a crowded destination does not hold total slots while it waits.
            async with gate.semaphore, self._total:
                gate.waiting -= 1
                entered = True
                gate.active += 1
                try:
                    # The shared slot is taken and given back inside the node's own, so
                    # no await falls between counting this one out and the gate's end.
                    async with self._shared(destination):
                        yield
                finally:
                    gate.active -= 1
        finally:
            if not entered:
                gate.waiting -= 1
            if gate.active == 0 and gate.waiting == 0:
                del self._gates[destination]

    def _shared(self, destination: str) -> contextlib.AbstractAsyncContextManager[None]:
        """The destination's slot among every node's (after this node's own slot)."""
        if self._slots is None:
            return contextlib.nullcontext()
        key = f"connections {self._mailer} {destination}"
        return self._slots.hold(key, self._max_per_destination)

    def active(self, destination: str) -> int:
        """Transactions now holding a slot of ``destination`` (on this node; with shared
        slots, some may still be waiting for one of the cluster's)."""
        gate = self._gates.get(destination)
        return gate.active if gate else 0

    def waiting(self, destination: str) -> int:
        """Transactions waiting for a slot of ``destination``."""
        gate = self._gates.get(destination)
        return gate.waiting if gate else 0

    # -- reuse ---------------------------------------------------------------------------
    def take(self, key: Hashable) -> C | None:
        """The most recently used idle connection for ``key``, if any."""
        self._sweep()
        stack = self._idle.get(key)
        while stack:
            connection = stack.pop().connection
            if connection.usable:
                if not stack:
                    del self._idle[key]
                return connection
            self.discard(connection)
        self._idle.pop(key, None)
        return None

    def give(self, key: Hashable, connection: C) -> None:
        """Keep ``connection`` for the next message to ``key``, or close it."""
        stack = self._idle.setdefault(key, [])
        if (
            self._closed
            or not connection.usable
            or connection.uses >= self._max_uses
            or len(stack) >= self._max_per_destination
        ):
            if not stack:
                del self._idle[key]
            self.discard(connection)
            return
        stack.append(_Idle(connection, self._clock.monotonic()))
        self._arm_timer()

    def discard(self, connection: C) -> None:
        """Close ``connection`` in the background."""
        task = asyncio.get_running_loop().create_task(connection.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def idle_count(self, key: Hashable | None = None) -> int:
        if key is not None:
            return len(self._idle.get(key, ()))
        return sum(len(stack) for stack in self._idle.values())

    async def aclose(self) -> None:
        """Close every idle connection and wait for all closes to finish."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for stack in self._idle.values():
            for idle in stack:
                self.discard(idle.connection)
        self._idle.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # -- expiry --------------------------------------------------------------------------
    def _sweep(self) -> None:
        deadline = self._clock.monotonic() - self._idle_timeout
        for key in list(self._idle):
            stack = self._idle[key]
            expired = [idle for idle in stack if idle.since <= deadline]
            if expired:
                stack[:] = [idle for idle in stack if idle.since > deadline]
                for idle in expired:
                    self.discard(idle.connection)
            if not stack:
                del self._idle[key]

    def _arm_timer(self) -> None:
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._idle_timeout, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._sweep()
        if self._idle and not self._closed:
            self._arm_timer()
