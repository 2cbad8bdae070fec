"""What `postroom status` reads from the queue: the waiting recipients by state (held
apart) and the oldest waiting message."""

from __future__ import annotations

import pytest

from postroom.store import RecipientStatus, Store, totals
from postroom.store.models import AttemptCount, QueueSummary
from tests.store.conftest import Backend
from tests.store.factories import NOW, attempt, deferred, delivered, final, new_message, to

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


async def test_the_counts_follow_every_change_of_the_queue(store: Store) -> None:
    # The counts are kept as recipients change, not read from the queue: each way a
    # recipient enters, moves or leaves must move them.
    first = new_message(at=NOW - 100, recipients=to("a@example.net", "b@example.net"))
    second = new_message(at=NOW, recipients=to("c@example.net"))
    await store.enqueue(first)
    await store.enqueue(second)

    async def counts() -> tuple[int, int, int, int]:
        s = await store.queue_summary()
        return s.queued, s.deferred, s.held, s.messages

    assert await counts() == (3, 0, 0, 2)
    await store.record_outcomes(first.id, [deferred("a@example.net", NOW + 60)], [])
    assert await counts() == (2, 1, 0, 2)
    assert await store.hold(first.id)
    assert await counts() == (1, 0, 2, 2)
    assert await store.release_hold(first.id)
    assert await counts() == (2, 1, 0, 2)
    await store.record_outcomes(
        first.id, [delivered("b@example.net"), final("a@example.net", RecipientStatus.BOUNCED)], []
    )
    assert await counts() == (1, 0, 0, 1)
    assert (await store.queue_summary()).oldest_id == second.id
    assert await store.delete(second.id)
    assert await store.queue_summary() == QueueSummary(0, 0, 0, 0, None, None)


async def test_waiting_messages_are_counted_up_to_a_bound(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(totals, "MESSAGES_COUNTED", 2)
    for i in range(3):
        await store.enqueue(new_message(at=NOW + i, recipients=to("a@example.net")))
    summary = await store.queue_summary()
    assert (summary.queued, summary.messages, summary.more_messages) == (3, 2, True)


@pytest.mark.store_parts("log")
async def test_merging_the_counters_changes_no_count(backend: Backend) -> None:
    # Two writers (two nodes, or a node and the CLI) count into rows of their own where
    # the engine keeps rows per writer; a merge folds them, and every count reads the same
    # before and after, and goes on counting on every writer after it.
    node, other = await backend.open(), await backend.open()
    at = 3600 * 1000
    first = new_message(at=NOW - 100, recipients=to("a@example.net", "b@example.net"))
    second = new_message(at=NOW, recipients=to("c@example.net", "d@example.net"))
    await node.enqueue(first)
    await other.enqueue(second)
    await node.record_outcomes(
        first.id, [deferred("a@example.net", NOW + 60)], [attempt(first.id, "a@example.net", at)]
    )
    await other.record_outcomes(
        second.id, [delivered("c@example.net")], [attempt(second.id, "c@example.net", at + 1)]
    )
    assert await other.hold(first.id)

    async def counts() -> tuple[QueueSummary, list[AttemptCount]]:
        return await node.queue_summary(), await node.attempt_counts(at, 300)

    before = await counts()
    assert before[0].held == 2 and before[0].queued == 1
    assert [c.count for c in before[1]] == [2]

    assert (await node.merge_counters() > 0) is backend.counts_per_writer
    assert await counts() == before
    assert await other.merge_counters() == 0  # nothing left to fold

    await other.record_outcomes(
        second.id, [delivered("d@example.net")], [attempt(second.id, "d@example.net", at + 2)]
    )
    assert await other.release_hold(first.id)
    summary, rollups = await counts()
    assert (summary.queued, summary.deferred, summary.held) == (1, 1, 0)
    assert [c.count for c in rollups] == [3]
    await node.merge_counters()
    assert await counts() == (summary, rollups)
