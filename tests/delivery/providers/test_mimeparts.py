"""The queued MIME message as neutral parts for JSON APIs (no sockets)."""

from __future__ import annotations

from email.message import EmailMessage

from postroom.delivery.mailers.api.mimeparts import Attachment, Mailbox, parse
from tests.delivery.provider_messages import PDF, PNG, message


def test_the_shared_message_parses_faithfully() -> None:
    parsed = parse(message(cc="Anna <anna@example.net>").data, ["juergen@example.net",
                   "anna@example.net", "hidden@example.com"])  # fmt: skip
    assert parsed.sender == Mailbox("zoe@example.org", "Zoë Ärger")
    assert parsed.to == (Mailbox("juergen@example.net", "Jürgen Straße"),)
    assert parsed.cc == (Mailbox("anna@example.net", "Anna"),)
    assert parsed.bcc == (Mailbox("hidden@example.com"),)
    assert parsed.subject == "Grüße aus Köln ☕"
    assert parsed.text is not None and parsed.text.startswith("Hallo Jürgen")
    assert parsed.html is not None and "cid:logo@example.org" in parsed.html
    assert parsed.attachments == (
        Attachment("logo.png", "image/png", PNG, "logo@example.org", inline=True),
        Attachment("résumé.pdf", "application/pdf", PDF, None, inline=False),
    )
    assert parsed.inline == parsed.attachments[:1]
    assert parsed.headers == (("X-Campaign", "winter"),)
    assert parsed.message_id == "<20270115.1@example.org>"
    assert parsed.lost == ()


def test_bcc_is_the_envelope_minus_to_and_cc_case_blind() -> None:
    data = b"From: a@x.test\r\nTo: Bob@Example.NET\r\nSubject: s\r\n\r\nbody\r\n"
    parsed = parse(data, ["bob@example.net", "eve@example.org"])
    assert [b.email for b in parsed.to] == ["Bob@Example.NET"]
    assert [b.email for b in parsed.bcc] == ["eve@example.org"]


def test_what_cannot_be_carried_is_listed() -> None:
    mail = EmailMessage()
    mail["From"] = "a@x.test"
    mail["To"] = "b@y.test, c@y.test"
    mail["Subject"] = "two texts"
    mail["DKIM-Signature"] = "v=1; d=x.test; b=abc"
    mail["Date"] = "Fri, 15 Jan 2027 10:00:00 +0000"
    mail.set_content("first")
    mail.add_attachment("second text body")  # text/plain, disposition attachment
    data = mail.as_bytes().replace(b"Content-Disposition: attachment\n", b"")
    parsed = parse(data, ["b@y.test"])
    assert parsed.text == "first\n"
    assert parsed.lost == (
        "To/Cc names outside this delivery left out: c@y.test",
        "a further text/plain body part",
        "header DKIM-Signature",
    )


def test_an_attached_message_stays_whole_and_odd_charsets_fall_back() -> None:
    inner = b"From: q@x.test\r\nSubject: inner\r\n\r\ninner body\r\n"
    data = (
        b"From: a@x.test\r\nTo: b@y.test\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\ncaf\xe9\r\n"
        b"--B\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"--B--\r\n"
    )
    parsed = parse(data, ["b@y.test"])
    assert parsed.text == "café"
    [attached] = parsed.attachments
    assert attached.content_type == "message/rfc822"
    assert b"Subject: inner" in attached.content and b"inner body" in attached.content
    assert parsed.lost == ("text in charset 'x-unknown' decoded as Latin-1",)


def test_a_display_name_with_specials_is_quoted() -> None:
    assert Mailbox("a@x.test", 'Doe, "J"').formatted() == '"Doe, \\"J\\"" <a@x.test>'
    assert Mailbox("a@x.test", "Zoë").formatted() == "Zoë <a@x.test>"
    assert Mailbox("a@x.test").formatted() == "a@x.test"
