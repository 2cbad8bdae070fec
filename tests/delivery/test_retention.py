"""Retention removes finished messages after ``retention.days``, and only those; their
bodies alone after ``retention.bodies_days``."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.config import load
from postroom.config.settings import RetentionSettings
from postroom.delivery.retention import Retention
from postroom.errors import ConfigError
from postroom.store import RecipientStatus, Store, open_store
from postroom.store.models import NewMessage, RecipientUpdate
from tests.conftest import FakeClock
from tests.store.factories import NOW, attempt, new_message

DAY = 86400.0


async def finished_and_pending(store: Store) -> tuple[NewMessage, NewMessage]:
    """Two messages received at NOW: one delivered (finished), one still waiting."""
    finished, pending = new_message(at=NOW), new_message(at=NOW)
    await store.enqueue(finished)
    await store.enqueue(pending)
    await store.record_outcomes(
        finished.id,
        [RecipientUpdate("bob@example.net", RecipientStatus.DELIVERED, None, "250 2.0.0 Ok")],
        [attempt(finished.id, "bob@example.net", NOW + 1)],
    )
    return finished, pending


async def test_finished_messages_go_after_the_retention_time(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        finished, pending = await finished_and_pending(store)
        clock = FakeClock(start=NOW + 29 * DAY)
        retention = Retention(store, RetentionSettings(days=30), clock)
        assert await retention.run_once() == 0  # not old enough yet
        clock.advance(2 * DAY)
        assert await retention.run_once() == 1
        assert await store.message(finished.id) is None
        assert await store.read_body(finished.id) is None
        assert await store.attempts(finished.id) == []
        assert await store.message(pending.id) is not None  # still waiting: kept
    finally:
        await store.aclose()


async def test_bodies_go_after_bodies_days_and_the_log_stays_until_days(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        finished, pending = await finished_and_pending(store)
        clock = FakeClock(start=NOW + 6 * DAY)
        retention = Retention(store, RetentionSettings(days=30, bodies_days=7), clock)
        await retention.run_once()
        assert await store.read_body(finished.id) is not None  # not old enough yet
        kept = await store.message(finished.id)
        assert kept is not None and not kept.body_removed

        clock.advance(2 * DAY)
        assert await retention.run_once() == 0  # no whole message removed
        assert await store.read_body(finished.id) is None
        stripped = await store.message(finished.id)
        assert stripped is not None and stripped.body_removed
        assert stripped.size == kept.size and stripped.recipients == kept.recipients
        assert [a.recipient for a in await store.attempts(finished.id)] == ["bob@example.net"]
        pending_now = await store.message(pending.id)
        assert pending_now is not None and not pending_now.body_removed  # still waiting
        assert await store.read_body(pending.id) is not None
        assert await retention.run_once() == 0  # nothing more to do, nothing breaks

        clock.advance(23 * DAY)
        assert await retention.run_once() == 1  # after retention.days the log goes too
        assert await store.message(finished.id) is None
        assert await store.attempts(finished.id) == []
    finally:
        await store.aclose()


def test_bodies_days_longer_than_days_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "postroom.toml"
    config.write_text("[retention]\ndays = 7\nbodies_days = 10\n")
    with pytest.raises(ConfigError) as caught:
        load(config)
    assert str(caught.value) == "retention.bodies_days: must not be more than retention.days (7)"
    config.write_text("[retention]\ndays = 7\nbodies_days = 7\n")
    assert load(config).retention.bodies_days == 7
