"""What `postroom status` reads from the queue: the waiting recipients by state (held
apart) and the oldest waiting message."""

from __future__ import annotations

import pytest

from postroom.store import RecipientStatus, Store
from postroom.store.models import QueueSummary
from tests.store.factories import NOW, deferred, delivered, final, new_message, to

pytestmark = pytest.mark.store_parts("queue")


async def test_an_empty_queue_has_no_oldest_message(store: Store) -> None:
    assert await store.queue_summary() == QueueSummary(0, 0, 0, 0, None, None)


async def test_waiting_recipients_by_state_held_apart_and_the_oldest_message(
    store: Store,
) -> None:
    done = new_message(at=NOW - 500, recipients=to("a@example.net"))  # final: not waiting
    oldest = new_message(at=NOW - 300, recipients=to("b@example.net", "c@example.net"))
    held = new_message(at=NOW - 200, recipients=to("d@example.net"))
    newest = new_message(at=NOW, recipients=to("e@example.net", "f@example.net"))
    for message in (done, oldest, held, newest):
        await store.enqueue(message)
    await store.record_outcomes(done.id, [delivered("a@example.net")], [])
    await store.record_outcomes(oldest.id, [deferred("b@example.net", NOW + 60)], [])
    await store.record_outcomes(newest.id, [final("f@example.net", RecipientStatus.BOUNCED)], [])
    assert await store.hold(held.id)

    summary = await store.queue_summary()

    # oldest: c queued, b deferred; newest: e queued (f bounced); held: d
    assert summary == QueueSummary(
        queued=2,
        deferred=1,
        held=1,
        messages=3,
        oldest_id=oldest.id,
        oldest_received_at=NOW - 300,
    )


async def test_a_held_message_can_be_the_oldest(store: Store) -> None:
    held = new_message(at=NOW - 100, recipients=to("a@example.net"))
    later = new_message(at=NOW, recipients=to("b@example.net"))
    await store.enqueue(held)
    await store.enqueue(later)
    assert await store.hold_all(True) == 2
    assert await store.release_hold(later.id)

    summary = await store.queue_summary()

    assert (summary.queued, summary.held, summary.messages) == (1, 1, 2)
    assert summary.oldest_id == held.id
