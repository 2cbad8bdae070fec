"""Shared connection slots as a node sees them (``SharedSlots``): waiting, asking the
store, giving back. On the limits file of the SQLite engine, which counts as a shared
database does."""

from __future__ import annotations

import asyncio

from postroom.delivery.slots import SharedSlots
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
