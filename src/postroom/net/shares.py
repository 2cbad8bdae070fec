"""How many connections each accepting process holds, in memory the processes share.

With ``workers > 1`` every process accepts on the same listening sockets, and the
kernel wakes them all for each new connection: the first to call ``accept`` gets it.
A process whose event loop woke first would take a whole burst of connections at once
(the 20 pooled connections an application opens together, say) and serve every one
of them while another process sat idle, for as long as they stay open. So each
process publishes how many connections it holds here, and a process that holds
``MARGIN`` or more than another steps aside for a moment (``net.listener``) and leaves
the connection to the other.

Only while its connections last: a process whose connections end within moments of
their start (``CHURN`` or more closed in a beat: an application that opens a connection
per message) never steps aside. There the kernel's wake-up order already evens the
load, since a process whose loop is busy reaches ``accept`` last, and a step aside would
only leave the client waiting on the other process's loop (measured: a fifth of the
rate at one message per connection).

Only to a process that is alive: each one also publishes a heartbeat, its event loop's
time every ``BEAT`` seconds, and a process whose heartbeat is older than ``FRESH``
(stopped, or its loop stuck) is left no connection, so nobody waits on it. The loops'
clocks are the host's monotonic clock, the same in every process.

The counts live in one shared mapping of a memory file (``memfd``), made by the
primary before it forks anything, so every forked process sees the same memory, and a
worker started later as a fresh interpreter maps the same file from the descriptor it
inherits (``fd``); each process writes only its own slot, and an aligned 8-byte value
is read whole.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "BEAT",
    "CHURN",
    "FRESH",
    "MARGIN",
    "MAX_STEP_ASIDE",
    "STEP_ASIDE",
    "AcceptShares",
    "AcceptSlot",
    "SharedSockets",
]

MARGIN = 2
"""A process steps aside when another holds this many connections fewer: with 1, two
processes that take turns would step aside at every other connection."""
STEP_ASIDE = 0.001  # per connection of lead beyond the margin: for a woken process to accept
MAX_STEP_ASIDE = 0.008  # a busy host may not run the other process at once; short for a client
BEAT = 0.1
FRESH = 0.5
CHURN = 10
"""Connections closed in a beat (100 a second) from which a process's connections count
as short-lived: a pool that keeps its connections closes far fewer."""

# A process not accepting (starting, stopping or exited): nobody leaves it a connection.
_ABSENT = 1 << 62
_FIELDS = 2  # per process: connections held, heartbeat (loop time in ms)
_MS = 1000.0


class AcceptShares:
    """Every accepting process's count of open connections and heartbeat."""

    def __init__(self, processes: int, fd: int | None = None) -> None:
        """New counts for ``processes`` (none accepting yet); ``fd``: the memory file of
        counts made in another process, to share (its descriptor, inherited)."""
        if processes < 1:
            raise ValueError("at least one process accepts")
        size = 8 * _FIELDS * processes
        made = fd is None
        if fd is None:
            fd = os.memfd_create("postroom-accept-shares")  # close-on-exec: passed on purpose
            os.ftruncate(fd, size)
        self.fd = fd
        # MAP_SHARED (mmap's default): every fork, and every mapping of the file, sees
        # these same pages.
        self._memory = mmap.mmap(fd, size)
        self._values = memoryview(self._memory).cast("q")
        if made:
            for index in range(processes):
                self.absent(index)

    @property
    def processes(self) -> int:
        return len(self._values) // _FIELDS

    def slot(self, index: int) -> AcceptSlot:
        """Process ``index``'s own slot (the primary's is 0)."""
        if not 0 <= index < self.processes:
            raise IndexError(f"no process {index} among {self.processes}")
        return AcceptSlot(self._values, index)

    def absent(self, index: int) -> None:
        """Process ``index`` accepts no more (it exited, even by SIGKILL)."""
        self._values[_FIELDS * index] = _ABSENT
        self._values[_FIELDS * index + 1] = 0

    def held(self, index: int) -> int | None:
        """Process ``index``'s open connections; None while it is not accepting."""
        count = int(self._values[_FIELDS * index])
        return None if count >= _ABSENT >> 1 else count


class AcceptSlot:
    """One process's view: its own count and heartbeat to keep, the others' to read."""

    __slots__ = ("_beating", "_closes", "_count", "_others", "_short", "_since", "_values")

    def __init__(self, values: memoryview, index: int) -> None:
        self._values = values
        self._count = _FIELDS * index
        processes = len(values) // _FIELDS
        self._others = tuple(_FIELDS * i for i in range(processes) if i != index)
        self._beating: asyncio.TimerHandle | None = None
        self._closes = 0  # connections closed since ``_since``
        self._since = 0.0
        self._short = False

    def present(self, loop: asyncio.AbstractEventLoop) -> None:
        """This process accepts from now on, and beats on ``loop`` (once per start:
        every listener of the process calls it)."""
        if self._values[self._count] >= _ABSENT >> 1:
            self._values[self._count] = 0
        if self._beating is None:
            self._beat(loop)

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        self._values[self._count + 1] = int(loop.time() * _MS)
        self._beating = loop.call_later(BEAT, self._beat, loop)

    def withdraw(self) -> None:
        """This process accepts no more (it stops): nobody leaves connections to it.
        The connections it still serves count on from the mark, which stays far above
        any real count."""
        if self._beating is not None:
            self._beating.cancel()
            self._beating = None
        self._values[self._count] = _ABSENT

    def opened(self) -> None:
        self._values[self._count] += 1

    def closed(self) -> None:
        self._values[self._count] -= 1
        self._closes += 1

    def short_lived(self, now: float) -> bool:
        """Whether this process's connections end within moments of their start: at
        least ``CHURN`` closed a beat, judged afresh once a beat has passed since the
        last judgement (at loop time ``now``)."""
        elapsed = now - self._since
        if elapsed >= BEAT:
            self._short = self._closes >= CHURN * elapsed / BEAT
            self._closes, self._since = 0, now
        return self._short

    def others_live(self, now: float) -> bool:
        """Whether another process accepts, its heartbeat fresh at loop time ``now``."""
        return any(True for _ in self._live_counts(now))

    def step_aside(self, now: float) -> float:
        """How long to leave a new connection to the others (at loop time ``now``): 0 to
        take it. ``STEP_ASIDE`` per connection of lead beyond the margin, at most
        ``MAX_STEP_ASIDE``; never while this process's connections are short-lived."""
        lead = self.lead(now)
        if lead < MARGIN or self.short_lived(now):
            return 0.0
        return min(STEP_ASIDE * (lead - MARGIN + 1), MAX_STEP_ASIDE)

    def lead(self, now: float) -> int:
        """How many connections more this process holds than the live process (its
        heartbeat fresh at loop time ``now``) that holds the fewest; 0 when none holds
        fewer."""
        mine = int(self._values[self._count])
        return max(0, mine - min(self._live_counts(now), default=mine))

    def _live_counts(self, now: float) -> Iterator[int]:
        """The counts of the other processes accepting with a fresh heartbeat."""
        values = self._values
        stale = int((now - FRESH) * _MS)
        for other in self._others:
            if values[other] < _ABSENT >> 1 and values[other + 1] > stale:
                yield int(values[other])


@dataclass(frozen=True, slots=True)
class SharedSockets:
    """One process's end of the listening sockets every accepting process shares (one
    per listener, in the order of ``settings.listeners``), with its slot among them."""

    sockets: tuple[socket.socket, ...]
    shares: AcceptShares
    slot: AcceptSlot | None
    """None: this process serves these sockets' connections alone (the primary's POP3
    and IMAP listeners)."""
    reserve: bool = False
    """This process accepts only while no other does (the primary beside its accept
    workers: at their start, or while all of them are being started again)."""
