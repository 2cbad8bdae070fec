"""Per-mailer sending limits: a message over a limit waits in the queue until the
window ends (or fails over when configured); it is never dropped or bounced for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postroom.config.providers import OverLimit, SendLimits
from postroom.delivery.mailers.api.limits import SendWindow, WindowUsage
from postroom.delivery.outcome import Disposition
from postroom.store import RecipientStatus
from postroom.store.sqlite.limits import LocalLimits
from tests.conftest import FakeClock
from tests.delivery.provider_messages import message, recipients
from tests.delivery.providers.kinds import KINDS, running
from tests.delivery.test_scheduler import make_world, status_of

START = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC, FakeClock's start
MIDNIGHT = 1_800_057_600.0  # the next midnight UTC


@pytest.fixture
async def counts() -> AsyncIterator[LocalLimits]:
    limits = LocalLimits(None)
    yield limits
    await limits.aclose()


async def test_a_window_counts_until_full_then_names_its_end(counts: LocalLimits) -> None:
    window = SendWindow(SendLimits(per_second=2, per_day=3), "postmark", counts)
    assert await window.take(START) is None
    assert await window.take(START + 0.5) is None
    assert await window.take(START + 0.9) == START + 1  # the second is full
    assert await window.take(START + 1) is None  # a new second; the day has one left
    assert await window.take(START + 2) == MIDNIGHT
    assert await window.take(MIDNIGHT) is None
    assert await window.usage(MIDNIGHT) == [
        WindowUsage("per_second", 2, 1, MIDNIGHT + 1),
        WindowUsage("per_day", 3, 1, MIDNIGHT + 86400),
    ]


async def test_a_refused_take_counts_nothing(counts: LocalLimits) -> None:
    window = SendWindow(SendLimits(per_second=1, per_hour=2), "postmark", counts)
    assert await window.take(START) is None
    assert await window.take(START) == START + 1
    assert await window.take(START) == START + 1
    assert await window.take(START + 1) is None  # the hour saw two, not four
    assert await window.take(START + 2) == START + 3600


async def test_each_mailer_has_windows_of_its_own(counts: LocalLimits) -> None:
    first = SendWindow(SendLimits(per_day=1), "postmark", counts)
    second = SendWindow(SendLimits(per_day=1), "sendgrid", counts)
    assert await first.take(START) is None
    assert await second.take(START) is None
    assert await first.take(START) == MIDNIGHT


async def test_no_limits_never_wait(counts: LocalLimits) -> None:
    window = SendWindow(SendLimits(), "postmark", counts)
    assert all([await window.take(START) is None for _ in range(1000)])
    assert await window.usage(START) == []


@pytest.mark.parametrize("over_limit", list(OverLimit))
async def test_over_the_limit_defers_until_the_window_ends(
    over_limit: OverLimit, fake_clock: FakeClock
) -> None:
    limits = SendLimits(per_day=1)
    with running(KINDS["postmark"], fake_clock, limits=limits, over_limit=over_limit) as (
        fake,
        _,
        mailer,
    ):
        [sent] = await mailer.deliver(message(), recipients("a@example.net"))
        [held] = await mailer.deliver(message(), recipients("b@example.net"))
        await mailer.aclose()
    assert len(fake.received) == 1  # the second never reached the provider
    assert sent.disposition is Disposition.DELIVERED
    assert held.disposition is Disposition.DEFERRED
    assert held.retry_at == MIDNIGHT
    assert held.failover is (over_limit is OverLimit.FAILOVER)
    assert (held.reply.code, held.reply.enhanced) == (451, "4.7.0")
    assert "sending limit reached" in str(held.reply)


async def test_the_scheduler_retries_at_the_windows_end_not_by_backoff(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    with running(KINDS["sendgrid"], fake_clock, limits=SendLimits(per_day=1)) as (fake, _, mailer):
        world = await make_world(tmp_path, route_to=mailer)
        world.clock.now = fake_clock.now
        first = await world.submit("app@example.test", "a@remote.test")
        await world.scheduler.run_once()
        second = await world.submit("app@example.test", "b@remote.test")
        await world.scheduler.run_once()
        assert await status_of(world, first) == {"a@remote.test": RecipientStatus.DELIVERED}
        held = await world.store.message(second)
        assert held is not None
        [rcpt] = held.recipients
        assert rcpt.status is RecipientStatus.DEFERRED
        assert rcpt.next_attempt_at == MIDNIGHT
        world.clock.now = MIDNIGHT - 1
        fake_clock.now = MIDNIGHT - 1
        assert await world.scheduler.run_once() == 0  # not due before midnight
        world.clock.now = fake_clock.now = MIDNIGHT
        assert await world.scheduler.run_once() == 1
        assert await status_of(world, second) == {"b@remote.test": RecipientStatus.DELIVERED}
        assert len(fake.received) == 2
        assert world.backup.seen == []  # "wait" does not fail over
        await mailer.aclose()
        await world.store.aclose()
