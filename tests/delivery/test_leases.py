"""Leases with a fake clock: a delivery that is still running keeps its recipients (its
lease is renewed), and those of a claimer that died are tried again one lease later."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Outcome
from postroom.store import RecipientStatus
from tests.delivery.test_scheduler import Scripted, make_world, status_of

LEASE = 60.0


@dataclass
class Slow(Scripted):
    """A Scripted mailer that holds each delivery until ``go`` is set."""

    go: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def deliver(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Outcome]:
        self.started.set()
        await self.go.wait()
        return await super().deliver(message, recipients)


async def test_a_long_delivery_keeps_its_lease_and_is_not_claimed_twice(tmp_path: Path) -> None:
    slow = Slow("primary")
    world = await make_world(tmp_path, primary=slow, lease=LEASE)
    try:
        queue_id = await world.submit("app@example.test", "a@remote.test")
        running = asyncio.create_task(world.scheduler.run_once())
        await asyncio.wait_for(slow.started.wait(), 5)
        for _ in range(9):  # three leases long, renewed every third of one
            world.clock.advance(LEASE / 3)
            assert await world.scheduler.renew_leases() == 1
        # another node (or this one's next claim) finds nothing to take over
        assert await world.store.claim_due(world.clock.time(), limit=10, lease=LEASE) == []
        slow.go.set()
        assert await running == 1
        assert slow.seen == [(queue_id, ("a@remote.test",))]  # tried once
        assert await status_of(world, queue_id) == {"a@remote.test": RecipientStatus.DELIVERED}
        assert await world.scheduler.renew_leases() == 0  # nothing in flight any more
    finally:
        await world.store.aclose()


async def test_a_dead_claimers_recipients_are_retried_after_one_short_lease(
    tmp_path: Path,
) -> None:
    world = await make_world(tmp_path, lease=LEASE)
    try:
        queue_id = await world.submit("app@example.test", "a@remote.test")
        # a node claims and dies: nobody renews its lease
        (claim,) = await world.store.claim_due(world.clock.time(), limit=10, lease=LEASE)
        world.clock.advance(LEASE - 1)
        assert await world.scheduler.run_once() == 0  # still leased
        assert await world.store.next_due() == claim.lease_until
        world.clock.advance(1)
        assert await world.scheduler.run_once() == 1
        assert await status_of(world, queue_id) == {"a@remote.test": RecipientStatus.DELIVERED}
    finally:
        await world.store.aclose()


async def test_an_ended_lease_is_not_revived_by_a_late_renewal(tmp_path: Path) -> None:
    world = await make_world(tmp_path, lease=LEASE)
    try:
        queue_id = await world.submit("app@example.test", "a@remote.test")
        await world.store.claim_due(world.clock.time(), limit=10, lease=LEASE)
        world.clock.advance(LEASE)
        renewed = await world.store.renew_leases(
            {queue_id: ["a@remote.test"]}, world.clock.time(), lease=LEASE
        )
        assert renewed == 0
        assert len(await world.store.claim_due(world.clock.time(), limit=10, lease=LEASE)) == 1
    finally:
        await world.store.aclose()
