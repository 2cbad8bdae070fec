"""DSNs, parsed back with Python's email package and checked field by field."""

from __future__ import annotations

import email
import email.policy
import email.utils
from email.message import EmailMessage, Message

import pytest

from postroom.delivery.dsn import (
    ACTIONS,
    RETURN_FULL_LIMIT,
    DsnKind,
    DsnRecipient,
    build_dsn,
    wants_dsn,
)
from postroom.smtp.replies import Reply
from postroom.store.models import StoredMessage

NOW = 1_800_100_000.0
RECEIVED = 1_800_000_000.0
HOST = "mail.example.org"
ORIGINAL = (
    b"Received: from client.example (client.example [192.0.2.1])\r\n"
    b"\tby mail.example.org (postroom) with ESMTPSA id 01HXAMPLE0000000;\r\n"
    b"\tFri, 15 Jan 2027 08:00:00 +0000\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: Quarterly numbers\r\n"
    b"Message-ID: <q1@example.com>\r\n"
    b"\r\n"
    b"The body that only a full return carries.\r\n"
)
REJECTED = Reply(550, "5.1.1", "<bob@example.net>: Recipient address rejected")
GREYLISTED = Reply(451, "4.7.1", "Greylisted, try again later")


def _stored(
    *,
    sender: str = "alice@example.com",
    ret: str | None = None,
    envid: str | None = None,
    body_type: str = "7BIT",
    smtputf8: bool = False,
) -> StoredMessage:
    return StoredMessage(
        id="01HXAMPLE0000000",
        sender=sender,
        recipients=(),
        ret=ret,
        envid=envid,
        body_type=body_type,
        smtputf8=smtputf8,
        size=len(ORIGINAL),
        received_at=RECEIVED,
        source_kind="smtp",
        principal="alice@example.com",
        client_ip="192.0.2.1",
        helo="client.example",
        protocol="ESMTPSA",
        tls=None,
        held=False,
    )


def _failed(
    address: str = "bob@example.net",
    *,
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: Reply | None = REJECTED,
    remote_mta: str | None = "mx1.example.net",
    last_attempt: float | None = NOW - 60,
    orcpt: str | None = None,
    will_retry_until: float | None = None,
) -> DsnRecipient:
    return DsnRecipient(
        address, action, status, diagnostic, remote_mta, last_attempt, orcpt, will_retry_until
    )


def _build(
    kind: DsnKind = "failure",
    original: StoredMessage | None = None,
    data: bytes = ORIGINAL,
    recipients: list[DsnRecipient] | None = None,
    *,
    reporting_mta: str = HOST,
    full_limit: int = RETURN_FULL_LIMIT,
) -> bytes:
    return build_dsn(
        kind=kind,
        original=original or _stored(),
        original_data=data,
        recipients=recipients or [_failed()],
        reporting_mta=reporting_mta,
        now=NOW,
        postmaster="postmaster@example.org",
        full_limit=full_limit,
    )


def _parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert not message.defects
    for part in message.walk():
        assert not part.defects, part.get_content_type()
    return message


def _parts(message: EmailMessage) -> list[EmailMessage]:
    parts = message.get_payload()
    assert isinstance(parts, list)
    assert all(isinstance(part, EmailMessage) for part in parts)
    return [part for part in parts if isinstance(part, EmailMessage)]


def _status_blocks(message: EmailMessage) -> list[Message]:
    status = _parts(message)[1]
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    return [block for block in blocks if isinstance(block, Message)]


# -- the envelope of the report -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "subject"),
    [
        ("failure", "Undelivered Mail Returned to Sender"),
        ("delay", "Delayed Mail (still being retried)"),
        ("success", "Successful Mail Delivery Report"),
    ],
)
def test_top_level_header(kind: DsnKind, subject: str) -> None:
    action = ACTIONS[kind]
    message = _parse(_build(kind, recipients=[_failed(action=action)]))
    assert message["From"] == f"Mail Delivery System <MAILER-DAEMON@{HOST}>"
    assert message["To"] == "alice@example.com"
    assert message["Subject"] == subject
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["MIME-Version"] == "1.0"
    assert email.utils.parsedate_to_datetime(message["Date"]).timestamp() == NOW
    assert message["Message-ID"].startswith("<") and message["Message-ID"].endswith(f"@{HOST}>")
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"


def test_three_parts_in_order() -> None:
    message = _parse(_build())
    types = [part.get_content_type() for part in _parts(message)]
    assert types == ["text/plain", "message/delivery-status", "message/rfc822"]


@pytest.mark.parametrize("kind", ["failure", "delay", "success"])
def test_every_line_ends_with_crlf(kind: DsnKind) -> None:
    for raw in (_build(kind), _build(kind, original=_stored(ret="HDRS"))):
        assert raw.count(b"\n") == raw.count(b"\r\n")
        assert raw.endswith(b"\r\n")
        assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_message_ids_differ_between_reports() -> None:
    assert _parse(_build())["Message-ID"] != _parse(_build())["Message-ID"]


def test_null_sender_original_gets_no_report() -> None:
    with pytest.raises(ValueError):
        _build(original=_stored(sender=""))


def test_a_report_needs_recipients() -> None:
    with pytest.raises(ValueError):
        build_dsn(
            kind="failure",
            original=_stored(),
            original_data=ORIGINAL,
            recipients=[],
            reporting_mta=HOST,
            now=NOW,
            postmaster="postmaster@example.org",
        )


def test_line_breaks_in_values_cannot_add_headers() -> None:
    raw = _build(reporting_mta="evil.example\r\nBcc: victim@example.com")
    assert b"\r\nBcc:" not in raw
    assert _parse(raw)["Bcc"] is None


# -- part 1: for people ----------------------------------------------------------------------


def test_explanation_names_recipients_reasons_and_remote_replies() -> None:
    second = _failed("carol@example.net", diagnostic=None, remote_mta=None, status="5.4.4")
    text = _parts(_parse(_build(recipients=[_failed(), second])))[0]
    assert text.get_content_charset() == "utf-8"
    body = " ".join(str(text.get_content()).split())  # undo the wrapping
    assert "mail system at mail.example.org" in body
    assert "postmaster@example.org" in body
    assert (
        "<bob@example.net>: host mx1.example.net said: 550 5.1.1 "
        "<bob@example.net>: Recipient address rejected" in body
    )
    assert "<carol@example.net>: failed, status 5.4.4" in body


def test_explanation_in_utf8_is_quoted_printable() -> None:
    reply = Reply(550, "5.2.1", "Boîte aux lettres désactivée")
    raw = _build(recipients=[_failed(diagnostic=reply, remote_mta=None)])
    text = _parts(_parse(raw))[0]
    assert text["Content-Transfer-Encoding"] == "quoted-printable"
    assert "Boîte aux lettres désactivée" in str(text.get_content())
    assert raw.isascii()


def test_delay_explanation_says_until_when() -> None:
    until = RECEIVED + 5 * 86400
    rcpt = _failed(action="delayed", status="4.7.1", diagnostic=GREYLISTED, will_retry_until=until)
    body = " ".join(
        str(_parts(_parse(_build("delay", recipients=[rcpt])))[0].get_content()).split()
    )
    assert "still being retried" in body
    assert "retried until Wed, 20 Jan 2027" in body


# -- part 2: for machines --------------------------------------------------------------------


def test_per_message_fields() -> None:
    blocks = _status_blocks(_parse(_build(original=_stored(envid="ENV-42.a+b"))))
    per_message = blocks[0]
    assert per_message["Reporting-MTA"] == f"dns; {HOST}"
    assert per_message["Original-Envelope-Id"] == "ENV-42.a+b"
    assert per_message["X-Postroom-Queue-ID"] == "01HXAMPLE0000000"
    arrival = email.utils.parsedate_to_datetime(per_message["Arrival-Date"])
    assert arrival.timestamp() == RECEIVED


def test_no_envelope_id_without_envid() -> None:
    per_message = _status_blocks(_parse(_build()))[0]
    assert per_message["Original-Envelope-Id"] is None


def test_per_recipient_fields_of_a_failure() -> None:
    (_, rcpt) = _status_blocks(_parse(_build()))
    assert rcpt["Final-Recipient"] == "rfc822; bob@example.net"
    assert rcpt["Original-Recipient"] is None  # no ORCPT given
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.1.1"
    assert rcpt["Remote-MTA"] == "dns; mx1.example.net"
    assert rcpt["Diagnostic-Code"] == (
        "smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected"
    )
    last = email.utils.parsedate_to_datetime(rcpt["Last-Attempt-Date"])
    assert last.timestamp() == NOW - 60
    assert rcpt["Will-Retry-Until"] is None


def test_original_recipient_passes_orcpt_through() -> None:
    rcpt = _failed(orcpt="rfc822;Bob.Original@Example.NET")
    (_, block) = _status_blocks(_parse(_build(recipients=[rcpt])))
    assert block["Original-Recipient"] == "rfc822; Bob.Original@Example.NET"
    assert list(block.keys())[:2] == ["Original-Recipient", "Final-Recipient"]


def test_our_own_reason_is_not_labelled_smtp_and_has_no_remote_mta() -> None:
    reply = Reply(550, "5.4.4", "Host or domain name not found")
    rcpt = _failed(diagnostic=reply, remote_mta=None, status="5.4.4")
    (_, block) = _status_blocks(_parse(_build(recipients=[rcpt])))
    assert block["Remote-MTA"] is None
    assert block["Diagnostic-Code"] == "X-Postroom; 550 5.4.4 Host or domain name not found"


def test_no_diagnostic_code_without_a_reply() -> None:
    rcpt = _failed(diagnostic=None, remote_mta=None, last_attempt=None)
    (_, block) = _status_blocks(_parse(_build(recipients=[rcpt])))
    assert block["Diagnostic-Code"] is None
    assert block["Last-Attempt-Date"] is None


def test_multi_line_and_long_replies_are_folded_into_one_field() -> None:
    reply = Reply(
        550, "5.7.1", ("Message rejected as spam.", "See https://example.net/" + "x" * 60)
    )
    (_, block) = _status_blocks(_parse(_build(recipients=[_failed(diagnostic=reply)])))
    assert block["Diagnostic-Code"] == (
        "smtp; 550 5.7.1 Message rejected as spam. See https://example.net/" + "x" * 60
    )


def test_recipients_each_get_a_block_in_order() -> None:
    rcpts = [_failed(f"user{i}@example.net") for i in range(4)]
    blocks = _status_blocks(_parse(_build(recipients=rcpts)))
    assert len(blocks) == 5
    assert [b["Final-Recipient"] for b in blocks[1:]] == [
        f"rfc822; user{i}@example.net" for i in range(4)
    ]


def test_delay_report_fields() -> None:
    until = RECEIVED + 5 * 86400
    rcpt = _failed(action="delayed", status="4.7.1", diagnostic=GREYLISTED, will_retry_until=until)
    (_, block) = _status_blocks(_parse(_build("delay", recipients=[rcpt])))
    assert block["Action"] == "delayed"
    assert block["Status"] == "4.7.1"
    assert block["Diagnostic-Code"] == "smtp; 451 4.7.1 Greylisted, try again later"
    assert email.utils.parsedate_to_datetime(block["Will-Retry-Until"]).timestamp() == until


def test_will_retry_until_only_in_delayed_blocks() -> None:
    rcpt = _failed(will_retry_until=NOW + 3600)  # action "failed"
    (_, block) = _status_blocks(_parse(_build(recipients=[rcpt])))
    assert block["Will-Retry-Until"] is None


def test_success_report_fields() -> None:
    rcpt = _failed(action="delivered", status="2.0.0", diagnostic=Reply(250, "2.0.0", "Ok: 4Q"))
    message = _parse(_build("success", recipients=[rcpt]))
    (_, block) = _status_blocks(message)
    assert block["Action"] == "delivered"
    assert block["Status"] == "2.0.0"
    assert block["Diagnostic-Code"] == "smtp; 250 2.0.0 Ok: 4Q"


@pytest.mark.parametrize(
    ("status", "diagnostic", "kind", "expected"),
    [
        ("bogus", REJECTED, "failure", "5.1.1"),  # from the reply's enhanced code
        ("", None, "failure", "5.0.0"),
        ("9.9.9", None, "delay", "4.0.0"),
        ("x", None, "success", "2.0.0"),
    ],
)
def test_a_malformed_status_falls_back(
    status: str, diagnostic: Reply | None, kind: DsnKind, expected: str
) -> None:
    rcpt = _failed(status=status, diagnostic=diagnostic, action=ACTIONS[kind])
    (_, block) = _status_blocks(_parse(_build(kind, recipients=[rcpt])))
    assert block["Status"] == expected


# -- part 3: the original --------------------------------------------------------------------


def _returned(raw: bytes) -> EmailMessage:
    return _parts(_parse(raw))[2]


@pytest.mark.parametrize("ret", [None, "FULL"])
def test_failure_returns_the_whole_message(ret: str | None) -> None:
    part = _returned(_build(original=_stored(ret=ret)))
    assert part.get_content_type() == "message/rfc822"
    assert part["Content-Description"] == "Undelivered Message"
    inner = part.get_content()
    assert isinstance(inner, EmailMessage)
    assert inner["Subject"] == "Quarterly numbers"
    assert inner["Message-ID"] == "<q1@example.com>"
    body = str(inner.get_content()).replace("\r\n", "\n")
    assert body == "The body that only a full return carries.\n"


def _headers_only(part: EmailMessage) -> str:
    assert part.get_content_type() == "text/rfc822-headers"
    text = part.get_payload()
    assert isinstance(text, str)
    return text


def test_ret_hdrs_returns_only_the_header() -> None:
    raw = _build(original=_stored(ret="HDRS"))
    part = _returned(raw)
    text = _headers_only(part)
    assert part["Content-Description"] == "Undelivered Message Headers"
    assert "Subject: Quarterly numbers" in text
    assert "Message-ID: <q1@example.com>" in text
    assert "only a full return carries" not in text
    assert b"only a full return carries" not in raw
    assert "the message's header is returned" in " ".join(
        str(_parts(_parse(raw))[0].get_content()).split()
    )


def test_a_large_message_returns_only_the_header_whatever_ret_says() -> None:
    body = b"x" * 998 + b"\r\n"
    big = ORIGINAL + body * (RETURN_FULL_LIMIT // len(body) + 1)
    raw = _build(original=_stored(ret="FULL"), data=big)
    assert len(raw) < 10_000
    assert "Subject: Quarterly numbers" in _headers_only(_returned(raw))


def test_the_limit_is_a_parameter() -> None:
    assert _returned(_build(full_limit=len(ORIGINAL))).get_content_type() == "message/rfc822"
    part = _returned(_build(full_limit=len(ORIGINAL) - 1))
    assert part.get_content_type() == "text/rfc822-headers"


@pytest.mark.parametrize(("kind", "description"), [("delay", "Delayed"), ("success", "Delivered")])
def test_delay_and_success_return_only_the_header(kind: DsnKind, description: str) -> None:
    rcpt = _failed(action=ACTIONS[kind])
    part = _returned(_build(kind, original=_stored(ret="FULL"), recipients=[rcpt]))
    assert "Subject: Quarterly numbers" in _headers_only(part)
    assert part["Content-Description"] == f"{description} Message Headers"


def test_a_message_without_a_body_returns_all_of_it_as_header() -> None:
    data = b"Subject: only a header\r\n"
    assert "Subject: only a header" in _headers_only(_returned(_build("delay", data=data)))


def test_seven_bit_original_makes_a_seven_bit_report() -> None:
    raw = _build()
    assert raw.isascii()
    message = _parse(raw)
    assert message["Content-Transfer-Encoding"] is None
    assert all(p["Content-Transfer-Encoding"] != "8bit" for p in message.walk())


def test_eight_bit_original_is_marked_8bit() -> None:
    data = ORIGINAL.replace(b"carries.", "carries: café, naïve.".encode())
    original = _stored(body_type="8BITMIME")
    raw = _build(original=original, data=data)
    message = _parse(raw)
    assert message["Content-Transfer-Encoding"] == "8bit"  # RFC 2045 6.4: the multipart too
    part = _parts(message)[2]
    assert part["Content-Transfer-Encoding"] == "8bit"
    assert "carries: café, naïve.".encode() in raw  # returned as is, not re-encoded
    assert _parts(message)[1]["Content-Transfer-Encoding"] is None  # the status part is ASCII


def test_eight_bit_header_only_return_is_marked_too() -> None:
    data = b"Subject: caf\xc3\xa9\r\n\r\nbody\r\n"
    part = _returned(_build(original=_stored(ret="HDRS"), data=data))
    assert part["Content-Transfer-Encoding"] == "8bit"


def test_boundary_appears_only_as_delimiters_and_differs_per_report() -> None:
    raw = _build()
    boundary = _parse(raw).get_boundary()
    assert boundary is not None
    assert raw.count(boundary.encode()) == 5  # the parameter, three parts and the close
    assert raw.count(f"\r\n--{boundary}\r\n".encode()) == 3
    assert raw.endswith(f"\r\n--{boundary}--\r\n".encode())
    assert boundary.encode() not in _build()


# -- internationalized reports (RFC 6533) ---------------------------------------------------


def test_utf8_addresses_make_a_global_report() -> None:
    original = _stored(sender="jörg@example.com", smtputf8=True)
    rcpt = _failed("δοκιμή@παράδειγμα.example", orcpt="utf-8;δοκιμή@παράδειγμα.example")
    raw = _build(original=original, recipients=[rcpt])
    message = _parse(raw)
    assert message["To"] == "jörg@example.com"
    assert message.get_param("report-type") == "global-delivery-status"
    parts = _parts(message)
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/global-delivery-status",
        "message/global",
    ]
    status = raw.split(b"message/global-delivery-status", 1)[1].decode()
    assert "Final-Recipient: utf-8; δοκιμή@παράδειγμα.example" in status
    assert "Original-Recipient: utf-8; δοκιμή@παράδειγμα.example" in status


def test_global_header_only_return() -> None:
    original = _stored(sender="jörg@example.com", smtputf8=True, ret="HDRS")
    part = _parts(_parse(_build(original=original)))[2]
    assert part.get_content_type() == "message/global-headers"


def test_plain_report_keeps_the_status_part_ascii() -> None:
    reply = Reply(550, "5.1.1", "Unbekannter Empfänger")
    raw = _build(recipients=[_failed(diagnostic=reply)])
    (_, block) = _status_blocks(_parse(raw))
    assert block["Diagnostic-Code"] == "smtp; 550 5.1.1 Unbekannter Empf?nger"
    assert raw.isascii()


# -- when to send one (RFC 3461 4.1) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "notify", "sender", "wanted"),
    [
        # No NOTIFY: failures and delays, no success.
        ("failure", None, "alice@example.com", True),
        ("delay", None, "alice@example.com", True),
        ("success", None, "alice@example.com", False),
        ("failure", "", "alice@example.com", True),
        # NEVER: nothing, even next to other values.
        ("failure", "NEVER", "alice@example.com", False),
        ("delay", "NEVER", "alice@example.com", False),
        ("success", "NEVER", "alice@example.com", False),
        ("failure", "NEVER,FAILURE", "alice@example.com", False),
        # Only what was asked for.
        ("success", "SUCCESS", "alice@example.com", True),
        ("failure", "SUCCESS", "alice@example.com", False),
        ("delay", "SUCCESS", "alice@example.com", False),
        ("failure", "FAILURE", "alice@example.com", True),
        ("delay", "FAILURE", "alice@example.com", False),
        ("delay", "DELAY", "alice@example.com", True),
        ("success", "SUCCESS,FAILURE,DELAY", "alice@example.com", True),
        ("delay", "success, delay", "alice@example.com", True),
        # Never to the null sender, whatever NOTIFY says.
        ("failure", None, "", False),
        ("failure", "FAILURE", "", False),
        ("success", "SUCCESS", "", False),
        ("delay", "DELAY", "<>", False),
    ],
)
def test_wants_dsn(kind: DsnKind, notify: str | None, sender: str, wanted: bool) -> None:
    assert wants_dsn(kind, notify, sender) is wanted
