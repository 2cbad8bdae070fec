"""Retention removes finished messages after ``retention.days``, and only those."""

from __future__ import annotations

from pathlib import Path

from postroom.config.settings import RetentionSettings
from postroom.delivery.retention import Retention
from postroom.store import RecipientStatus, open_store
from postroom.store.models import RecipientUpdate
from tests.conftest import FakeClock
from tests.store.factories import NOW, attempt, new_message

DAY = 86400.0


async def test_finished_messages_go_after_the_retention_time(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        finished, pending = new_message(at=NOW), new_message(at=NOW)
        await store.enqueue(finished)
        await store.enqueue(pending)
        await store.record_outcomes(
            finished.id,
            [RecipientUpdate("bob@example.net", RecipientStatus.DELIVERED, None, "250 2.0.0 Ok")],
            [attempt(finished.id, "bob@example.net", NOW + 1)],
        )
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
