"""SendGrid (ECDSA), Mailgun (HMAC) and Resend (Svix) callbacks with real key material."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from postroom.config.webhooks import WebhookSettings
from postroom.delivery.webhooks import handle_webhook
from postroom.store.sqlite import SqliteStore
from tests.conftest import FakeClock
from tests.delivery.webhooks.conftest import Hooked, mailgun_event, sent_through

# -- SendGrid ---------------------------------------------------------------------------


def _sendgrid_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(der).decode()


def _sendgrid_headers(
    private: ec.EllipticCurvePrivateKey, body: bytes, timestamp: str
) -> dict[str, str]:
    signature = private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }


SENDGRID_BODY = json.dumps(
    [
        {
            "email": "bob@example.net",
            "timestamp": 1_800_000_100,
            "event": "bounce",
            "type": "bounce",
            "reason": "550 5.1.1 The email account does not exist",
            "sg_message_id": "sgid-1.filter0001.16648.5515E0B88.0",
        },
        {
            "email": "dave@example.net",
            "timestamp": 1_800_000_050,
            "event": "delivered",
            "response": "250 OK",
            "sg_message_id": "sgid-1.filter0001.16648.5515E0B88.1",
        },
    ]
).encode()


async def test_sendgrid_signed_events_are_recorded_on_the_attempt(
    store: SqliteStore, fake_clock: FakeClock
) -> None:
    private, public = _sendgrid_key()
    mailer = Hooked("sg", "sendgrid", WebhookSettings(public_key=public))
    message_id = await sent_through(store, "sg", "sgid-1", "bob@example.net", "dave@example.net")
    headers = _sendgrid_headers(private, SENDGRID_BODY, str(int(fake_clock.time())))

    status, answer = await handle_webhook(mailer, headers, SENDGRID_BODY, store, fake_clock)

    assert (status, answer) == (200, {"received": 2, "matched": 2})
    events = await store.provider_events(message_id)
    assert [(e.recipient, e.status, e.kind, e.detail) for e in events] == [
        ("dave@example.net", "delivered", "delivered", "250 OK"),
        ("bob@example.net", "bounced", "bounce", "550 5.1.1 The email account does not exist"),
    ]


async def test_sendgrid_accepts_the_key_as_pem(store: SqliteStore, fake_clock: FakeClock) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    mailer = Hooked("sg", "sendgrid", WebhookSettings(public_key=pem.decode()))
    headers = _sendgrid_headers(private, SENDGRID_BODY, str(int(fake_clock.time())))
    status, _ = await handle_webhook(mailer, headers, SENDGRID_BODY, store, fake_clock)
    assert status == 200


@pytest.mark.parametrize("forgery", ["body", "timestamp", "key", "stale", "missing"])
async def test_sendgrid_refuses_forged_or_stale_callbacks(
    store: SqliteStore, fake_clock: FakeClock, forgery: str
) -> None:
    private, public = _sendgrid_key()
    now = str(int(fake_clock.time()))
    body = SENDGRID_BODY
    headers = _sendgrid_headers(private, body, now)
    if forgery == "body":
        body = body.replace(b"bounce", b"delivered")
    elif forgery == "timestamp":
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = str(int(now) + 1)
    elif forgery == "key":
        headers = _sendgrid_headers(ec.generate_private_key(ec.SECP256R1()), body, now)
    elif forgery == "stale":
        old = str(int(now) - 301)
        headers = _sendgrid_headers(private, body, old)
    else:
        del headers["X-Twilio-Email-Event-Webhook-Signature"]
    mailer = Hooked("sg", "sendgrid", WebhookSettings(public_key=public))
    message_id = await sent_through(store, "sg", "sgid-1", "bob@example.net")

    status, answer = await handle_webhook(mailer, headers, body, store, fake_clock)

    assert status == 401 and "error" in answer
    assert await store.provider_events(message_id) == []


async def test_a_hook_without_its_key_answers_503_and_says_which_setting(
    store: SqliteStore, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    mailer = Hooked("sg", "sendgrid", WebhookSettings(public_key="bm90IGEga2V5"))
    status, answer = await handle_webhook(mailer, {}, SENDGRID_BODY, store, fake_clock)
    assert status == 503 and "sg" in answer["error"]
    assert "webhook.public_key" in caplog.text


# -- Mailgun ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("severity", "expected"), [("permanent", "bounced"), ("temporary", "deferred")]
)
async def test_mailgun_signed_failures_map_by_severity(
    store: SqliteStore, fake_clock: FakeClock, severity: str, expected: str
) -> None:
    key = secrets.token_hex(16).encode()
    mailer = Hooked("mg", "mailgun", WebhookSettings(signing_key_env="MG_KEY"))
    message_id = await sent_through(store, "mg", "<20270101.1@mg.example.org>", "bob@example.net")
    body = mailgun_event(key, str(int(fake_clock.time())), severity=severity)

    status, answer = await handle_webhook(
        mailer, {}, body, store, fake_clock, environ={"MG_KEY": key.decode()}
    )

    assert (status, answer) == (200, {"received": 1, "matched": 1})
    [event] = await store.provider_events(message_id)
    assert (event.status, event.at, event.detail) == (expected, 1_800_000_010.25, "No such mailbox")


async def test_mailgun_refuses_a_wrong_key_a_stale_timestamp_and_another_token(
    store: SqliteStore, fake_clock: FakeClock
) -> None:
    key = b"right-key"
    mailer = Hooked("mg", "mailgun", WebhookSettings(signing_key=SecretStr("right-key")))
    now = str(int(fake_clock.time()))
    wrong = mailgun_event(b"wrong-key", now)
    stale = mailgun_event(key, str(int(now) - 3600))
    # Mailgun signs the timestamp and token only, not the event data.
    data = json.loads(mailgun_event(key, now))
    data["signature"]["token"] = secrets.token_hex(25)
    other_token = json.dumps(data).encode()
    for body in (wrong, stale, other_token, b"not json"):
        status, _ = await handle_webhook(mailer, {}, body, store, fake_clock)
        assert status == 401


async def test_an_unset_environment_variable_is_a_configuration_error(
    store: SqliteStore, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    mailer = Hooked("mg", "mailgun", WebhookSettings(signing_key_env="MG_KEY"))
    body = mailgun_event(b"k", str(int(fake_clock.time())))
    status, _ = await handle_webhook(mailer, {}, body, store, fake_clock, environ={})
    assert status == 503
    assert "MG_KEY is not set" in caplog.text


# -- Resend (Svix) ----------------------------------------------------------------------

RESEND_BODY = json.dumps(
    {
        "type": "email.bounced",
        "created_at": "2027-01-15T08:00:30.000Z",
        "data": {
            "email_id": "4ef9a417-02e9-4d39-ad75-9611e0fcc33c",
            "to": ["bob@example.net"],
            "bounce": {"message": "The recipient's mailbox does not exist", "type": "Permanent"},
        },
    }
).encode()


def _svix_headers(
    key: bytes, body: bytes, timestamp: str, msg_id: str = "msg_2xyz"
) -> dict[str, str]:
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "svix-id": msg_id,
        "svix-timestamp": timestamp,
        "svix-signature": f"v1,bm90LXRoaXMtb25l v1,{base64.b64encode(digest).decode()}",
    }


async def test_resend_svix_signature_with_a_rotated_secret(
    store: SqliteStore, fake_clock: FakeClock
) -> None:
    key = secrets.token_bytes(24)
    secret = "whsec_" + base64.b64encode(key).decode()
    mailer = Hooked("rs", "resend", WebhookSettings(signing_key=SecretStr(secret)))
    message_id = await sent_through(
        store, "rs", "4ef9a417-02e9-4d39-ad75-9611e0fcc33c", "bob@example.net"
    )
    headers = _svix_headers(key, RESEND_BODY, str(int(fake_clock.time())))

    status, answer = await handle_webhook(mailer, headers, RESEND_BODY, store, fake_clock)

    assert (status, answer) == (200, {"received": 1, "matched": 1})
    [event] = await store.provider_events(message_id)
    assert (event.status, event.kind) == ("bounced", "email.bounced")
    assert event.at == datetime(2027, 1, 15, 8, 0, 30, tzinfo=UTC).timestamp()  # Resend's date
    assert event.detail == "The recipient's mailbox does not exist"


@pytest.mark.parametrize("forgery", ["future", "past", "id", "body", "version"])
async def test_resend_refuses_stale_or_forged(
    store: SqliteStore, fake_clock: FakeClock, forgery: str
) -> None:
    key = secrets.token_bytes(24)
    mailer = Hooked(
        "rs",
        "resend",
        WebhookSettings(signing_key=SecretStr("whsec_" + base64.b64encode(key).decode())),
    )
    now = int(fake_clock.time())
    body = RESEND_BODY
    headers = _svix_headers(key, body, str(now))
    if forgery == "future":
        headers = _svix_headers(key, body, str(now + 301))
    elif forgery == "past":
        headers = _svix_headers(key, body, str(now - 301))
    elif forgery == "id":
        headers["svix-id"] = "msg_other"
    elif forgery == "body":
        body = body.replace(b"bounced", b"delivered")
    else:
        headers["svix-signature"] = headers["svix-signature"].replace("v1,", "v2,")
    status, _ = await handle_webhook(mailer, headers, body, store, fake_clock)
    assert status == 401


async def test_the_svix_tolerance_follows_the_injected_clock(
    store: SqliteStore, fake_clock: FakeClock
) -> None:
    key = secrets.token_bytes(24)
    mailer = Hooked(
        "rs",
        "resend",
        WebhookSettings(signing_key=SecretStr("whsec_" + base64.b64encode(key).decode())),
    )
    headers = _svix_headers(key, RESEND_BODY, str(int(fake_clock.time())))
    fake_clock.advance(299)
    assert (await handle_webhook(mailer, headers, RESEND_BODY, store, fake_clock))[0] == 200
    fake_clock.advance(2)
    assert (await handle_webhook(mailer, headers, RESEND_BODY, store, fake_clock))[0] == 401
