"""Concurrency slots shared by every node on the store: ``max_per_destination`` (and a
relay's ``max_connections``) for the cluster, not per node.

A node is one holder (a name of its own, made at start). ``hold(key, limit)`` waits for
one of ``key``'s slots in the store's ``LimitStore`` and gives it back after the block;
each slot is leased for ``lease`` seconds and ``keep()`` (a task of the server) renews
all of the node's slots in one statement every third of that, so the slots of a node
that dies (SIGKILL, a lost machine) end with their lease and other nodes take them.

A node asks the store only after its own ``ConnectionPool`` let the transaction in, so
on a single node the store's count never refuses and nothing waits here. When the
store cannot be reached a transaction goes ahead under the node's own limit (the
database being away stops claims anyway), and says so once in the log.

Slots are shared fairly: a node holds a slot for as long as its connection is open,
so the first nodes to open connections could keep every slot while another node's
mail waits. A node that waits is marked so in the store; a node that holds more than
its share (the limit over the nodes holding or waiting) is refused more, and learns
within ``watch`` seconds (``keep`` asks the store) that it should give slots back:
its connection pool closes a connection above the share when its transaction ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from postroom.clock import Clock
from postroom.errors import StoreError
from postroom.store.base import LimitStore

__all__ = ["SharedSlots", "dead_on_this_host"]

_log = logging.getLogger("postroom.delivery")


@dataclass(slots=True)
class _Turns:
    """This node's transactions waiting for one key's slots: one asks at a time."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    freed: asyncio.Event = field(default_factory=asyncio.Event)  # this node gave one back
    users: int = 0
    # Loop time of the last refusal: the next ask waits out the pause after it, even
    # when the one that was refused stopped waiting (it took a connection given back).
    refused: float | None = None


def _holder_name() -> str:
    """This process, as the slots' rows name it: readable for an operator, and unique."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def dead_on_this_host(holder: str) -> bool:
    """Whether ``holder`` (a name ``_holder_name`` made) is a process of this host that
    has exited. Only for a store whose holders all run here, in one PID namespace (an
    SQLite file): elsewhere a live process of another machine could share the name."""
    parts = holder.rsplit(":", 2)  # host:pid:tag
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = parts[1]
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class SharedSlots:
    def __init__(
        self,
        limits: LimitStore,
        clock: Clock,
        *,
        lease: float = 60.0,
        poll: float = 0.25,
        watch: float = 1.0,
        holder: str | None = None,
        dead: Callable[[str], bool] | None = None,
    ) -> None:
        """``dead``: whether a holder is known to have died (``dead_on_this_host``
        where every holder runs on this machine): its slots are given back at once,
        not at the end of their lease."""
        self._limits = limits
        self._clock = clock
        self._lease = lease
        self._poll = poll  # seconds between asks while every slot is held elsewhere
        self._watch = watch  # seconds between asks whether another node waits
        # key -> slots counted in the store; key -> nodes sharing it, for the keys
        # another node waits for (slot_contenders, asked every ``watch`` seconds).
        self._counted: dict[str, int] = {}
        self._contenders: dict[str, int] = {}
        self._turns: dict[str, _Turns] = {}  # key -> this node's transactions waiting
        self.holder = holder or _holder_name()
        self._dead = dead
        self._unreachable = False
        # Slots not given back (the store could not be reached): ``keep`` renews all of
        # this node's slots, so these are given back by its next round, not left to run.
        self._owed: list[str] = []
        self._giving: set[asyncio.Future[None]] = set()  # slots of cancelled asks, going back

    @asynccontextmanager
    async def hold(self, key: str, limit: int) -> AsyncIterator[None]:
        """Hold one of ``key``'s ``limit`` slots for the block, waiting while all are
        held (by any node)."""
        counted = await self.take(key, limit)
        try:
            yield
        finally:
            if counted:
                await self.release(key)

    def share(self, key: str, limit: int) -> int | None:
        """How many of ``key``'s ``limit`` slots this node should hold at most, as it
        last heard: None while no other node waits for one."""
        contenders = self._contenders.get(key)
        return None if contenders is None else -(-limit // contenders)

    def refused(self, key: str) -> bool:
        """Whether this node's transactions wait for one of ``key``'s slots, the store
        having refused the last ask (all held, or this node at its share)."""
        turns = self._turns.get(key)
        return turns is not None and turns.refused is not None

    async def release(self, key: str) -> None:
        """Give back a slot ``take`` counted in the store; never raises."""
        self._count(key, -1)
        try:
            await self._limits.release_slot(key, self.holder)
            if (turns := self._turns.get(key)) is not None:
                turns.freed.set()
        except StoreError as exc:
            _log.warning("slot of %s not given back (trying again shortly): %s", key, exc)
            self._owed.append(key)

    async def take(self, key: str, limit: int) -> bool:
        """Take one of ``key``'s ``limit`` slots, waiting while all are held (by any
        node); False when the store could not be asked (nothing was counted, nothing is
        to be given back: the node's own limit applies alone)."""
        # One waiting transaction of this node asks the store at a time, the others
        # queue behind it here: the polls of a node are a few a second, however many of
        # its transactions wait. A slot this node gives back ends the pause at once.
        loop = asyncio.get_running_loop()
        turns = self._turns.setdefault(key, _Turns())
        turns.users += 1
        try:
            async with turns.lock:
                while True:
                    pause = (
                        0.0 if turns.refused is None else turns.refused + self._poll - loop.time()
                    )
                    if pause > 0:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(pause):
                                await turns.freed.wait()
                    turns.freed.clear()
                    try:
                        taken = await self._ask(key, limit)
                    except StoreError as exc:
                        if not self._unreachable:
                            _log.warning(
                                "shared connection limits unavailable, this node's own apply: %s",
                                exc,
                            )
                        self._unreachable = True
                        return False
                    self._unreachable = False
                    if taken:
                        turns.refused = None
                        self._count(key, 1)
                        return True
                    turns.refused = loop.time()
        finally:
            turns.users -= 1
            if not turns.users:
                del self._turns[key]

    async def _ask(self, key: str, limit: int) -> bool:
        """One ask for a slot. Cancelled while the store answers (a transaction that
        found a connection of this node's meanwhile, or a stop), the ask still ends
        there: a slot it took is given back, not left counted (and renewed) for good."""
        ask = asyncio.ensure_future(
            self._limits.take_slot(key, limit, self.holder, self._clock.time(), lease=self._lease)
        )
        try:
            return await asyncio.shield(ask)
        except asyncio.CancelledError:
            ask.add_done_callback(lambda done: self._untake(key, done))
            raise

    def _untake(self, key: str, ask: asyncio.Future[bool]) -> None:
        if not ask.cancelled() and ask.exception() is None and ask.result():
            self._count(key, 1)
            task = asyncio.ensure_future(self.release(key))
            self._giving.add(task)
            task.add_done_callback(self._giving.discard)

    async def look(self) -> None:
        """Ask the store which of the keys this node holds slots of another node waits
        for (nothing to ask while it holds none). Unanswered (the store is away), none:
        a node gives nothing back on what it does not know, and the renewals, not
        this, say when the store fails."""
        contenders: dict[str, int] = {}
        if self._counted:
            with contextlib.suppress(StoreError):
                contenders = await self._limits.slot_contenders(self.holder, self._clock.time())
        self._contenders = contenders

    def _count(self, key: str, change: int) -> None:
        left = self._counted.get(key, 0) + change
        if left > 0:
            self._counted[key] = left
        else:
            self._counted.pop(key, None)
            self._contenders.pop(key, None)

    async def keep(self) -> None:
        """Until cancelled: every ``watch`` seconds, while this node holds slots, ask
        which of them another node waits for; every third of the lease give back the
        slots owed and renew them all. A StoreError there ends it (the task supervisor
        runs it again)."""
        interval = min(self._watch, self._lease / 3)
        per_renewal = max(1, round(self._lease / 3 / interval))
        rounds = 0
        await self.forget_the_dead()
        while True:
            await asyncio.sleep(interval)
            await self.look()
            rounds += 1
            if rounds % per_renewal:
                continue
            while self._owed:
                await self._limits.release_slot(self._owed[0], self.holder)
                self._owed.pop(0)
            await self._limits.renew_slots(self.holder, self._clock.time(), lease=self._lease)
            await self.forget_the_dead()

    async def forget_the_dead(self) -> int:
        """Give back the slots of the holders known to have died (processes of a server
        killed and started again): how many holders. Without ``dead``, none: their
        slots end with their lease."""
        if self._dead is None:
            return 0
        found = [h for h in await self._limits.slot_holders(self._clock.time()) if self._dead(h)]
        for holder in found:
            if await self._limits.drop_slot_holder(holder):
                _log.info("gave back the connection slots of %s, which is gone", holder)
        return len(found)
