"""Outbound connection reuse and concurrency limits (Postfix scache(8) and qmgr's limits).

Two separate jobs, because a destination (a domain for ``mx``, the relay for ``smtp``) and
a connection (one host address, TLS mode and login) are not the same thing:

- ``limit(destination)``: at most ``max_per_destination`` transactions to one destination
  and ``max_total`` over all of them at a time; the others wait their turn (FIFO).
  ``max_total`` bounds this node's sockets and stays per node.
- ``connect(destination, opener)``: a new connection. With ``slots`` the destination's
  limit holds for every node on the store too: each connection holds one of the
  destination's shared slots (``SharedSlots``) from its opening to its close, idle in
  the cache included, so the cluster never has more than ``max_per_destination``
  connections, and so transactions, to one destination; the store is asked twice per
  connection, not per message. Such a connection stays idle ``SHARED_IDLE`` seconds at
  most, so a node done with a destination soon leaves its slots to the others, and
  one above its share while another node waits (``SharedSlots.share``) is closed when
  its transaction ends. A transaction waiting for a slot takes a connection of this
  node given back meanwhile: at its share a node gets no new slot, so its waiting mail
  goes over the connections it has, not after they idle out.
- ``take(key)`` / ``give(key, connection)``: a cache of idle connections. A connection goes
  back only while it is still open, has carried fewer than ``max_uses`` messages and
  there is room; it is closed once idle for ``idle_timeout`` seconds (by the injected
  clock; a loop timer only wakes the sweep up). ``drop`` closes one at once.

The pool knows nothing of SMTP: a connection is anything ``Reusable``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from postroom.clock import Clock
from postroom.delivery.slots import SharedSlots

__all__ = ["SHARED_IDLE", "ConnectionPool", "Reusable"]


class Reusable(Protocol):
    @property
    def uses(self) -> int:
        """Messages sent over this connection so far."""

    @property
    def usable(self) -> bool:
        """Still open and in a state to start a new transaction."""

    async def aclose(self) -> None:
        """Say goodbye (QUIT) and close; never raises."""

    def abort(self) -> None:
        """Close at once, without a goodbye: the session is in no state for one."""


C = TypeVar("C", bound=Reusable)
SHARED_IDLE = 2.0  # seconds: the longest an idle connection holds a shared slot
# A shared slot a connection holds: its key in the store, and whether the store counted
# it (False: the store could not be asked; the node's own limit applied alone).
_Slot = tuple[str, bool]
# Seconds between looks at the cache by a transaction the store keeps waiting for a slot
_REUSE_LOOK = 0.25


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
        # An idle connection holding a shared slot keeps it from every other node: it is
        # kept briefly (Postfix's connection cache time), enough for a steady stream.
        self._idle_timeout = idle_timeout if slots is None else min(idle_timeout, SHARED_IDLE)
        self._gates: dict[str, _Gate] = {}
        self._idle: dict[Hashable, list[_Idle[C]]] = {}
        self._held: dict[C, _Slot] = {}  # open connections' shared slots
        self._closing: set[asyncio.Future[None]] = set()
        # cache key -> transactions waiting for a shared slot that would take an idle
        # connection of that key instead, longest waiting first
        self._reusers: dict[Hashable, deque[asyncio.Future[None]]] = {}
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
                    yield
                finally:
                    gate.active -= 1
        finally:
            if not entered:
                gate.waiting -= 1
            if gate.active == 0 and gate.waiting == 0:
                del self._gates[destination]

    # -- connections and their shared slots ------------------------------------------
    def key(self, destination: str, peer: Hashable) -> Hashable:
        """The cache key of a connection to ``peer`` for ``destination``: with shared
        slots a connection holds its destination's slot, so it serves that one only."""
        return peer if self._slots is None else (destination, peer)

    async def connect(
        self,
        destination: str,
        opener: Callable[[], Awaitable[C]],
        reuse: Hashable | None = None,
    ) -> C:
        """A new connection (``opener``'s) for ``destination``, holding one of the
        destination's shared slots while it is open. The slot of an idle connection of
        this node to the same destination (another of its hosts) is passed on: that
        connection is closed, its slot not given back and taken again. While every slot
        is held (the store refused), a connection of this node given back for ``reuse``
        (a cache key) is taken instead of waiting on: this node's own slots serve its
        waiting mail."""
        if self._slots is None:
            return await opener()
        slot = self._idle_slot(destination)
        if slot is None:
            key = f"connections {self._mailer} {destination}"
            taken = await self._take_or_reuse(key, reuse)
            if not isinstance(taken, bool):
                return taken
            slot = (key, taken)
        try:
            connection = await opener()
        except BaseException:
            self._later(self._give_back(slot))
            raise
        self._held[connection] = slot
        return connection

    async def _take_or_reuse(self, key: str, reuse: Hashable | None) -> bool | C:
        """One of ``key``'s shared slots (``SharedSlots.take``'s answer), or, if one comes
        back first, an idle connection of ``reuse``'s. Without this a node at its share
        of the slots keeps its transactions waiting for a slot while its own
        connections, which hold those slots, stand idle in the cache until they expire."""
        assert self._slots is not None
        asking = asyncio.ensure_future(self._slots.take(key, self._max_per_destination))
        try:
            while reuse is not None:
                turn = asyncio.get_running_loop().create_future()
                turns = self._reusers.setdefault(reuse, deque())
                turns.append(turn)
                try:
                    # The wait is also cut short now and then: a connection given back
                    # before the store refused this node went to the cache, not here.
                    await asyncio.wait(
                        (asking, turn), timeout=_REUSE_LOOK, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    if not turn.done():
                        turn.cancel()
                        turns.remove(turn)
                        if not turns:
                            self._reusers.pop(reuse, None)
                handed = turn.done() and not turn.cancelled()
                if asking.done():
                    if handed:
                        self._hand_on(reuse)  # not needed here: the next waiter's
                    break
                if not handed and not (self.idle_count(reuse) and self._slots.refused(key)):
                    continue
                connection = self.take(reuse)
                if connection is not None:
                    asking.cancel()  # a slot it took meanwhile goes back (SharedSlots)
                    await asyncio.wait((asking,))
                    if not asking.cancelled() and asking.result():  # taken just before
                        self._later(self._give_back((key, True)))
                    return connection
            return await asking
        finally:
            if not asking.done():
                asking.cancel()

    def _hand_on(self, key: Hashable) -> None:
        """Wake the longest waiting transaction of those that would reuse an idle
        connection of ``key``'s: one per connection given back, not all of them."""
        turns = self._reusers.get(key)
        while turns:
            turn = turns.popleft()
            if not turn.done():
                turn.set_result(None)
                break
        if turns is not None and not turns:
            del self._reusers[key]

    def _idle_slot(self, destination: str) -> _Slot | None:
        for key, stack in self._idle.items():
            if isinstance(key, tuple) and key and key[0] == destination and stack:
                connection = stack.pop(0).connection  # the longest idle
                if not stack:
                    del self._idle[key]
                slot = self._held.pop(connection)
                self._later(connection.aclose())
                return slot
        return None

    async def _give_back(self, slot: _Slot | None) -> None:
        key, counted = slot if slot is not None else ("", False)
        if counted and self._slots is not None:
            await self._slots.release(key)

    def _later(self, work: Awaitable[None]) -> None:
        """Run ``work`` in the background; ``aclose`` waits for it."""
        task = asyncio.ensure_future(work)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

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
            or self._above_share(connection)
        ):
            if not stack:
                del self._idle[key]
            self.discard(connection)
            return
        stack.append(_Idle(connection, self._clock.monotonic()))
        slot = self._held.get(connection)
        if slot is not None and self._slots is not None and self._slots.refused(slot[0]):
            self._hand_on(key)  # a transaction the store keeps waiting has it instead
        self._arm_timer()

    def _above_share(self, connection: C) -> bool:
        """Whether ``connection`` holds a shared slot of a destination this node holds
        more of than its share while another node waits for one."""
        slot = self._held.get(connection)
        if slot is None or self._slots is None:
            return False
        share = self._slots.share(slot[0], self._max_per_destination)
        return share is not None and sum(s[0] == slot[0] for s in self._held.values()) > share

    def discard(self, connection: C) -> None:
        """Close ``connection`` in the background, then give back its shared slot."""
        self._later(self._close(connection, self._held.pop(connection, None)))

    def drop(self, connection: C) -> None:
        """Close ``connection`` at once (a session in no state for a goodbye), and give
        back its shared slot."""
        connection.abort()
        slot = self._held.pop(connection, None)
        if slot is not None:
            self._later(self._give_back(slot))

    async def _close(self, connection: C, slot: _Slot | None) -> None:
        await connection.aclose()
        await self._give_back(slot)

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
