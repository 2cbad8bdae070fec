"""Per-mailer sending limits: a message over a limit waits in the queue until the
window ends (or fails over when configured); it is never dropped or bounced for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.config.providers import OverLimit, SendLimits
from postroom.delivery.mailers.api.limits import SendWindow, WindowUsage
from postroom.delivery.outcome import Disposition
from postroom.store import RecipientStatus
from tests.conftest import FakeClock
from tests.delivery.provider_messages import message, recipients
from tests.delivery.providers.kinds import KINDS, running
from tests.delivery.test_scheduler import make_world, status_of

START = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC, FakeClock's start
MIDNIGHT = 1_800_057_600.0  # the next midnight UTC


def test_a_window_counts_until_full_then_names_its_end() -> None:
    window = SendWindow(SendLimits(per_second=2, per_day=3))
    assert window.take(START) is None
    assert window.take(START + 0.5) is None
    assert window.take(START + 0.9) == START + 1  # the second is full
    assert window.take(START + 1) is None  # a new second; the day has one left
    assert window.take(START + 2) == MIDNIGHT
    assert window.take(MIDNIGHT) is None
    assert window.usage(MIDNIGHT) == [
        WindowUsage("per_second", 2, 1, MIDNIGHT + 1),
        WindowUsage("per_day", 3, 1, MIDNIGHT + 86400),
    ]


def test_a_refused_take_counts_nothing() -> None:
    window = SendWindow(SendLimits(per_second=1, per_hour=2))
    assert window.take(START) is None
    assert window.take(START) == START + 1
    assert window.take(START) == START + 1
    assert window.take(START + 1) is None  # the hour saw two, not four
    assert window.take(START + 2) == START + 3600


def test_no_limits_never_wait() -> None:
    window = SendWindow(SendLimits())
    assert all(window.take(START) is None for _ in range(1000))
    assert window.usage(START) == []


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
        world = await make_world(tmp_path, primary=mailer)  # type: ignore[arg-type]
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
