"""Provider callbacks recorded on the attempt whose provider id they name."""

from __future__ import annotations

import dataclasses

import pytest

from postroom.store import Store
from postroom.store.models import ProviderEventRecord
from tests.store.conftest import Backend
from tests.store.factories import NOW, attempt, delivered, new_message, to

pytestmark = pytest.mark.store_parts("log", "queue")


def _event(provider_id: str, recipient: str, **changes: object) -> ProviderEventRecord:
    event = ProviderEventRecord(
        mailer="sg",
        provider_id=provider_id,
        recipient=recipient,
        status="bounced",
        kind="bounce",
        at=NOW + 60,
        detail="550 5.1.1 no such user",
        received_at=NOW + 61,
    )
    return dataclasses.replace(event, **changes)  # type: ignore[arg-type]


async def _sent(store: Store, provider_id: str, *recipients: str, mailer: str = "sg") -> str:
    message = new_message(recipients=to(*recipients))
    await store.enqueue(message)
    attempts = [
        dataclasses.replace(attempt(message.id, r, NOW, mailer=mailer), provider_id=provider_id)
        for r in recipients
    ]
    await store.record_outcomes(message.id, [delivered(r) for r in recipients], attempts)
    return message.id


async def test_an_event_lands_on_the_message_its_provider_id_names(store: Store) -> None:
    other = await _sent(store, "id-other", "carol@example.net")
    sent = await _sent(store, "id-1", "bob@example.net", "dave@example.net")
    assert await store.record_provider_event(_event("id-1", "Dave@Example.net")) == sent
    events = await store.provider_events(sent)
    assert [(e.recipient, e.status, e.detail, e.message_id) for e in events] == [
        ("Dave@Example.net", "bounced", "550 5.1.1 no such user", sent)
    ]
    assert await store.provider_events(other) == []


async def test_mailgun_ids_match_without_their_angle_brackets(store: Store) -> None:
    sent = await _sent(store, "<20270101.abc@mg.example.org>", "bob@example.net")
    found = await store.record_provider_event(
        _event("20270101.abc@mg.example.org", "bob@example.net")
    )
    assert found == sent


async def test_events_of_an_unknown_id_or_another_mailer_are_kept_unmatched(
    store: Store,
) -> None:
    sent = await _sent(store, "id-2", "bob@example.net", mailer="mailgun")
    assert await store.record_provider_event(_event("id-2", "bob@example.net")) is None
    assert await store.record_provider_event(_event("nope", "bob@example.net")) is None
    assert await store.provider_events(sent) == []


async def test_events_come_back_in_provider_time_order(store: Store) -> None:
    sent = await _sent(store, "id-3", "bob@example.net")
    for status, at in (("opened", NOW + 300), ("delivered", NOW + 5), ("clicked", NOW + 400)):
        await store.record_provider_event(_event("id-3", "bob@example.net", status=status, at=at))
    assert [e.status for e in await store.provider_events(sent)] == [
        "delivered",
        "opened",
        "clicked",
    ]


async def test_deleting_the_message_removes_its_events(store: Store, backend: Backend) -> None:
    sent = await _sent(store, "id-4", "bob@example.net")
    await store.record_provider_event(_event("id-4", "bob@example.net"))
    assert await store.delete(sent)
    assert backend.rows_of(store, sent) == 0
