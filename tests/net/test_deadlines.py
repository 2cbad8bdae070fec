"""Deadlines: one loop timer for many sessions' read deadlines (net/deadlines.py)."""

from __future__ import annotations

import asyncio

from postroom.net.deadlines import Deadlines


class Owner:
    def __init__(self, name: str, calls: list[str], called: asyncio.Event | None = None) -> None:
        self.name = name
        self._calls = calls
        self._called = called

    def on_deadline(self) -> None:
        self._calls.append(self.name)
        if self._called is not None:
            self._called.set()


async def test_owners_are_called_in_the_order_of_their_deadlines_and_dropped_ones_never() -> None:
    deadlines = Deadlines()
    calls: list[str] = []
    last = asyncio.Event()
    now = asyncio.get_running_loop().time()
    deadlines.set(now + 0.03, Owner("late", calls, last))
    dropped = deadlines.set(now + 0.01, Owner("dropped", calls))
    deadlines.set(now + 0.02, Owner("middle", calls))
    deadlines.set(now + 0.005, Owner("first", calls))  # earlier than the timer was set for
    deadlines.drop(dropped)
    async with asyncio.timeout(10):
        await last.wait()
    assert calls == ["first", "middle", "late"]
    assert len(deadlines) == 0


async def test_an_owner_may_set_its_deadline_again_when_called() -> None:
    deadlines = Deadlines()
    calls: list[str] = []
    third = asyncio.Event()

    class Again(Owner):
        def on_deadline(self) -> None:
            super().on_deadline()
            if len(calls) < 3:
                deadlines.set(asyncio.get_running_loop().time() + 0.005, self)
            else:
                third.set()

    deadlines.set(asyncio.get_running_loop().time(), Again("again", calls))
    async with asyncio.timeout(10):
        await third.wait()
    assert calls == ["again"] * 3


async def test_dropped_entries_of_ended_sessions_do_not_pile_up() -> None:
    """Many short sessions, each dropping its entry long before its time: the heap keeps
    at most about twice the live entries, never a timeout's worth of dead ones."""
    deadlines = Deadlines()
    far = asyncio.get_running_loop().time() + 300
    live = [deadlines.set(far, Owner("live", [])) for _ in range(100)]
    for _ in range(10_000):
        deadlines.drop(deadlines.set(far, Owner("short", [])))
    assert len(deadlines) <= 2 * len(live) + 64
    for entry in live:
        deadlines.drop(entry)
    assert len(deadlines) <= 64
