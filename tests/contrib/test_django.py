"""The Django email backend in a real (minimal) Django project, sending through a real
postroom server's HTTP API: send_mail with only EMAIL_BACKEND and the two settings."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage

import django
import pytest
from django.conf import settings
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.test.utils import override_settings

from postroom.client import AuthenticationError
from postroom.contrib.django import EmailBackend
from postroom.directory.apikeys import ApiKeys
from postroom.store import StoredMessage
from tests.support.thread import ServerThread

if not settings.configured:
    settings.configure(
        EMAIL_BACKEND="postroom.contrib.django.EmailBackend",
        DEFAULT_FROM_EMAIL="webmaster@example.com",
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()


@dataclass
class Postroom:
    server: ServerThread
    url: str
    key: str

    def queued(self) -> list[StoredMessage]:
        return self.server.call(self.server.store.messages())

    def stored(self, queue_id: str) -> EmailMessage:
        data = self.server.call(self.server.store.read_body(queue_id))
        assert data is not None
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@pytest.fixture
def postroom(make_server: Callable[..., ServerThread]) -> Iterator[Postroom]:
    server = make_server()
    key = server.call(ApiKeys(server.store).create("django-app", ("example.com",))).token
    url = f"http://127.0.0.1:{server.api_port}"
    with override_settings(POSTROOM_API_URL=url, POSTROOM_API_KEY=key):
        yield Postroom(server, url, key)


def test_send_mail_goes_through_the_api(postroom: Postroom) -> None:
    sent = mail.send_mail("Welcome", "Hello there.", "Shop <shop@example.com>", ["a@example.net"])
    assert sent == 1
    [queued] = postroom.queued()
    assert (queued.source_kind, queued.principal) == ("api", "django-app")
    assert queued.sender == "shop@example.com"
    assert [r.address for r in queued.recipients] == ["a@example.net"]
    message = postroom.stored(queued.id)
    assert message["Subject"] == "Welcome"
    assert message["From"] == "Shop <shop@example.com>"
    assert message.get_content().strip() == "Hello there."


def test_alternatives_attachment_cc_bcc_and_reply_to(postroom: Postroom) -> None:
    message = mail.EmailMultiAlternatives(
        subject="Your invoice",
        body="Plain invoice",
        from_email="billing@example.com",
        to=["a@example.net"],
        cc=["Carol <c@example.net>"],
        bcc=["audit@example.org"],
        reply_to=["help@example.com"],
        headers={"X-Invoice": "42"},
    )
    message.attach_alternative("<p>HTML invoice</p>", "text/html")
    message.attach("invoice.pdf", b"%PDF-1.4 not really", "application/pdf")
    assert message.send() == 1
    [queued] = postroom.queued()
    assert sorted(r.address for r in queued.recipients) == [
        "a@example.net",
        "audit@example.org",
        "c@example.net",
    ]
    stored = postroom.stored(queued.id)
    assert stored["Bcc"] is None
    assert b"audit@example.org" not in stored.as_bytes()
    assert stored["Cc"] == "Carol <c@example.net>"
    assert stored["Reply-To"] == "help@example.com"
    assert stored["X-Invoice"] == "42"
    html = stored.get_body(("html",))
    assert html is not None
    assert "HTML invoice" in html.get_content()
    [attachment] = stored.iter_attachments()
    assert attachment.get_filename() == "invoice.pdf"
    assert attachment.get_content() == b"%PDF-1.4 not really"


def test_send_mass_mail_shares_one_connection_and_counts(postroom: Postroom) -> None:
    datatuple = [
        ("One", "1", "a@example.com", ["x@example.net"]),
        ("Two", "2", "a@example.com", ["y@example.net"]),
        ("None", "3", "a@example.com", []),  # no recipients: not sent, not counted
    ]
    assert mail.send_mass_mail(datatuple) == 2
    assert len(postroom.queued()) == 2


def test_fail_silently_returns_zero_and_otherwise_raises(postroom: Postroom) -> None:
    with override_settings(POSTROOM_API_KEY="pr_wrong_key"):
        assert mail.send_mail("s", "b", "a@example.com", ["x@example.net"], fail_silently=True) == 0
        with pytest.raises(AuthenticationError):
            mail.send_mail("s", "b", "a@example.com", ["x@example.net"])
    assert postroom.queued() == []


def test_missing_settings_are_improperly_configured() -> None:
    with (
        override_settings(POSTROOM_API_URL=None, POSTROOM_API_KEY=None),
        pytest.raises(ImproperlyConfigured, match="POSTROOM_API_URL"),
    ):
        EmailBackend()
    backend = EmailBackend(api_url="http://127.0.0.1:9", api_key="pr_a_b")
    assert backend.api_url == "http://127.0.0.1:9"
