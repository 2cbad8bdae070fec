"""What each provider carries and how its own answers read: the JSON built from the MIME
field by field, the raw message byte for byte, and each documented error shape."""

from __future__ import annotations

import base64
import email.policy
import email.utils
from email.message import EmailMessage
from typing import Any

import pytest

from postroom.delivery.message import OutboundMessage
from postroom.delivery.outcome import Disposition, Outcome
from tests.conftest import FakeClock
from tests.delivery.provider_messages import PDF, PNG, message, recipients
from tests.delivery.providers.fakes import b64, parse_mime
from tests.delivery.providers.kinds import KINDS, running
from tests.support.http_fake import Reply

JUERGEN, ANNA, HIDDEN = "juergen@example.net", "anna@example.net", "hidden@example.com"
EVERYONE = (JUERGEN, ANNA, HIDDEN)


def _mail() -> OutboundMessage:
    """The shared test message with a Cc, a Reply-To and an envelope-only (Bcc) recipient."""
    return message(cc="Anna Öberg <anna@example.net>")


async def _deliver(
    name: str,
    clock: FakeClock,
    mail: OutboundMessage,
    *rcpts: str,
    replies: tuple[Reply, ...] = (),
    **fake: Any,
) -> tuple[Any, list[Outcome]]:
    with running(KINDS[name], clock) as (server_fake, _, mailer):
        for key, value in fake.items():
            setattr(server_fake, key, value)
        server_fake.replies.extend(replies)
        outcomes = await mailer.deliver(mail, recipients(*rcpts))
        await mailer.aclose()
    assert server_fake.problems == []
    return server_fake, outcomes


# -- JSON built from the MIME -----------------------------------------------------------


async def test_sendgrid_json_field_by_field(fake_clock: FakeClock) -> None:
    fake, outcomes = await _deliver("sendgrid", fake_clock, _mail(), *EVERYONE)
    [body] = fake.received
    assert body["personalizations"] == [
        {
            "to": [{"email": JUERGEN, "name": "Jürgen Straße"}],
            "cc": [{"email": ANNA, "name": "Anna Öberg"}],
            "bcc": [{"email": HIDDEN}],
        }
    ]
    assert body["from"] == {"email": "zoe@example.org", "name": "Zoë Ärger"}
    assert body["subject"] == "Grüße aus Köln ☕"
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["content"][0]["value"].replace("\r\n", "\n") == "Hallo Jürgen, siehe Anhang.\n"
    assert 'src="cid:logo@example.org"' in body["content"][1]["value"]
    inline, attached = body["attachments"]
    assert (inline["filename"], inline["type"], inline["disposition"], inline["content_id"]) == (
        "logo.png", "image/png", "inline", "logo@example.org"
    )  # fmt: skip
    assert b64(inline["content"]) == PNG
    assert (attached["filename"], attached["type"], attached["disposition"]) == (
        "résumé.pdf", "application/pdf", "attachment"
    )  # fmt: skip
    assert b64(attached["content"]) == PDF
    assert body["headers"] == {"X-Campaign": "winter", "Message-ID": "<20270115.1@example.org>"}
    assert all(o.disposition is Disposition.DELIVERED for o in outcomes)
    assert len({o.remote.provider_id for o in outcomes if o.remote}) == 1


async def test_postmark_json_field_by_field(fake_clock: FakeClock) -> None:
    fake, outcomes = await _deliver("postmark", fake_clock, _mail(), *EVERYONE)
    [body] = fake.received
    assert body["From"] == "Zoë Ärger <zoe@example.org>"
    assert body["To"] == f"Jürgen Straße <{JUERGEN}>"
    assert body["Cc"] == f"Anna Öberg <{ANNA}>"
    assert body["Bcc"] == HIDDEN
    assert body["MessageStream"] == "outbound"
    assert body["Subject"] == "Grüße aus Köln ☕"
    assert "Jürgen" in body["TextBody"] and "cid:logo@example.org" in body["HtmlBody"]
    assert {"Name": "Message-ID", "Value": "<20270115.1@example.org>"} in body["Headers"]
    assert {"Name": "X-Campaign", "Value": "winter"} in body["Headers"]
    inline, attached = body["Attachments"]
    assert (inline["Name"], inline["ContentType"], inline["ContentID"]) == (
        "logo.png", "image/png", "cid:logo@example.org"
    )  # fmt: skip
    assert b64(inline["Content"]) == PNG
    assert (attached["Name"], b64(attached["Content"])) == ("résumé.pdf", PDF)
    assert "ContentID" not in attached
    assert {o.remote.provider_id for o in outcomes if o.remote} == {"pm-1"}


async def test_brevo_json_field_by_field_and_what_it_cannot_carry(fake_clock: FakeClock) -> None:
    fake, outcomes = await _deliver("brevo", fake_clock, _mail(), *EVERYONE)
    [body] = fake.received
    assert body["sender"] == {"email": "zoe@example.org", "name": "Zoë Ärger"}
    assert body["to"] == [{"email": JUERGEN, "name": "Jürgen Straße"}]
    assert body["cc"] == [{"email": ANNA, "name": "Anna Öberg"}]
    assert body["bcc"] == [{"email": HIDDEN}]
    assert body["subject"] == "Grüße aus Köln ☕"
    assert body["headers"] == {"X-Campaign": "winter", "Message-Id": "<20270115.1@example.org>"}
    names = [(a["name"], b64(a["content"])) for a in body["attachment"]]
    assert names == [("logo.png", PNG), ("résumé.pdf", PDF)]
    # Brevo has no Content-ID: the attempt says the inline image went as an attachment.
    assert all("Content-ID <logo@example.org>" in str(o.reply) for o in outcomes)
    assert all(o.disposition is Disposition.DELIVERED for o in outcomes)


async def test_resend_json_field_by_field_and_its_idempotency_key(fake_clock: FakeClock) -> None:
    fake, _ = await _deliver("resend", fake_clock, _mail(), *EVERYONE)
    [body] = fake.received
    assert parse_addresses(body["to"]) == [("Jürgen Straße", JUERGEN)]
    assert parse_addresses(body["cc"]) == [("Anna Öberg", ANNA)]
    assert body["bcc"] == [HIDDEN]
    assert parse_addresses([body["from"]]) == [("Zoë Ärger", "zoe@example.org")]
    assert body["headers"] == {"X-Campaign": "winter", "Message-ID": "<20270115.1@example.org>"}
    inline, attached = body["attachments"]
    assert (inline["filename"], inline["content_id"], b64(inline["content"])) == (
        "logo.png", "logo@example.org", PNG
    )  # fmt: skip
    assert (attached["filename"], attached["content_type"]) == ("résumé.pdf", "application/pdf")
    assert body["idempotency_key"].startswith("postroom-")


async def test_resend_gives_the_same_id_to_a_repeated_delivery(fake_clock: FakeClock) -> None:
    with running(KINDS["resend"], fake_clock) as (fake, _, mailer):
        [first] = await mailer.deliver(_mail(), recipients(JUERGEN))
        [again] = await mailer.deliver(_mail(), recipients(JUERGEN))
        [other] = await mailer.deliver(_mail(), recipients(ANNA))
        await mailer.aclose()
    assert first.remote and again.remote and other.remote
    assert first.remote.provider_id == again.remote.provider_id != other.remote.provider_id
    assert len(fake.received) == 3


def parse_addresses(values: list[str]) -> list[tuple[str, str]]:
    return email.utils.getaddresses(values)


async def test_to_and_cc_names_outside_this_delivery_are_left_out_and_recorded(
    fake_clock: FakeClock,
) -> None:
    fake, [outcome] = await _deliver("sendgrid", fake_clock, _mail(), ANNA)
    [body] = fake.received
    assert body["personalizations"] == [{"to": [{"email": ANNA, "name": "Anna Öberg"}]}]
    assert "outside this delivery left out: juergen@example.net" in str(outcome.reply)
    assert "the Cc recipients were sent as To" in str(outcome.reply)


# -- the raw message, unchanged ---------------------------------------------------------


def _signed() -> OutboundMessage:
    data = (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=s1; bh=abc=; b=def=\r\n"
        + _mail().data
    )
    return OutboundMessage(id="01J0RAW", sender="zoe@example.org", data=data)


async def test_mailgun_sends_the_queued_bytes_and_the_envelope(fake_clock: FakeClock) -> None:
    mail = _signed()
    fake, outcomes = await _deliver("mailgun", fake_clock, mail, *EVERYONE)
    assert fake.received == [{"to": list(EVERYONE), "message": mail.data}]
    assert {o.remote.provider_id for o in outcomes if o.remote} == {"<mg-1@mg.example.org>"}


async def test_sparkpost_sends_the_queued_bytes_and_the_envelope(fake_clock: FakeClock) -> None:
    mail = _signed()
    fake, outcomes = await _deliver("sparkpost", fake_clock, mail, *EVERYONE)
    [body] = fake.received
    assert body["content"]["email_rfc822"].encode() == mail.data
    assert [r["address"]["email"] for r in body["recipients"]] == list(EVERYONE)
    assert all(o.disposition is Disposition.DELIVERED for o in outcomes)


async def test_ses_sends_the_queued_bytes_with_bcc_only_in_the_envelope(
    fake_clock: FakeClock,
) -> None:
    mail = _signed()
    fake, outcomes = await _deliver("ses", fake_clock, mail, *EVERYONE)
    [body] = fake.received
    assert body["raw"] == mail.data
    assert body["Destination"] == {
        "ToAddresses": [JUERGEN],
        "CcAddresses": [ANNA],
        "BccAddresses": [HIDDEN],
    }
    assert "ConfigurationSetName" not in body
    assert {o.remote.provider_id for o in outcomes if o.remote} == {"0100018e-ses-1"}


async def test_ses_names_its_configuration_set(fake_clock: FakeClock) -> None:
    with running(KINDS["ses"], fake_clock, configuration_set="postroom") as (fake, _, mailer):
        fake.configuration_set = "postroom"
        [outcome] = await mailer.deliver(_mail(), recipients(JUERGEN))
        await mailer.aclose()
    assert fake.problems == []
    assert fake.received[0]["ConfigurationSetName"] == "postroom"
    assert outcome.disposition is Disposition.DELIVERED


# -- documented error shapes ------------------------------------------------------------


async def test_postmark_inactive_recipients_in_an_accepted_answer_bounce_alone(
    fake_clock: FakeClock,
) -> None:
    _, outcomes = await _deliver("postmark", fake_clock, _mail(), *EVERYONE, inactive={ANNA})
    by = {o.recipient: o for o in outcomes}
    assert by[JUERGEN].disposition is by[HIDDEN].disposition is Disposition.DELIVERED
    assert by[ANNA].disposition is Disposition.BOUNCED
    assert by[ANNA].reply.enhanced == "5.7.1"
    assert "inactive addresses" in str(by[ANNA].reply)


async def test_postmark_422_406_every_recipient_inactive_bounces(fake_clock: FakeClock) -> None:
    _, [outcome] = await _deliver("postmark", fake_clock, _mail(), JUERGEN, inactive={JUERGEN})
    assert outcome.disposition is Disposition.BOUNCED
    assert (outcome.reply.code, outcome.reply.enhanced) == (550, "5.7.1")
    assert not outcome.failover


async def test_postmark_422_300_invalid_address_bounces(fake_clock: FakeClock) -> None:
    invalid = Reply.json(422, {"ErrorCode": 300, "Message": "Invalid 'To' address: 'x@'."})
    _, [outcome] = await _deliver("postmark", fake_clock, _mail(), JUERGEN, replies=(invalid,))
    assert outcome.disposition is Disposition.BOUNCED
    assert outcome.reply.enhanced == "5.1.3"
    assert "Invalid 'To' address" in str(outcome.reply)


async def test_sparkpost_1902_suppressed_recipient_bounces(fake_clock: FakeClock) -> None:
    _, [outcome] = await _deliver("sparkpost", fake_clock, _mail(), JUERGEN, suppressed={JUERGEN})
    assert outcome.disposition is Disposition.BOUNCED
    assert outcome.reply.enhanced == "5.7.1"
    assert "suppressed" in str(outcome.reply) and "1902" in str(outcome.reply)


async def test_sparkpost_420_sending_limit_waits(fake_clock: FakeClock) -> None:
    limit = Reply.json(
        420, {"errors": [{"message": "Exceed Sending Limit (hourly)", "code": "2101"}]}
    )
    _, [outcome] = await _deliver("sparkpost", fake_clock, _mail(), JUERGEN, replies=(limit,))
    assert outcome.disposition is Disposition.DEFERRED and outcome.failover
    assert "Exceed Sending Limit" in str(outcome.reply)


async def test_sendgrid_400_errors_array_bounces_with_its_words(fake_clock: FakeClock) -> None:
    error = {
        "errors": [
            {
                "message": "Does not contain a valid address.",
                "field": "personalizations.0.to.0.email",
                "help": None,
            }
        ]
    }
    bad = Reply.json(400, error)
    _, [outcome] = await _deliver("sendgrid", fake_clock, _mail(), JUERGEN, replies=(bad,))
    assert outcome.disposition is Disposition.BOUNCED
    assert "Does not contain a valid address. (personalizations.0.to.0.email)" in str(outcome.reply)


async def test_sendgrid_403_unverified_sender_waits(fake_clock: FakeClock) -> None:
    error = {
        "errors": [
            {
                "message": "The from address does not match a verified Sender Identity.",
                "field": "from",
                "help": None,
            }
        ]
    }
    _, [outcome] = await _deliver(
        "sendgrid", fake_clock, _mail(), JUERGEN, replies=(Reply.json(403, error),)
    )
    assert outcome.disposition is Disposition.DEFERRED and outcome.failover


@pytest.mark.parametrize(
    ("kind", "disposition"),
    [
        ("MessageRejected", Disposition.BOUNCED),
        ("SendingPausedException", Disposition.DEFERRED),
        ("MailFromDomainNotVerifiedException", Disposition.DEFERRED),
        ("AccountSuspendedException", Disposition.DEFERRED),
    ],
)
async def test_ses_errors_by_their_type(
    kind: str, disposition: Disposition, fake_clock: FakeClock
) -> None:
    error = Reply.json(
        400,
        {"message": "Email address is not verified."},
        **{"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazonaws.sesv2/"},
    )
    _, [outcome] = await _deliver("ses", fake_clock, _mail(), JUERGEN, replies=(error,))
    assert outcome.disposition is disposition
    assert f"{kind}: Email address is not verified." in str(outcome.reply)


async def test_mailgun_unknown_domain_waits(fake_clock: FakeClock) -> None:
    missing = Reply.json(404, {"message": "Domain not found: mg.example.org"})
    _, [outcome] = await _deliver("mailgun", fake_clock, _mail(), JUERGEN, replies=(missing,))
    assert outcome.disposition is Disposition.DEFERRED and outcome.failover


async def test_mailgun_200_without_an_id_is_not_acceptance(fake_clock: FakeClock) -> None:
    magnificent = Reply(200, b"Mailgun Magnificent API", {"Content-Type": "text/plain"})
    _, [outcome] = await _deliver("mailgun", fake_clock, _mail(), JUERGEN, replies=(magnificent,))
    assert outcome.disposition is Disposition.DEFERRED


async def test_resend_daily_quota_waits_and_validation_bounces(fake_clock: FakeClock) -> None:
    quota = Reply.json(
        429,
        {
            "statusCode": 429,
            "message": "You have reached your daily email sending quota.",
            "name": "daily_quota_exceeded",
        },
    )
    invalid = Reply.json(
        422, {"statusCode": 422, "message": "Invalid `to` field.", "name": "validation_error"}
    )
    _, [waits] = await _deliver("resend", fake_clock, _mail(), JUERGEN, replies=(quota,))
    _, [bounces] = await _deliver("resend", fake_clock, _mail(), JUERGEN, replies=(invalid,))
    assert waits.disposition is Disposition.DEFERRED and waits.failover
    assert bounces.disposition is Disposition.BOUNCED


async def test_brevo_400_bounces_with_its_code_and_words(fake_clock: FakeClock) -> None:
    bad = Reply.json(400, {"code": "invalid_parameter", "message": "email is not valid in to"})
    _, [outcome] = await _deliver("brevo", fake_clock, _mail(), JUERGEN, replies=(bad,))
    assert outcome.disposition is Disposition.BOUNCED
    assert "email is not valid in to" in str(outcome.reply)


def test_the_message_under_test_has_what_the_conversion_must_keep() -> None:
    mail = parse_mime(_mail().data)
    assert isinstance(mail, EmailMessage)
    assert mail["Cc"] and mail["Message-ID"]
    assert email.policy.default  # the parser the fakes use
    assert base64.b64encode(PNG)
