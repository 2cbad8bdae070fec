"""One event-loop timer for the read deadlines of many sessions.

A timer per session (the loop's handle, its libuv timer and a bound method: about 600
bytes) is memory that every idle connection holds. Sessions set their deadline here
instead: a heap ordered by time, and one timer of the loop at its earliest entry. When
an entry's time comes its owner is called (``on_deadline``) and decides whether its
deadline has passed or has moved later meanwhile (then it sets it again). An ended
session drops its entry; dropped entries are skipped when they come up, and the heap is
rebuilt without them once they are half of it, so that many short sessions never leave
a timeout's worth of entries behind.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from typing import Protocol

__all__ = ["Deadline", "Deadlines", "Timed"]

_REBUILD_AT = 64  # dropped entries before the heap may be rebuilt without them


class Timed(Protocol):
    def on_deadline(self) -> None:
        """The time set for it has come (the loop's clock may read a little less)."""


class Deadline:
    """One owner's entry: ``when`` it is due. Set it again, never move it."""

    __slots__ = ("owner", "when")

    def __init__(self, when: float, owner: Timed) -> None:
        self.when = when
        self.owner: Timed | None = owner  # None: dropped, or due and called

    def __lt__(self, other: Deadline) -> bool:
        return self.when < other.when


class Deadlines:
    def __init__(self) -> None:
        self._heap: list[Deadline] = []
        self._dropped = 0  # entries in the heap whose owner dropped them
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def set(self, when: float, owner: Timed) -> Deadline:
        """Call ``owner.on_deadline()`` at loop time ``when`` unless the entry is dropped."""
        entry = Deadline(when, owner)
        heapq.heappush(self._heap, entry)
        if when < self._timer_at:
            self._arm(when)
        return entry

    def drop(self, entry: Deadline) -> None:
        """Never call this entry's owner (it ended, or set an earlier deadline)."""
        if entry.owner is None:
            return
        entry.owner = None
        self._dropped += 1
        if self._dropped >= _REBUILD_AT and self._dropped * 2 >= len(self._heap):
            self._heap = [kept for kept in self._heap if kept.owner is not None]
            heapq.heapify(self._heap)
            self._dropped = 0

    def __len__(self) -> int:
        """Entries held, dropped ones included."""
        return len(self._heap)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(when, self._fire)
        self._timer_at = when

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        heap = self._heap
        now = asyncio.get_running_loop().time()
        due: list[Timed] = []
        while heap and heap[0].when <= now:
            entry = heapq.heappop(heap)
            if entry.owner is None:
                self._dropped -= 1
                continue
            due.append(entry.owner)
            entry.owner = None
        if heap:
            self._arm(heap[0].when)
        for owner in due:
            owner.on_deadline()
