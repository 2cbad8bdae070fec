"""What `postroom status` reads from the store: the waiting recipients by state, the
oldest waiting message, and the latest attempts that did not deliver."""

from __future__ import annotations

from postroom.store import RecipientStatus, Store
from postroom.store.models import QueueSummary
from tests.store.factories import NOW, attempt, deferred, delivered, final, new_message, to


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


async def test_recent_failures_are_the_latest_attempts_that_did_not_deliver(
    store: Store,
) -> None:
    message = new_message(recipients=to("a@example.net", "b@example.net"))
    await store.enqueue(message)
    await store.record_outcomes(
        message.id,
        [deferred("a@example.net", NOW + 600), final("b@example.net", RecipientStatus.BOUNCED)],
        [
            attempt(message.id, "a@example.net", NOW, "deferred", code=451, text="4.7.1 grey"),
            attempt(message.id, "a@example.net", NOW + 1, mailer="relay"),  # a success
            attempt(message.id, "b@example.net", NOW + 2, "bounced", code=550, text="5.1.1 no"),
            attempt(message.id, "a@example.net", NOW + 3, "deferred", code=421, text="4.4.2 t"),
        ],
    )

    latest = await store.recent_failures(2)

    assert [(a.at, a.recipient, a.disposition, a.text) for a in latest] == [
        (NOW + 3, "a@example.net", "deferred", "4.4.2 t"),
        (NOW + 2, "b@example.net", "bounced", "5.1.1 no"),
    ]
    assert len(await store.recent_failures(10)) == 3
