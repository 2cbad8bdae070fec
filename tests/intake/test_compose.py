"""compose(): fields -> MIME, checked by parsing the result back with the email package."""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from dataclasses import replace
from email.message import EmailMessage
from typing import TypedDict, Unpack

import pytest

from postroom.intake.compose import (
    Attachment,
    ComposeError,
    ComposeRequest,
    Mailbox,
    compose,
    parse_mailbox,
    prepare_raw,
)

NOW = 1_800_000_000.0
SHOP = parse_mailbox("Shop <shop@example.com>")
ANN = parse_mailbox("ann@example.net")


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


class Fields(TypedDict, total=False):
    """ComposeRequest's fields that a test changes."""

    sender: Mailbox
    to: tuple[Mailbox, ...]
    cc: tuple[Mailbox, ...]
    bcc: tuple[Mailbox, ...]
    reply_to: tuple[Mailbox, ...]
    subject: str
    text: str | None
    html: str | None
    headers: tuple[tuple[str, str], ...]
    attachments: tuple[Attachment, ...]


def build(**fields: Unpack[Fields]) -> tuple[EmailMessage, bytes]:
    request = replace(ComposeRequest(sender=SHOP, to=(ANN,), text="hello"), **fields)
    composed = compose(request, hostname="mail.test", now=NOW)
    return parse(composed.data), composed.data


def test_text_and_html_make_multipart_alternative_with_date_and_message_id() -> None:
    composed = compose(
        ComposeRequest(sender=SHOP, to=(ANN,), subject="Hi", text="plain", html="<p>rich</p>"),
        hostname="mail.test",
        now=NOW,
    )
    message = parse(composed.data)
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert re.fullmatch(r"<[0-9A-Z]{16}\.[0-9a-f]{8}@mail\.test>", message["Message-ID"])
    assert email.utils.parsedate_to_datetime(message["Date"]).timestamp() == NOW
    assert message["MIME-Version"] == "1.0"
    assert message["Subject"] == "Hi"
    assert b"\r\n" in composed.data and b"\n" not in composed.data.replace(b"\r\n", b"")


def test_one_body_is_a_single_part() -> None:
    message, _ = build(text=None, html="<b>x</b>")
    assert message.get_content_type() == "text/html"


def test_bcc_is_in_the_envelope_only() -> None:
    bcc = parse_mailbox("Secret <secret@example.net>")
    composed = compose(
        ComposeRequest(sender=SHOP, to=(ANN,), cc=(parse_mailbox("c@example.net"),), bcc=(bcc,),
                       text="x"),
        hostname="mail.test", now=NOW,
    )  # fmt: skip
    assert [str(a) for a in composed.recipients] == [
        "ann@example.net", "c@example.net", "secret@example.net",
    ]  # fmt: skip
    assert parse(composed.data)["Bcc"] is None
    assert b"secret@" not in composed.data


def test_non_ascii_names_subjects_and_filenames_are_encoded_and_decode_back() -> None:
    message, data = build(
        sender=parse_mailbox("Zoë Müller <zoe@example.com>"),
        subject="Grüße aus Köln",
        text="Schöne Grüße",
        headers=(("X-Note", "bär"),),
        attachments=(Attachment(b"%PDF", "application/pdf", "Rechnung März.pdf"),),
    )
    assert data.isascii()  # RFC 2047 words, RFC 2231 parameters, quoted-printable
    assert b"=?utf-8?" in data
    assert b"filename*=utf-8''Rechnung%20M%C3%A4rz.pdf" in data
    assert message["From"].addresses[0].display_name == "Zoë Müller"
    assert message["Subject"] == "Grüße aus Köln"
    assert message["X-Note"] == "bär"
    (attachment,) = message.iter_attachments()
    assert attachment.get_filename() == "Rechnung März.pdf"
    body = message.get_body(("plain",))
    assert body is not None and body.get_content().rstrip() == "Schöne Grüße"


def test_attachments_and_inline_images_by_content_id() -> None:
    message, _ = build(
        html='<img src="cid:logo@shop">',
        attachments=(
            Attachment(b"\x89PNG", "image/png", "logo.png", content_id="logo@shop"),
            Attachment(b"a,b\r\n", "text/csv", "data.csv"),
        ),
    )
    assert message.get_content_type() == "multipart/mixed"
    alternative, attachment = message.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    _plain, related = alternative.iter_parts()
    assert related.get_content_type() == "multipart/related"
    html, image = related.iter_parts()
    assert html.get_content_type() == "text/html"
    assert image["Content-ID"] == "<logo@shop>"
    assert image.get_content_disposition() == "inline"
    assert image.get_content() == b"\x89PNG"
    assert attachment.get_filename() == "data.csv"
    assert attachment.get_content_disposition() == "attachment"
    assert all(part["MIME-Version"] is None for part in message.walk() if part is not message)


def test_an_idn_domain_is_written_as_a_labels_and_a_utf8_local_part_needs_smtputf8() -> None:
    composed = compose(
        ComposeRequest(sender=SHOP, to=(parse_mailbox("ann@bücher.example"),), text="x"),
        hostname="mail.test", now=NOW,
    )  # fmt: skip
    assert b"ann@xn--bcher-kva.example" in composed.data
    assert not composed.smtputf8
    utf8 = compose(
        ComposeRequest(sender=SHOP, to=(parse_mailbox("zoë@example.net"),), text="x"),
        hostname="mail.test", now=NOW,
    )  # fmt: skip
    assert utf8.smtputf8 and utf8.body_type == "8BITMIME"
    assert "zoë@example.net".encode() in utf8.data


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"to": ()}, "to"),
        ({"text": None}, "text"),
        ({"subject": "a\r\nBcc: x@y"}, "subject"),
        ({"headers": (("X-A", "v\r\nBcc: x@y"),)}, "headers.X-A"),
        ({"headers": (("Bad Name", "v"),)}, "headers.Bad Name"),
        ({"headers": (("Content-Type", "text/html"),)}, "headers.Content-Type"),
        ({"attachments": (Attachment(b"", "pdf"),)}, "attachments[0].content_type"),
        ({"attachments": (Attachment(b"", filename="a\nb"),)}, "attachments[0].filename"),
        ({"attachments": (Attachment(b"", content_id="<x>"),)}, "attachments[0].content_id"),
    ],
)
def test_bad_fields_are_named(fields: Fields, path: str) -> None:
    with pytest.raises(ComposeError) as raised:
        build(**fields)
    assert path in [p for p, _ in raised.value.problems]


@pytest.mark.parametrize(
    "text",
    [
        "x",
        "a@b@c",
        "a@example.com, b@example.com",
        "<>",
        "a@example.com\r\nBcc: x@y",
        "",
        "a@",
        "g:;",
    ],
)
def test_parse_mailbox_refuses_what_is_not_one_address(text: str) -> None:
    with pytest.raises(ComposeError):
        parse_mailbox(text, "to[0]")


def test_parse_mailbox_reads_names_and_quoted_names() -> None:
    box = parse_mailbox('"Doe, Jane" <jane@example.com>')
    assert (box.name, str(box.address)) == ("Doe, Jane", "jane@example.com")


def test_prepare_raw_reads_the_envelope_and_leaves_the_message_to_intake() -> None:
    raw = (
        b"From: a@example.com\nTo: b@example.net\nBcc: c@example.net,\n d@example.net\n"
        b"Subject: s\n\nline\n"
    )
    prepared = prepare_raw(raw)
    assert [str(a) for a in prepared.recipients] == [
        "b@example.net",
        "c@example.net",
        "d@example.net",
    ]
    assert str(prepared.sender) == "a@example.com"
    assert prepared.subject == "s"
    assert prepared.data == raw  # Bcc, line endings, Date, Message-ID: intake's clean-up


def test_prepare_raw_reads_only_the_header_block_intake_will_store() -> None:
    raw = b"From: a@example.com\r\nnot a field\r\nTo: b@example.net\r\n\r\nbody\r\n"
    prepared = prepare_raw(raw, rcpt=["z@example.net"])
    assert [str(a) for a in prepared.recipients] == ["z@example.net"]
    with pytest.raises(ComposeError):  # To: is body text here, so there is no recipient
        prepare_raw(raw)


@pytest.mark.parametrize("header", [b"From: a@\r\n", b"From: a@example.com\r\nTo: b@\r\n"])
def test_prepare_raw_names_a_header_it_cannot_read(header: bytes) -> None:
    with pytest.raises(ComposeError):
        prepare_raw(header + b"\r\nbody\r\n")


def test_a_nul_in_the_text_is_encoded_never_sent_raw() -> None:
    message, data = build(text="before\x00.\r\nafter", html="<p>\x00</p>")
    assert b"\x00" not in data
    texts = [p.get_content().replace("\r\n", "\n") for p in message.iter_parts()]
    assert texts == ["before\x00.\nafter\n", "<p>\x00</p>\n"]
