"""The event outbox: events committed with what caused them, fanned out to webhooks,
claimed under a lease in order per message, settled or rescheduled."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from postroom.mail.events import EventOrigin, EventType, MailEvent, new_event_id
from postroom.store import RecipientStatus, Store
from postroom.store.models import (
    MessageMeta,
    ProviderEventRecord,
    WebhookAttempt,
    WebhookState,
)
from tests.store.conftest import Backend
from tests.store.factories import NOW, attempt, delivered, new_message, to

pytestmark = pytest.mark.store_parts("events", "queue", "log", "api")


def _event(kind: EventType, queue_id: str | None, recipient: str = "bob@example.net") -> MailEvent:
    return MailEvent(
        id=new_event_id(),
        type=kind,
        at=NOW,
        recipient=recipient,
        queue_id=queue_id,
        mailer="mx",
        reply="250 2.0.0 ok",
        details=(("host", "mx.example.net"),),
    )


def _everyone(event: MailEvent) -> list[str]:
    return ["app"]


async def test_rejected_recipients_and_events_commit_with_the_message(store: Store) -> None:
    message = new_message(recipients=to("bob@example.net", "carol@example.net"))
    queued = _event(EventType.QUEUED, message.id)
    rejected = dataclasses.replace(
        _event(EventType.REJECTED, message.id, "carol@example.net"),
        origin=EventOrigin.INTAKE,
        reason="suppressed",
    )
    reply = "550 5.7.1 suppressed"
    await store.enqueue(
        dataclasses.replace(
            message, rejected=(("carol@example.net", reply),), events=(queued, rejected)
        )
    )
    stored = await store.message(message.id)
    assert stored is not None
    states = {r.address: (r.status, r.last_reply, r.next_attempt_at) for r in stored.recipients}
    assert states["carol@example.net"] == (RecipientStatus.REJECTED, reply, None)
    assert states["bob@example.net"][0] == RecipientStatus.QUEUED
    claims = await store.claim_due(NOW, limit=10, lease=60)
    assert [r.address for c in claims for r in c.recipients] == ["bob@example.net"]
    assert [e.id for e in await store.events(message.id)] == [queued.id, rejected.id]


async def test_events_read_back_carry_the_message_sender_tags_and_metadata(
    store: Store,
) -> None:
    message = new_message()
    await store.enqueue(message)
    meta = MessageMeta(message.id, "<m1@example.org>", "Hi", ("welcome",), (("user", "42"),))
    await store.save_send(meta, None, forget_before=0)
    event = _event(EventType.DELIVERED, message.id)
    await store.record_outcomes(
        message.id,
        [delivered("bob@example.net")],
        [attempt(message.id, "bob@example.net", NOW)],
        [event],
    )
    assert await store.events(message.id) == [
        dataclasses.replace(
            event,
            message_id="<m1@example.org>",
            sender="alice@example.org",
            tags=("welcome",),
            metadata=(("user", "42"),),
        )
    ]


async def test_a_provider_callback_becomes_an_event_of_the_message_it_names(
    store: Store,
) -> None:
    message = new_message()
    await store.enqueue(message)
    sent = dataclasses.replace(
        attempt(message.id, "bob@example.net", NOW, mailer="sg"), provider_id="p-1"
    )
    await store.record_outcomes(message.id, [delivered("bob@example.net")], [sent])
    for status in ("complained", "other"):
        record = ProviderEventRecord(
            "sg", "p-1", "bob@example.net", status, "spamreport", NOW + 5, "", NOW + 6
        )
        await store.record_provider_event(record)
    [event] = await store.events(message.id)
    assert (event.type, event.origin, event.mailer, event.reason, event.at) == (
        EventType.COMPLAINED,
        EventOrigin.PROVIDER,
        "sg",
        "spamreport",
        NOW + 5,
    )


async def test_fan_out_takes_each_event_once_and_routes_it_by_the_filter(store: Store) -> None:
    events = [_event(EventType.DELIVERED, "Q1"), _event(EventType.BOUNCED, "Q2")]
    await store.record_events(events)
    await store.record_events(events[:1])  # the same id again: ignored

    def bounces_only(event: MailEvent) -> list[str]:
        return ["app", "alerts"] if event.type is EventType.BOUNCED else ["app"]

    assert await store.fan_out(bounces_only, limit=10, now=NOW) == 2
    assert await store.fan_out(bounces_only, limit=10, now=NOW) == 0
    assert await store.webhook_backlog() == {"": 0, "app": 2, "alerts": 1}


async def test_fan_out_with_no_webhook_marks_events_in_order_and_queues_no_delivery(
    store: Store,
) -> None:
    events = [_event(EventType.DELIVERED, f"Q{i}") for i in range(5)]
    await store.record_events(events)
    assert await store.webhook_backlog() == {"": 5}
    assert await store.fan_out(None, limit=3, now=NOW) == 3
    assert await store.webhook_backlog() == {"": 2}
    later = _event(EventType.BOUNCED, "Q9")
    await store.record_events([later])
    # The oldest first: a filter given now sees only what no round has taken.
    seen: list[str] = []

    def to_app(event: MailEvent) -> list[str]:
        seen.append(event.id)
        return ["app"]

    assert await store.fan_out(to_app, limit=10, now=NOW) == 3
    assert seen == [events[3].id, events[4].id, later.id]
    assert await store.fan_out(None, limit=10, now=NOW) == 0
    assert await store.webhook_backlog() == {"": 0, "app": 3}


async def test_two_nodes_with_no_webhook_mark_each_event_once(backend: Backend) -> None:
    one, two = await backend.open(), await backend.open()
    await one.record_events([_event(EventType.DELIVERED, f"Q{i}") for i in range(40)])
    marked = await asyncio.gather(
        *(store.fan_out(None, limit=7, now=NOW) for store in (one, two) for _ in range(4))
    )
    marked_more = await one.fan_out(None, limit=100, now=NOW)
    assert sum(marked) + marked_more == 40
    assert await one.webhook_backlog() == {"": 0}


async def test_one_message_events_go_to_a_webhook_in_order(store: Store) -> None:
    first, second = _event(EventType.QUEUED, "Q1"), _event(EventType.DELIVERED, "Q1")
    other = _event(EventType.DELIVERED, "Q2")
    await store.record_events([first, second, other])
    await store.fan_out(_everyone, limit=10, now=NOW)
    claimed = await store.claim_webhook_deliveries(NOW, limit=10, lease=30)
    assert [d.event.id for d in claimed] == [first.id, other.id]
    # Leased: not claimed again, and the message's later event waits behind it.
    assert await store.claim_webhook_deliveries(NOW + 1, limit=10, lease=30) == []
    retry_at = NOW + 60
    await store.record_webhook_attempt(
        WebhookAttempt("app", first.id, NOW + 2, False, 500, "HTTP 500", retry_at)
    )
    await store.record_webhook_attempt(
        WebhookAttempt("app", other.id, NOW + 2, True, 200, "", None)
    )
    assert await store.claim_webhook_deliveries(NOW + 3, limit=10, lease=30) == []
    [again] = await store.claim_webhook_deliveries(retry_at, limit=10, lease=30)
    assert (again.event.id, again.attempts, again.last_status) == (first.id, 1, 500)
    await store.record_webhook_attempt(
        WebhookAttempt("app", first.id, retry_at, True, 204, "", None)
    )
    [then] = await store.claim_webhook_deliveries(retry_at, limit=10, lease=30)
    assert then.event.id == second.id


async def test_an_unsettled_lease_ends_and_the_delivery_is_due_again(store: Store) -> None:
    await store.record_events([_event(EventType.DELIVERED, "Q1")])
    await store.fan_out(_everyone, limit=10, now=NOW)
    assert len(await store.claim_webhook_deliveries(NOW, limit=10, lease=30)) == 1
    assert await store.claim_webhook_deliveries(NOW + 29, limit=10, lease=30) == []
    assert len(await store.claim_webhook_deliveries(NOW + 30, limit=10, lease=30)) == 1


async def test_history_shows_failures_and_a_failed_delivery_unblocks_the_next(
    store: Store,
) -> None:
    first, second = _event(EventType.DEFERRED, "Q1"), _event(EventType.EXPIRED, "Q1")
    await store.record_events([first, second])
    await store.fan_out(_everyone, limit=10, now=NOW)
    await store.claim_webhook_deliveries(NOW, limit=10, lease=30)
    await store.record_webhook_attempt(
        WebhookAttempt("app", first.id, NOW, False, None, "connection refused", None)
    )
    [failed] = await store.webhook_deliveries(state=WebhookState.FAILED)
    assert (failed.event.id, failed.last_status, failed.last_error, failed.next_attempt_at) == (
        first.id,
        None,
        "connection refused",
        None,
    )
    history = await store.webhook_deliveries(webhook="app")
    assert [(d.event.id, d.state) for d in history] == [
        (second.id, WebhookState.PENDING),
        (first.id, WebhookState.FAILED),
    ]
    [next_one] = await store.claim_webhook_deliveries(NOW, limit=10, lease=30)
    assert next_one.event.id == second.id
    assert await store.webhook_backlog() == {"": 0, "app": 1}


async def test_retention_removes_old_events_no_webhook_waits_for(store: Store) -> None:
    old_done, old_waiting = _event(EventType.DELIVERED, "Q1"), _event(EventType.BOUNCED, "Q2")
    old_new = _event(EventType.DEFERRED, "Q3")
    recent = dataclasses.replace(_event(EventType.DELIVERED, "Q4"), at=NOW + 100)
    await store.record_events([old_done, old_waiting])
    await store.fan_out(_everyone, limit=10, now=NOW)
    await store.record_events([old_new, recent])  # not fanned out yet: kept
    await store.claim_webhook_deliveries(NOW, limit=10, lease=30)
    await store.record_webhook_attempt(WebhookAttempt("app", old_done.id, NOW, True, 200, "", None))
    assert await store.purge_events(NOW + 50) == 1
    history = await store.webhook_deliveries()
    assert [d.event.id for d in history] == [old_waiting.id]
    assert await store.events("Q1") == []
    assert [e.id for e in await store.events("Q3")] == [old_new.id]


async def test_two_nodes_fan_out_and_claim_each_delivery_once(backend: Backend) -> None:
    one, two = await backend.open(), await backend.open()
    events = [_event(EventType.DELIVERED, f"Q{i}") for i in range(40)]
    await one.record_events(events)
    fanned = await asyncio.gather(
        *(store.fan_out(_everyone, limit=7, now=NOW) for store in (one, two) for _ in range(4))
    )
    fanned_more = [await one.fan_out(_everyone, limit=100, now=NOW)]
    assert sum(fanned) + sum(fanned_more) == 40
    assert await one.webhook_backlog() == {"": 0, "app": 40}
    rounds = await asyncio.gather(
        *(
            store.claim_webhook_deliveries(NOW, limit=5, lease=60)
            for store in (one, two)
            for _ in range(6)
        )
    )
    claimed = [d.event.id for found in rounds for d in found]
    assert len(claimed) == len(set(claimed)) == 40


async def test_complaints_are_counted_per_slot_mailer_and_sender_domain(store: Store) -> None:
    message = new_message()  # from alice@example.org
    await store.enqueue(message)
    slot = NOW // 300 * 300

    def complaint(at: float, queue_id: str | None, mailer: str) -> MailEvent:
        return dataclasses.replace(
            _event(EventType.COMPLAINED, queue_id),
            at=at,
            mailer=mailer,
            origin=EventOrigin.PROVIDER,
        )

    await store.record_events(
        [
            complaint(slot + 1, message.id, "sg"),
            complaint(slot + 299, message.id, "sg"),
            complaint(slot + 301, message.id, "sg"),
            complaint(slot + 2, None, "ses"),  # of no message postroom knows
            complaint(slot - 1, message.id, "sg"),  # before the window's first slot
            dataclasses.replace(_event(EventType.DELIVERED, message.id), at=slot + 3),
        ]
    )
    counts = await store.complaint_counts(slot + 10, 300)
    assert [(c.slot, c.mailer, c.sender_domain, c.disposition, c.count) for c in counts] == [
        (slot, "ses", "", "complained", 1),
        (slot, "sg", "example.org", "complained", 2),
        (slot + 300, "sg", "example.org", "complained", 1),
    ]
    assert await store.complaint_counts(slot + 600, 300) == []


async def test_one_messages_webhook_deliveries_are_found_by_its_queue_id(store: Store) -> None:
    q1_first, q1_then = _event(EventType.QUEUED, "Q1"), _event(EventType.DELIVERED, "Q1")
    await store.record_events([q1_first, _event(EventType.QUEUED, "Q2"), q1_then])
    await store.fan_out(_everyone, limit=10, now=NOW)
    found = await store.webhook_deliveries(queue_id="Q1", limit=10)
    assert [d.event.id for d in found] == [q1_then.id, q1_first.id]  # newest first
    assert await store.webhook_deliveries(queue_id="Q3", limit=10) == []
    assert len(await store.webhook_deliveries(queue_id="Q1", state=WebhookState.FAILED)) == 0
