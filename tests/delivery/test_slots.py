"""Shared connection slots as a node sees them (``SharedSlots``): waiting, asking the
store, giving back. On the limits file of the SQLite engine, which counts as a shared
database does."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

from postroom.delivery.slots import SharedSlots, dead_on_this_host
from postroom.store.sqlite.limits import LocalLimits
from tests.conftest import FakeClock

KEY = "connections relay smtp.example"


class Asking(LocalLimits):
    """The store, noting how many of this node's asks for a slot are under way at once."""

    def __init__(self) -> None:
        super().__init__(None)
        self.asking = 0
        self.most = 0
        self.asks = 0

    async def take_slot(
        self, key: str, limit: int, holder: str, now: float, *, lease: float
    ) -> bool:
        self.asking += 1
        self.asks += 1
        self.most = max(self.most, self.asking)
        try:
            return await super().take_slot(key, limit, holder, now, lease=lease)
        finally:
            self.asking -= 1


async def test_a_node_asks_for_a_slot_once_at_a_time_however_many_transactions_wait(
    fake_clock: FakeClock,
) -> None:
    store = Asking()
    slots = SharedSlots(store, fake_clock, holder="node-a", poll=0.01)
    try:
        assert await store.take_slot(KEY, 1, "node-b", fake_clock.time(), lease=60)
        waiting = [asyncio.create_task(slots.take(KEY, 1)) for _ in range(5)]
        async with asyncio.timeout(5):
            while store.asks < 10:  # noqa: ASYNC110 (the asks run on the store's thread)
                await asyncio.sleep(0.005)
        assert store.most == 1
        await store.release_slot(KEY, "node-b")
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        assert [task.result() for task in done] == [True]
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        assert store.most == 1
    finally:
        await store.aclose()


async def test_a_slot_the_node_gives_back_goes_to_its_waiting_transaction_at_once(
    fake_clock: FakeClock,
) -> None:
    store = Asking()
    slots = SharedSlots(store, fake_clock, holder="node-a", poll=3600)  # no poll in time
    try:
        assert await slots.take(KEY, 1)
        waiting = asyncio.create_task(slots.take(KEY, 1))
        async with asyncio.timeout(5):  # it asks once, is refused, and pauses
            while store.asks < 2:  # noqa: ASYNC110 (the asks run on the store's thread)
                await asyncio.sleep(0.005)
        assert not waiting.done()
        await slots.release(KEY)
        assert await asyncio.wait_for(waiting, 5) is True
    finally:
        await store.aclose()


class Slow(LocalLimits):
    """The store, answering an ask for a slot only once ``answer`` is set."""

    def __init__(self) -> None:
        super().__init__(None)
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()
        self.answered = asyncio.Event()

    async def take_slot(
        self, key: str, limit: int, holder: str, now: float, *, lease: float
    ) -> bool:
        self.asked.set()
        await self.answer.wait()
        try:
            return await super().take_slot(key, limit, holder, now, lease=lease)
        finally:
            self.answered.set()


async def test_a_slot_taken_by_an_ask_cancelled_while_the_store_answers_is_given_back(
    fake_clock: FakeClock,
) -> None:
    store = Slow()
    slots = SharedSlots(store, fake_clock, holder="node-a")
    try:
        asking = asyncio.create_task(slots.take(KEY, 1))
        await asyncio.wait_for(store.asked.wait(), 5)
        asking.cancel()  # the transaction no longer needs it (or the node stops)
        await asyncio.gather(asking, return_exceptions=True)
        assert asking.cancelled()
        store.answer.set()  # the store takes the slot after all
        await asyncio.wait_for(store.answered.wait(), 5)
        async with asyncio.timeout(5):  # and it goes back, not counted for good
            while not await store.take_slot(  # noqa: ASYNC110 (given back in the background)
                KEY, 1, "node-b", fake_clock.time(), lease=60
            ):
                await asyncio.sleep(0.005)
    finally:
        await store.aclose()


async def test_the_next_waiting_transaction_keeps_the_pause_of_one_that_stopped_waiting(
    fake_clock: FakeClock,
) -> None:
    """A transaction that takes a connection given back stops waiting for a slot: the
    one behind it asks the store after the pause, not at once (one ask per handover
    would be one per message)."""
    store = Asking()
    slots = SharedSlots(store, fake_clock, holder="node-a", poll=3600)  # no poll in time
    try:
        assert await slots.take(KEY, 1)
        first = asyncio.create_task(slots.take(KEY, 1))
        second = asyncio.create_task(slots.take(KEY, 1))
        async with asyncio.timeout(5):  # the first asks, is refused, and pauses
            while store.asks < 2:  # noqa: ASYNC110 (the asks run on the store's thread)
                await asyncio.sleep(0.005)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await asyncio.sleep(0.05)
        assert store.asks == 2 and not second.done()
        await slots.release(KEY)  # a slot given back still ends the pause at once
        assert await asyncio.wait_for(second, 5) is True
    finally:
        await store.aclose()


async def test_the_slots_of_a_holder_known_dead_are_given_back_at_once(
    fake_clock: FakeClock,
) -> None:
    store = LocalLimits(None)
    gone = {"node-dead"}
    slots = SharedSlots(store, fake_clock, holder="node-a", dead=gone.__contains__)
    try:
        now = fake_clock.time()
        assert await store.take_slot(KEY, 2, "node-dead", now, lease=60)
        assert await store.take_slot(KEY, 2, "node-dead", now, lease=60)
        assert await store.take_slot("another key", 1, "node-live", now, lease=60)
        assert not await store.take_slot(KEY, 2, "node-live", now, lease=60)  # marked waiting
        assert await slots.forget_the_dead() == 1
        assert await store.slot_holders(now) == ["node-live"]
        # Both of its slots are free now, long before their lease would end.
        assert await store.take_slot(KEY, 2, "node-live", now, lease=60)
        assert await store.take_slot(KEY, 2, "node-b", now, lease=60)
        assert await store.drop_slot_holder("node-dead") == 0
    finally:
        await store.aclose()


async def test_without_knowing_who_died_the_slots_end_with_their_lease(
    fake_clock: FakeClock,
) -> None:
    store = LocalLimits(None)
    slots = SharedSlots(store, fake_clock, holder="node-a")
    try:
        assert await store.take_slot(KEY, 1, "node-dead", fake_clock.time(), lease=60)
        assert await slots.forget_the_dead() == 0
        assert not await store.take_slot(KEY, 1, "node-b", fake_clock.time(), lease=60)
        fake_clock.advance(60)
        assert await store.take_slot(KEY, 1, "node-b", fake_clock.time(), lease=60)
    finally:
        await store.aclose()


def test_a_holder_is_dead_only_when_its_process_on_this_host_has_exited() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    host = socket.gethostname()
    assert dead_on_this_host(f"{host}:{child.pid}:0a1b2c3d")
    assert not dead_on_this_host(f"{host}:{os.getpid()}:0a1b2c3d")  # this process
    assert not dead_on_this_host(f"another-host.test:{child.pid}:0a1b2c3d")
    assert not dead_on_this_host("node-a")  # not a name this host made
