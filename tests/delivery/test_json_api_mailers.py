"""Mailjet, SendLayer and SMTP.com mailers against strict loopback fakes of their APIs."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from postroom.config.providers import (
    MailjetMailerSettings,
    SendlayerMailerSettings,
    SmtpcomMailerSettings,
)
from postroom.delivery.mailers.api.mailjet import MailjetMailer
from postroom.delivery.mailers.api.sendlayer import SendlayerMailer
from postroom.delivery.mailers.api.smtpcom import SmtpcomMailer
from postroom.delivery.message import OutboundMessage
from postroom.delivery.outcome import Disposition
from tests.conftest import FakeClock
from tests.delivery.provider_messages import PDF, PNG, message, recipients
from tests.support.http_fake import FakeHttp, Reply, serve
from tests.support.provider_fakes import (
    MailjetFake,
    SendlayerFake,
    SmtpcomFake,
    parse_mime,
)

JUERGEN = "juergen@example.net"


@pytest.fixture
def mailjet() -> Iterator[tuple[MailjetFake, FakeHttp]]:
    fake = MailjetFake()
    with serve(fake) as server:
        yield fake, server


def _mailjet(server: FakeHttp, clock: FakeClock, **extra: object) -> MailjetMailer:
    settings = MailjetMailerSettings(
        name="mj",
        base_url=server.url,
        api_key_env="MJ_KEY",
        secret_key="mj-secret",
        timeout=1.0,
        **extra,  # type: ignore[arg-type]
    )
    return MailjetMailer(settings, clock=clock, environ={"MJ_KEY": "mj-key"})


async def test_mailjet_carries_names_bodies_attachments_and_inline_images(
    mailjet: tuple[MailjetFake, FakeHttp], fake_clock: FakeClock
) -> None:
    fake, server = mailjet
    mailer = _mailjet(server, fake_clock)
    [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
    await mailer.aclose()

    assert fake.problems == []
    assert outcome.disposition is Disposition.DELIVERED
    assert outcome.remote is not None and outcome.remote.provider_id is not None
    assert outcome.remote.provider_id.startswith("5764607500")
    [sent] = fake.received[0]["Messages"]
    assert sent["From"] == {"Email": "zoe@example.org", "Name": "Zoë Ärger"}
    assert sent["To"] == [{"Email": JUERGEN, "Name": "Jürgen Straße"}]
    assert sent["Subject"] == "Grüße aus Köln ☕"
    assert sent["TextPart"] == "Hallo Jürgen, siehe Anhang.\r\n"
    assert 'src="cid:logo@example.org"' in sent["HTMLPart"]
    assert sent["Headers"] == {"X-Campaign": "winter"}
    assert sent["CustomID"] == "01J0MESSAGE"
    [attached] = sent["Attachments"]
    assert (attached["Filename"], attached["ContentType"]) == ("résumé.pdf", "application/pdf")
    assert base64.b64decode(attached["Base64Content"]) == PDF
    [inline] = sent["InlinedAttachments"]
    assert (inline["Filename"], inline["ContentID"]) == ("logo.png", "logo@example.org")
    assert base64.b64decode(inline["Base64Content"]) == PNG


async def test_mailjet_mixed_400_bounces_the_refused_and_keeps_the_rest(
    mailjet: tuple[MailjetFake, FakeHttp], fake_clock: FakeClock
) -> None:
    """120 recipients make three messages in one call; one recipient of the second is
    invalid: its message fails (400 for the call), the other two are sent."""
    fake, server = mailjet
    many = [f"user{i:03d}@example.net" for i in range(120)]
    bad = many[60]
    fake.invalid.add(bad)
    mailer = _mailjet(server, fake_clock)
    to = ", ".join(many)
    outcomes = await mailer.deliver(message(to=to), recipients(*many))
    await mailer.aclose()

    assert fake.problems == []
    assert [len(m["To"]) for m in fake.received[0]["Messages"]] == [50, 50, 20]
    by = {o.recipient: o for o in outcomes}
    assert [o.recipient for o in outcomes] == many
    assert by[bad].disposition is Disposition.BOUNCED
    assert (by[bad].reply.code, by[bad].reply.enhanced) == (550, "5.1.3")
    assert "mj-0013" in by[bad].reply.text and bad in by[bad].reply.text
    assert not by[bad].failover
    for address in many[50:100]:
        if address != bad:
            assert by[address].disposition is Disposition.DEFERRED
            assert not by[address].failover  # goes again, without the bad one
    sent = [by[a] for a in many[:50] + many[100:]]
    assert all(o.disposition is Disposition.DELIVERED for o in sent)
    ids = [o.remote.provider_id for o in sent if o.remote]
    assert len(set(ids)) == 70  # one MessageID per recipient


async def test_mailjet_many_bcc_recipients_take_several_calls(
    mailjet: tuple[MailjetFake, FakeHttp], fake_clock: FakeClock
) -> None:
    fake, server = mailjet
    hidden = [f"h{i:03d}@example.com" for i in range(120)]
    mailer = _mailjet(server, fake_clock)
    outcomes = await mailer.deliver(message(), recipients(JUERGEN, *hidden))
    await mailer.aclose()
    assert fake.problems == []
    # the To recipient with 50 in Bcc, then 70 alone: 71 messages, in calls of 50 and 21
    assert [len(call["Messages"]) for call in fake.received] == [50, 21]
    assert [o.recipient for o in outcomes] == [JUERGEN, *hidden]
    assert all(o.disposition is Disposition.DELIVERED for o in outcomes)


@pytest.mark.parametrize(
    ("reply", "enhanced"),
    [
        (Reply(429, b"Rate limit exceeded", {"Retry-After": "30"}), "4.7.0"),
        (
            Reply.json(500, {"ErrorIdentifier": "x", "ErrorCode": "mj-0004", "StatusCode": 500,
                             "ErrorMessage": "Internal server error"}),
            "4.3.0",
        ),
        (Reply(stall=True), "4.4.2"),
        (Reply(drop=True), "4.4.2"),
    ],
)  # fmt: skip
async def test_mailjet_temporary_trouble_defers_with_failover(
    mailjet: tuple[MailjetFake, FakeHttp], fake_clock: FakeClock, reply: Reply, enhanced: str
) -> None:
    fake, server = mailjet
    fake.replies.append(reply)
    mailer = _mailjet(server, fake_clock)
    [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
    await mailer.aclose()
    assert (outcome.disposition, outcome.failover, outcome.reply.enhanced) == (
        Disposition.DEFERRED,
        True,
        enhanced,
    )
    if reply.status == 429:
        assert outcome.retry_at == fake_clock.time() + 30


async def test_mailjet_wrong_key_is_loud_and_never_shows_the_secret(
    mailjet: tuple[MailjetFake, FakeHttp], fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    _, server = mailjet
    settings = MailjetMailerSettings(
        name="mj", base_url=server.url, api_key="mj-key", secret_key="not-the-secret"
    )
    mailer = MailjetMailer(settings, clock=fake_clock)
    [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
    await mailer.aclose()
    assert (outcome.disposition, outcome.failover) == (Disposition.DEFERRED, True)
    assert "API key authentication" in caplog.text
    assert "not-the-secret" not in caplog.text and "not-the-secret" not in repr(mailer)


# -- SendLayer ----------------------------------------------------------------------------


async def test_sendlayer_carries_every_field_and_splits_by_its_limits(
    fake_clock: FakeClock,
) -> None:
    fake = SendlayerFake()
    many = [f"u{i:02d}@example.net" for i in range(12)]  # 12 in To: two emails
    with serve(fake) as server:
        settings = SendlayerMailerSettings(name="sl", base_url=server.url, api_key="sl-key")
        mailer = SendlayerMailer(settings, clock=fake_clock)
        outcomes = await mailer.deliver(message(to=", ".join(many)), recipients(*many))
        await mailer.aclose()
    assert fake.problems == []
    assert [len(email["To"]) for email in fake.received] == [10, 2]
    assert [o.recipient for o in outcomes] == many
    assert all(o.disposition is Disposition.DELIVERED for o in outcomes)
    first = fake.received[0]
    assert first["From"] == {"name": "Zoë Ärger", "email": "zoe@example.org"}
    assert first["Subject"] == "Grüße aus Köln ☕"
    assert first["ContentType"] == "HTML"
    assert "Jürgen" in first["HTMLContent"] and "Jürgen" in first["PlainContent"]
    parts = {p["Filename"]: p for p in first["Attachments"]}
    assert base64.b64decode(parts["résumé.pdf"]["Content"]) == PDF
    assert parts["résumé.pdf"]["Disposition"] == "attachment"
    logo = parts["logo.png"]
    assert (logo["Disposition"], logo["ContentId"], logo["Type"]) == (
        "inline",
        "logo@example.org",
        "image/png",
    )
    assert base64.b64decode(logo["Content"]) == PNG


async def test_sendlayer_suppressed_recipient_bounces(fake_clock: FakeClock) -> None:
    fake = SendlayerFake(suppressed={JUERGEN})
    with serve(fake) as server:
        settings = SendlayerMailerSettings(name="sl", base_url=server.url, api_key="sl-key")
        mailer = SendlayerMailer(settings, clock=fake_clock)
        [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
        await mailer.aclose()
    assert (outcome.disposition, outcome.reply.enhanced) == (Disposition.BOUNCED, "5.1.1")
    assert "suppressed" in outcome.reply.text


async def test_sendlayer_bcc_recipients_are_not_shown_to_each_other(fake_clock: FakeClock) -> None:
    fake = SendlayerFake()
    with serve(fake) as server:
        settings = SendlayerMailerSettings(name="sl", base_url=server.url, api_key="sl-key")
        mailer = SendlayerMailer(settings, clock=fake_clock)
        hidden = [f"b{i}@example.com" for i in range(7)]
        outcomes = await mailer.deliver(message(), recipients(JUERGEN, *hidden))
        await mailer.aclose()
    assert fake.problems == []
    assert fake.received[0]["To"] == [{"name": "Jürgen Straße", "email": JUERGEN}]
    assert [b["email"] for b in fake.received[0]["BCC"]] == hidden[:5]
    assert [e["To"] for e in fake.received[1:]] == [[{"name": "", "email": h}] for h in hidden[5:]]
    assert all(o.disposition is Disposition.DELIVERED for o in outcomes)


# -- SMTP.com ---------------------------------------------------------------------------


async def test_smtpcom_sends_the_raw_message_with_its_envelope(fake_clock: FakeClock) -> None:
    fake = SmtpcomFake()
    original = message(cc="Ça Va <cava@example.com>, other@example.com")
    with serve(fake) as server:
        settings = SmtpcomMailerSettings(
            name="sc", base_url=server.url, api_key="sc-key", channel="transactional"
        )
        mailer = SmtpcomMailer(settings, clock=fake_clock)
        outcomes = await mailer.deliver(
            original, recipients(JUERGEN, "cava@example.com", "hidden@example.com")
        )
        await mailer.aclose()
    assert fake.problems == []
    [sent] = fake.received
    assert sent["recipients"] == {
        "to": [{"name": "Jürgen Straße", "address": JUERGEN}],
        "cc": [{"name": "Ça Va", "address": "cava@example.com"}],
        "bcc": [{"address": "hidden@example.com"}],
    }
    assert sent["originator"]["from"] == {"name": "Zoë Ärger", "address": "zoe@example.org"}
    assert sent["mime"].encode() == original.data  # byte for byte
    mime = parse_mime(sent["mime"].encode())
    assert mime["Subject"] == "Grüße aus Köln ☕"
    assert [o.remote.provider_id for o in outcomes if o.remote] == ["sc-1"] * 3


async def test_smtpcom_rebuilds_a_message_that_is_not_utf8(fake_clock: FakeClock) -> None:
    data = (
        b"From: Zo\xeb <zoe@example.org>\r\nTo: juergen@example.net\r\n"
        b"Subject: =?iso-8859-1?q?Gr=FC=DFe?=\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xfc\xdfe\r\n"
    )
    fake = SmtpcomFake()
    with serve(fake) as server:
        settings = SmtpcomMailerSettings(
            name="sc", base_url=server.url, api_key="sc-key", channel="transactional"
        )
        mailer = SmtpcomMailer(settings, clock=fake_clock)
        [outcome] = await mailer.deliver(
            OutboundMessage("q1", "zoe@example.org", data), recipients(JUERGEN)
        )
        await mailer.aclose()
    assert fake.problems == []
    [sent] = fake.received
    assert sent["subject"] == "Grüße"
    assert sent["body"]["parts"] == [
        {
            "type": "text/plain",
            "charset": "UTF-8",
            "encoding": "quoted-printable",
            "content": "Grüße\r\n",
        }
    ]
    assert outcome.disposition is Disposition.DELIVERED


async def test_smtpcom_bad_key_defers_loudly(
    fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with serve(SmtpcomFake()) as server:
        settings = SmtpcomMailerSettings(
            name="sc", base_url=server.url, api_key="wrong", channel="transactional"
        )
        mailer = SmtpcomMailer(settings, clock=fake_clock)
        [outcome] = await mailer.deliver(message(), recipients(JUERGEN))
        await mailer.aclose()
    assert (outcome.disposition, outcome.failover) == (Disposition.DEFERRED, True)
    assert "Invalid API Key" in caplog.text and "wrong" not in caplog.text.replace("wrong ", "")
