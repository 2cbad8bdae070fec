"""The Store contract, shared limits: fixed windows, token buckets, sliding windows of
hits and leased slots, each counted once for every store on one database (a second
store stands for a second node, or an accept worker on SQLite)."""

from __future__ import annotations

import asyncio

import pytest

from postroom.store import Store
from postroom.store.limitops import WAITING_MARK
from postroom.store.models import Window
from tests.store.conftest import Backend

pytestmark = pytest.mark.store_parts("limits")

NOW = 1_800_000_000.0  # 08:00:00 UTC
MIDNIGHT = 1_800_057_600.0
SECOND = Window("mailer m per_second", 1, 2)
DAY = Window("mailer m per_day", 86400, 3)


async def test_windows_count_until_full_then_name_the_last_full_end(store: Store) -> None:
    assert await store.take_windows([SECOND, DAY], NOW) is None
    assert await store.take_windows([SECOND, DAY], NOW + 0.5) is None
    assert await store.take_windows([SECOND, DAY], NOW + 0.9) == NOW + 1  # the second
    assert await store.take_windows([SECOND, DAY], NOW + 1) is None  # a new second
    assert await store.take_windows([SECOND, DAY], NOW + 1) == MIDNIGHT  # both full
    assert await store.window_usage([SECOND, DAY], NOW + 1) == [1, 3]
    assert await store.take_windows([SECOND, DAY], MIDNIGHT) is None
    assert await store.window_usage([SECOND, DAY], MIDNIGHT) == [1, 1]
    assert await store.take_windows([], NOW) is None


async def test_a_refused_window_take_counts_nothing(store: Store) -> None:
    hour = Window("mailer m per_hour", 3600, 2)
    one = Window("mailer m per_second", 1, 1)
    assert await store.take_windows([one, hour], NOW) is None
    assert await store.take_windows([one, hour], NOW) == NOW + 1
    assert await store.take_windows([one, hour], NOW) == NOW + 1
    assert await store.take_windows([one, hour], NOW + 1) is None  # the hour saw two
    assert await store.take_windows([one, hour], NOW + 2) == NOW + 3600


async def test_a_window_is_counted_once_for_every_store_on_the_database(
    backend: Backend,
) -> None:
    first, second = await backend.open(), await backend.open()
    taken = await asyncio.gather(
        *(s.take_windows([DAY], NOW) for _ in range(5) for s in (first, second))
    )
    assert taken.count(None) == 3
    assert await second.window_usage([DAY], NOW) == [3]


async def test_a_token_bucket_gives_its_burst_then_refills_at_its_rate(store: Store) -> None:
    async def take(now: float) -> float:
        return await store.take_token("api shop", now, per_second=0.5, burst=2)

    assert await take(NOW) == 0
    assert await take(NOW) == 0
    assert await take(NOW) == pytest.approx(2.0)  # one token every two seconds
    assert await take(NOW + 1) == pytest.approx(1.0)
    assert await take(NOW + 2) == 0
    assert await take(NOW + 100) == 0  # full again: the burst, no more
    assert await take(NOW + 100) == 0
    assert await take(NOW + 100) > 0
    assert await store.take_token("api other", NOW, per_second=0.5, burst=2) == 0
    with pytest.raises(ValueError, match="per_second"):
        await store.take_token("api shop", NOW, per_second=0, burst=2)


async def test_a_token_bucket_is_shared_by_every_store(backend: Backend) -> None:
    first, second = await backend.open(), await backend.open()
    waits = await asyncio.gather(
        *(
            s.take_token("api shop", NOW, per_second=1, burst=3)
            for _ in range(4)
            for s in (first, second)
        )
    )
    assert waits.count(0) == 3


async def test_hits_count_in_a_sliding_window_under_every_key(store: Store) -> None:
    limits = [("auth client 192.0.2.1", 2), ("auth account bob", 3)]
    assert await store.add_hit(limits, "bob", NOW, window=60)
    assert await store.add_hit(limits, "bob", NOW + 30, window=60)
    assert not await store.add_hit(limits, "bob", NOW + 59, window=60)  # the client's 2
    # Another client at the same account: the account's count has room for one more.
    other = [("auth client 192.0.2.2", 2), ("auth account bob", 3)]
    assert await store.add_hit(other, "bob", NOW + 59, window=60)
    assert not await store.add_hit(other, "bob", NOW + 59, window=60)  # the account's 3
    # The first hit leaves the window at NOW + 60 (a hit at exactly now - window is out).
    assert await store.add_hit(limits, "bob", NOW + 60, window=60)


async def test_hits_below_says_what_add_hit_would_find_and_records_nothing(
    store: Store,
) -> None:
    limits = [("auth client 192.0.2.1", 2), ("auth account bob", 3)]
    assert await store.hits_below(limits, NOW, window=60)
    assert await store.add_hit(limits, "bob", NOW, window=60)
    for _ in range(3):  # asking takes no slot
        assert await store.hits_below(limits, NOW + 1, window=60)
    assert await store.add_hit(limits, "bob", NOW + 1, window=60)
    assert not await store.hits_below(limits, NOW + 2, window=60)  # the client's 2
    assert not await store.hits_below([("auth account bob", 2)], NOW + 2, window=60)
    assert await store.hits_below([("auth account bob", 3)], NOW + 2, window=60)
    assert await store.hits_below(limits, NOW + 60, window=60)  # the first has left


async def test_forgetting_hits_removes_only_those_of_the_tag(store: Store) -> None:
    client = "auth client 192.0.2.1"
    assert await store.add_hit([(client, 2), ("auth account eve", 5)], "eve", NOW, window=60)
    assert await store.add_hit([(client, 2), ("auth account bob", 5)], "bob", NOW, window=60)
    await store.forget_hits([client, "auth account bob"], "bob")
    assert await store.add_hit([(client, 2), ("auth account x", 5)], "x", NOW, window=60)
    # eve's hit stayed: the client is at its 2 again.
    assert not await store.add_hit([(client, 2), ("auth account y", 5)], "y", NOW, window=60)


async def test_hits_are_counted_once_for_every_store(backend: Backend) -> None:
    first, second = await backend.open(), await backend.open()
    limits = [("auth account bob", 4)]
    added = await asyncio.gather(
        *(s.add_hit(limits, "bob", NOW, window=60) for _ in range(5) for s in (first, second))
    )
    assert added.count(True) == 4
    await first.forget_hits(["auth account bob"], "bob")
    assert await second.add_hit(limits, "bob", NOW, window=60)


async def test_hits_below_sees_at_once_the_hits_another_store_adds(backend: Backend) -> None:
    # The check every login makes: on SQLite it reads on the event loop's thread once
    # the store's limits connection is open, and must still see the other's commits.
    first, second = await backend.open(), await backend.open()
    limits = [("auth account bob", 2)]
    assert await second.add_hit([("auth account eve", 9)], "eve", NOW, window=60)
    assert await second.hits_below(limits, NOW, window=60)
    for _ in range(2):
        assert await first.add_hit(limits, "bob", NOW, window=60)
    assert not await second.hits_below(limits, NOW + 1, window=60)
    await first.forget_hits(["auth account bob"], "bob")
    assert await second.hits_below(limits, NOW + 1, window=60)


async def test_slots_are_held_up_to_the_limit_across_stores_and_released(
    backend: Backend,
) -> None:
    first, second = await backend.open(), await backend.open()
    key = "mx example.com"
    taken = await asyncio.gather(
        *(
            s.take_slot(key, 3, holder, NOW, lease=60)
            for _ in range(3)
            for s, holder in ((first, "node-a"), (second, "node-b"))
        )
    )
    assert taken.count(True) == 3
    assert not await second.take_slot(key, 3, "node-b", NOW, lease=60)
    if True in taken[0::2]:  # give back one of a holder that has one
        await first.release_slot(key, "node-a")
    else:
        await second.release_slot(key, "node-b")
    # The slot given back is taken again, once (by whichever holder is below its
    # share: both have waited), and then all are held again.
    again = [
        await s.take_slot(key, 3, holder, NOW, lease=60)
        for s, holder in ((first, "node-a"), (second, "node-b"))
    ]
    assert again.count(True) == 1
    assert not await first.take_slot(key, 3, "node-a", NOW, lease=60)
    assert await first.take_slot("mx other.example", 3, "node-a", NOW, lease=60)


async def test_the_slots_of_a_holder_that_stops_renewing_end_with_their_lease(
    store: Store,
) -> None:
    key = "smtp relay"
    assert await store.take_slot(key, 2, "dead", NOW, lease=30)
    assert await store.take_slot(key, 2, "dead", NOW + 5, lease=30)
    assert not await store.take_slot(key, 2, "live", NOW + 34, lease=30)
    assert await store.take_slot(key, 2, "live", NOW + 35, lease=30)  # both ended
    assert await store.take_slot(key, 2, "live", NOW + 35, lease=30)
    assert await store.renew_slots("dead", NOW + 35, lease=30) == 0  # ended stays ended
    # The live holder renews: its slots outlast their first lease.
    assert await store.renew_slots("live", NOW + 60, lease=30) == 1
    assert not await store.take_slot(key, 2, "other", NOW + 80, lease=30)
    with pytest.raises(ValueError, match="lease"):
        await store.take_slot(key, 2, "live", NOW, lease=0)
    with pytest.raises(ValueError, match="lease"):
        await store.renew_slots("live", NOW, lease=0)


async def test_releasing_a_slot_not_held_changes_nothing(store: Store) -> None:
    await store.release_slot("mx example.com", "nobody")
    assert await store.take_slot("mx example.com", 1, "a", NOW, lease=60)
    await store.release_slot("mx example.com", "nobody")
    assert not await store.take_slot("mx example.com", 1, "b", NOW, lease=60)


async def test_a_holder_that_waits_gets_its_share_of_the_slots(store: Store) -> None:
    # Slots are held per connection: without shares, the first node to open its
    # connections would keep every slot while another node's mail waited.
    key = "connections relay smtp.example"
    for _ in range(4):  # alone: all of them
        assert await store.take_slot(key, 4, "node-a", NOW, lease=60)
    assert await store.slot_contenders("node-a", NOW) == {}
    assert not await store.take_slot(key, 4, "node-b", NOW, lease=60)
    assert await store.slot_contenders("node-a", NOW) == {key: 2}  # b waits
    assert await store.slot_contenders("node-b", NOW) == {}  # b holds none to give back
    await store.release_slot(key, "node-a")
    # a, at its share (2 of 4) or above, may not take back what it gave while b waits.
    assert not await store.take_slot(key, 4, "node-a", NOW, lease=60)
    assert await store.take_slot(key, 4, "node-b", NOW, lease=60)
    await store.release_slot(key, "node-a")
    assert await store.take_slot(key, 4, "node-b", NOW, lease=60)
    assert not await store.take_slot(key, 4, "node-c", NOW, lease=60)  # all 4 held
    assert await store.slot_contenders("node-b", NOW) == {key: 3}  # a and c wait
    # A wait is marked for a moment: a holder that stopped asking stops counting.
    assert await store.slot_contenders("node-b", NOW + WAITING_MARK) == {}
    assert await store.take_slot(key, 5, "node-a", NOW + WAITING_MARK, lease=60)


async def test_a_holder_dropped_gives_back_every_slot_and_its_waiting_marks(
    backend: Backend,
) -> None:
    first, second = await backend.open(), await backend.open()
    for key in ("mx a.example", "mx b.example"):
        assert await first.take_slot(key, 1, "node-a", NOW, lease=60)
    assert not await second.take_slot("mx a.example", 1, "node-b", NOW, lease=60)  # waits
    assert await second.take_slot("mx c.example", 1, "node-b", NOW, lease=60)
    assert await second.slot_holders(NOW) == ["node-a", "node-b"]
    assert await second.slot_holders(NOW + 60) == []  # ended slots hold nothing
    assert await second.drop_slot_holder("node-a") == 2
    assert await first.slot_holders(NOW) == ["node-b"]
    assert await second.take_slot("mx a.example", 1, "node-b", NOW, lease=60)
    assert await first.drop_slot_holder("node-a") == 0
