"""Each mailer's health from the attempt rows: last success, last error, recent sends;
and the latest attempts that did not deliver (`postroom status`)."""

from __future__ import annotations

import pytest

from postroom.store import RecipientStatus, Store
from postroom.store.models import MailerHealth
from tests.store.factories import NOW, attempt, deferred, delivered, final, new_message, to

pytestmark = pytest.mark.store_parts("log", "queue")


async def test_last_success_last_error_and_messages_sent_since(store: Store) -> None:
    first = new_message(recipients=to("a@example.net", "b@example.net"))
    second = new_message(recipients=to("c@example.net"))
    await store.enqueue(first)
    await store.enqueue(second)
    # one message with two recipients counts once; an hour later sendgrid fails
    await store.record_outcomes(
        first.id,
        [delivered("a@example.net"), delivered("b@example.net")],
        [
            attempt(first.id, "a@example.net", NOW, mailer="sg", text="sg: accepted as m1"),
            attempt(first.id, "b@example.net", NOW, mailer="sg", text="sg: accepted as m1"),
        ],
    )
    await store.record_outcomes(
        second.id,
        [delivered("c@example.net")],
        [
            attempt(second.id, "c@example.net", NOW + 3600, "deferred", mailer="sg", code=451,
                    text="sg: HTTP 503 unavailable"),
            attempt(second.id, "c@example.net", NOW + 3600, mailer="mx", text="250 ok"),
        ],
    )  # fmt: skip
    assert await store.mailer_health(NOW) == [
        MailerHealth("mx", NOW + 3600, "250 ok", None, None, 1),
        MailerHealth("sg", NOW, "sg: accepted as m1", NOW + 3600, "sg: HTTP 503 unavailable", 1),
    ]
    assert [h.sent_since for h in await store.mailer_health(NOW + 1)] == [1, 0]


async def test_a_store_without_attempts_knows_no_mailers(store: Store) -> None:
    message = new_message(recipients=to("a@example.net"))
    await store.enqueue(message)
    await store.record_outcomes(message.id, [deferred("a@example.net", NOW + 60)], [])
    assert await store.mailer_health(0.0) == []


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
