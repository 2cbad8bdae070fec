"""Providers that only send configured Basic credentials, and what their payloads mean."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pydantic import SecretStr

from postroom.config.providers import PostmarkMailerSettings
from postroom.config.webhooks import WebhookSettings
from postroom.delivery.webhooks import (
    EventStatus,
    PayloadError,
    ProviderEvent,
    brevo,
    handle_webhook,
    mailjet,
    postmark,
    sendlayer,
    sparkpost,
)
from postroom.mail.events import EventOrigin, EventType
from postroom.store.models import SuppressionReason
from postroom.store.sqlite import SqliteStore
from tests.conftest import FakeClock
from tests.delivery.webhooks.conftest import Hooked, sent_through

NOW = 1_800_000_000.0


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


POSTMARK_BOUNCE = json.dumps(
    {
        "RecordType": "Bounce",
        "Type": "HardBounce",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Email": "bob@example.net",
        "BouncedAt": "2027-01-15T08:00:05Z",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist",
    }
).encode()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (_basic("postmark", "hook-pass"), 200),
        (_basic("postmark", "wrong"), 401),
        (_basic("other", "hook-pass"), 401),
        ({"Authorization": "Basic cG9zdG1hcms="}, 401),  # "postmark", no colon
        ({"Authorization": "Bearer hook-pass"}, 401),
        ({}, 401),
    ],
)
async def test_postmark_hooks_need_the_configured_credentials(
    store: SqliteStore, fake_clock: FakeClock, headers: dict[str, str], status: int
) -> None:
    mailer = PostmarkMailerSettings(  # the real settings, as the API route passes them
        name="pm",
        api_key=SecretStr("server-token"),
        webhook=WebhookSettings(username="postmark", password_env="HOOK_PASS"),
    )
    message_id = await sent_through(
        store, "pm", "883953f4-6105-42a2-a16a-77a8eac79483", "bob@example.net"
    )
    got, _ = await handle_webhook(
        mailer, headers, POSTMARK_BOUNCE, store, fake_clock, environ={"HOOK_PASS": "hook-pass"}
    )
    assert got == status
    assert len(await store.provider_events(message_id)) == (1 if status == 200 else 0)


async def test_bad_payloads_get_400_naming_the_body(
    store: SqliteStore, fake_clock: FakeClock
) -> None:
    mailer = Hooked("bv", "brevo", WebhookSettings(username="u", password=SecretStr("p")))
    status, answer = await handle_webhook(mailer, _basic("u", "p"), b"{oops", store, fake_clock)
    assert status == 400 and answer["field"] == "body"
    status, _ = await handle_webhook(
        mailer, _basic("u", "p"), b'{"no": "event"}', store, fake_clock
    )
    assert status == 400


async def test_mailers_without_a_webhook_answer_404(
    store: SqliteStore, fake_clock: FakeClock
) -> None:
    for mailer in (
        Hooked("pm", "postmark", None),
        Hooked("gm", "gmail", WebhookSettings(username="u", password=SecretStr("p"))),
    ):
        status, _ = await handle_webhook(mailer, _basic("u", "p"), b"{}", store, fake_clock)
        assert status == 404


def _events(module: Any, payload: object) -> list[ProviderEvent]:
    events: list[ProviderEvent] = module.parse(json.dumps(payload).encode(), now=NOW)
    return events


def test_postmark_bounce_types() -> None:
    def bounce(kind: str) -> EventStatus:
        [event] = _events(postmark, {**json.loads(POSTMARK_BOUNCE), "Type": kind})
        return event.status

    assert bounce("HardBounce") is EventStatus.BOUNCED
    assert bounce("Transient") is EventStatus.DEFERRED
    assert bounce("SpamNotification") is EventStatus.COMPLAINED
    [delivered] = _events(
        postmark,
        {
            "RecordType": "Delivery",
            "MessageID": "m1",
            "Recipient": "bob@example.net",
            "DeliveredAt": "2027-01-15T08:00:00Z",
            "Details": "Test delivery webhook details",
        },
    )
    assert (delivered.status, delivered.recipient) == (EventStatus.DELIVERED, "bob@example.net")


def test_brevo_events() -> None:
    payload = {
        "event": "hard_bounce",
        "email": "bob@example.net",
        "message-id": "<202701150800.1@smtp-relay.mailin.fr>",
        "ts_event": 1_800_000_005,
        "reason": "unknown user",
    }
    [event] = _events(brevo, payload)
    assert event == ProviderEvent(
        "<202701150800.1@smtp-relay.mailin.fr>",
        "bob@example.net",
        EventStatus.BOUNCED,
        1_800_000_005.0,
        "unknown user",
        "hard_bounce",
    )
    assert _events(brevo, [{**payload, "event": "soft_bounce"}])[0].status is EventStatus.DEFERRED


def test_mailjet_events_single_and_grouped() -> None:
    bounce = {
        "event": "bounce",
        "time": 1_800_000_007,
        "email": "bob@example.net",
        "MessageID": 1234567890123456,
        "hard_bounce": True,
        "error_related_to": "recipient",
        "error": "user unknown",
    }
    [event] = _events(mailjet, bounce)
    assert (event.provider_message_id, event.status, event.detail) == (
        "1234567890123456",
        EventStatus.BOUNCED,
        "recipient user unknown",
    )
    soft, sent = _events(mailjet, [{**bounce, "hard_bounce": False}, {**bounce, "event": "sent"}])
    assert (soft.status, sent.status) == (EventStatus.DEFERRED, EventStatus.DELIVERED)


def test_sparkpost_events_and_the_ping() -> None:
    assert _events(sparkpost, [{"msys": {}}]) == []
    [event] = _events(
        sparkpost,
        [
            {
                "msys": {
                    "message_event": {
                        "type": "bounce",
                        "transmission_id": "65832150921904138",
                        "rcpt_to": "bob@example.net",
                        "timestamp": "1800000009",
                        "raw_reason": "550 5.1.1 unknown",
                    }
                }
            }
        ],
    )
    assert (event.provider_message_id, event.status, event.at) == (
        "65832150921904138",
        EventStatus.BOUNCED,
        1_800_000_009.0,
    )
    with pytest.raises(PayloadError):
        _events(sparkpost, {"msys": {}})


def test_sendlayer_events() -> None:
    payload = {
        "Event": "open",
        "LoggedAt": 1_800_000_011,
        "Message": {"Headers": {"MessageId": "06e4491f-fc5a-49cb-bc57-1"}},
        "Recipient": "bob@example.net",
        "Reason": "Email opened.",
    }
    [event] = _events(sendlayer, payload)
    assert (event.status, event.provider_message_id) == (
        EventStatus.OPENED,
        "06e4491f-fc5a-49cb-bc57-1",
    )
    [bounced] = _events(sendlayer, {"EventData": {**payload, "Event": "bounced"}})
    assert bounced.status is EventStatus.BOUNCED


async def test_a_provider_bounce_becomes_a_bounced_event_and_suppresses_the_address(
    store: SqliteStore, fake_clock: FakeClock
) -> None:
    mailer = Hooked("pm", "postmark", WebhookSettings(username="postmark", password=SecretStr("p")))
    message_id = await sent_through(
        store, "pm", "883953f4-6105-42a2-a16a-77a8eac79483", "bob@example.net"
    )
    status, _ = await handle_webhook(
        mailer, _basic("postmark", "p"), POSTMARK_BOUNCE, store, fake_clock
    )
    assert status == 200
    [event] = await store.events(message_id)
    assert (event.type, event.origin, event.mailer, event.recipient, event.reason) == (
        EventType.BOUNCED,
        EventOrigin.PROVIDER,
        "pm",
        "bob@example.net",
        "Bounce/HardBounce",
    )
    [entry] = await store.suppressions()
    assert (entry.address, entry.scope, entry.reason, entry.source) == (
        "bob@example.net",
        "",
        SuppressionReason.HARD_BOUNCE,
        "provider pm",
    )


async def test_a_provider_complaint_suppresses_the_address_for_the_sender_domain(
    store: SqliteStore, fake_clock: FakeClock
) -> None:
    mailer = Hooked("pm", "postmark", WebhookSettings(username="postmark", password=SecretStr("p")))
    await sent_through(store, "pm", "883953f4-6105-42a2-a16a-77a8eac79483", "bob@example.net")
    complaint = json.dumps(
        {
            "RecordType": "SpamComplaint",
            "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
            "Email": "bob@example.net",
            "BouncedAt": "2027-01-15T08:00:05Z",
        }
    ).encode()
    status, _ = await handle_webhook(mailer, _basic("postmark", "p"), complaint, store, fake_clock)
    assert status == 200
    [entry] = await store.suppressions()
    assert (entry.address, entry.scope, entry.reason) == (
        "bob@example.net",
        "example.org",  # the factories' sender is alice@example.org
        SuppressionReason.COMPLAINT,
    )
