"""Amazon SES events through SNS: RSA signatures (versions 1 and 2) checked against a
certificate fetched over HTTPS from a loopback server that a trustme CA vouches for."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from postroom.config.webhooks import WebhookSettings
from postroom.delivery.webhooks import EventStatus, PayloadError, handle_webhook, ses
from postroom.delivery.webhooks.sns import SnsCertificates, string_to_sign
from postroom.store.sqlite import SqliteStore
from tests.conftest import FakeClock
from tests.delivery.webhooks.conftest import Hooked, sent_through

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"


@dataclass
class CertServer:
    """An HTTPS server on loopback that serves one PEM certificate and counts requests."""

    pem: bytes
    ca: trustme.CA = field(default_factory=trustme.CA)
    requests: list[str] = field(default_factory=list)

    def start(self) -> Iterator[CertServer]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-pem-file")
                self.send_header("Content-Length", str(len(outer.pem)))
                self.end_headers()
                self.wfile.write(outer.pem)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert("127.0.0.1").configure_cert(context)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        self.url = f"https://127.0.0.1:{server.server_address[1]}/SimpleNotificationService-1.pem"
        yield self
        server.shutdown()
        server.server_close()

    def source(self) -> SnsCertificates:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        client = httpx.AsyncClient(verify=context)
        return SnsCertificates(client=client, allowed_hosts=re.compile(r"127\.0\.0\.1:\d+"))


def _signing_cert(now: float) -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.eu-west-1.amazonaws.com")])
    start = dt.datetime.fromtimestamp(now - 86400, dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def signing() -> tuple[rsa.RSAPrivateKey, bytes]:
    return _signing_cert(FakeClock().time())  # valid around the fake clock's start


@pytest.fixture
def cert_server(signing: tuple[rsa.RSAPrivateKey, bytes]) -> Iterator[CertServer]:
    yield from CertServer(signing[1]).start()


def _sign(message: dict[str, Any], key: rsa.RSAPrivateKey, version: str) -> bytes:
    message["SignatureVersion"] = version
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signed = string_to_sign(message)
    assert signed is not None
    message["Signature"] = base64.b64encode(key.sign(signed, padding.PKCS1v15(), digest)).decode()
    return json.dumps(message).encode()


def _bounce(cert_url: str) -> dict[str, Any]:
    event = {
        "eventType": "Bounce",
        "mail": {
            "timestamp": "2027-01-15T08:00:00.000Z",
            "messageId": "0100018d-ses-1",
            "destination": ["bob@example.net", "dave@example.net"],
        },
        "bounce": {
            "bounceType": "Permanent",
            "timestamp": "2027-01-15T08:00:05.000Z",
            "bouncedRecipients": [
                {"emailAddress": "bob@example.net", "diagnosticCode": "smtp; 550 5.1.1 unknown"}
            ],
        },
    }
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": TOPIC,
        "Message": json.dumps(event),
        "Timestamp": "2027-01-15T08:00:06.000Z",
        "SigningCertURL": cert_url,
    }


@pytest.mark.parametrize("version", ["1", "2"])
async def test_a_signed_ses_bounce_is_recorded(
    store: SqliteStore,
    fake_clock: FakeClock,
    signing: tuple[rsa.RSAPrivateKey, bytes],
    cert_server: CertServer,
    version: str,
) -> None:
    mailer = Hooked("ses", "ses", WebhookSettings(sns_topics=(TOPIC,)))
    message_id = await sent_through(store, "ses", "0100018d-ses-1", "bob@example.net")
    body = _sign(_bounce(cert_server.url), signing[0], version)
    headers = {"x-amz-sns-message-type": "Notification"}
    certificates = cert_server.source()

    for _ in range(2):
        status, answer = await handle_webhook(
            mailer, headers, body, store, fake_clock, certificates=certificates
        )
        assert (status, answer) == (200, {"received": 1, "matched": 1})

    assert len(cert_server.requests) == 1  # cached
    events = await store.provider_events(message_id)
    assert {(e.recipient, e.status, e.detail) for e in events} == {
        ("bob@example.net", "bounced", "smtp; 550 5.1.1 unknown")
    }


@pytest.mark.parametrize("forgery", ["message", "topic", "version", "other-key", "expired"])
async def test_forged_sns_messages_are_refused(
    store: SqliteStore,
    fake_clock: FakeClock,
    signing: tuple[rsa.RSAPrivateKey, bytes],
    cert_server: CertServer,
    forgery: str,
) -> None:
    mailer = Hooked("ses", "ses", WebhookSettings(sns_topics=(TOPIC,)))
    message = _bounce(cert_server.url)
    key = signing[0]
    if forgery == "other-key":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    body = _sign(message, key, "2")
    if forgery == "message":
        body = body.replace(b"Permanent", b"Transient")
    elif forgery == "topic":
        mailer = Hooked("ses", "ses", WebhookSettings(sns_topics=("arn:aws:sns:x:1:other",)))
    elif forgery == "version":
        body = body.replace(b'"SignatureVersion": "2"', b'"SignatureVersion": "3"')
    elif forgery == "expired":
        fake_clock.advance(31 * 86400)
    status, _ = await handle_webhook(
        mailer, {}, body, store, fake_clock, certificates=cert_server.source()
    )
    assert status == 401


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/SimpleNotificationService-1.pem",
        "http://sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/cert.pem",
    ],
)
def test_certificates_come_only_from_sns_hosts_over_https(url: str) -> None:
    assert not SnsCertificates().allowed(url)
    assert SnsCertificates().allowed(
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem"
    )


async def test_a_certificate_url_elsewhere_is_not_fetched(
    store: SqliteStore,
    fake_clock: FakeClock,
    signing: tuple[rsa.RSAPrivateKey, bytes],
    cert_server: CertServer,
) -> None:
    """The default host rule refuses the loopback server: nothing is fetched."""
    mailer = Hooked("ses", "ses", WebhookSettings())
    body = _sign(_bounce(cert_server.url), signing[0], "2")
    status, _ = await handle_webhook(mailer, {}, body, store, fake_clock)
    assert status == 401
    assert cert_server.requests == []


async def test_a_subscription_confirmation_is_reported_not_followed(
    store: SqliteStore,
    fake_clock: FakeClock,
    signing: tuple[rsa.RSAPrivateKey, bytes],
    cert_server: CertServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    subscribe = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=abc"
    message = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "abc",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic.",
        "SubscribeURL": subscribe,
        "Timestamp": "2027-01-15T08:00:00.000Z",
        "SigningCertURL": cert_server.url,
    }
    body = _sign(message, signing[0], "1")
    mailer = Hooked("ses", "ses", WebhookSettings())
    status, answer = await handle_webhook(
        mailer, {}, body, store, fake_clock, certificates=cert_server.source()
    )
    assert status == 200
    assert answer == {"subscription_confirmation": {"topic": TOPIC, "subscribe_url": subscribe}}
    assert subscribe in caplog.text
    assert cert_server.requests == ["/SimpleNotificationService-1.pem"]


def _notification(event: dict[str, Any]) -> dict[str, Any]:
    return {"Type": "Notification", "Message": json.dumps(event)}


def test_ses_event_kinds() -> None:
    mail = {"messageId": "m1", "timestamp": "2027-01-15T08:00:00Z", "destination": ["a@x.example"]}
    delivery = ses.parse(
        _notification(
            {
                "eventType": "Delivery",
                "mail": mail,
                "delivery": {
                    "timestamp": "2027-01-15T08:00:02Z",
                    "recipients": ["a@x.example"],
                    "smtpResponse": "250 2.0.0 OK",
                },
            }
        ),
        now=0.0,
    )
    assert [(e.recipient, e.status, e.detail) for e in delivery] == [
        ("a@x.example", EventStatus.DELIVERED, "250 2.0.0 OK")
    ]
    soft = ses.parse(
        _notification(
            {
                "notificationType": "Bounce",  # an identity notification, not an event
                "mail": mail,
                "bounce": {
                    "bounceType": "Transient",
                    "bouncedRecipients": [{"emailAddress": "a@x.example"}],
                },
            }
        ),
        now=0.0,
    )
    assert [e.status for e in soft] == [EventStatus.DEFERRED]
    complaint = ses.parse(
        _notification(
            {
                "eventType": "Complaint",
                "mail": mail,
                "complaint": {"complainedRecipients": [{"emailAddress": "a@x.example"}]},
            }
        ),
        now=0.0,
    )
    assert [e.status for e in complaint] == [EventStatus.COMPLAINED]
    with pytest.raises(PayloadError):
        ses.parse({"Type": "Notification", "Message": "not json"}, now=0.0)
