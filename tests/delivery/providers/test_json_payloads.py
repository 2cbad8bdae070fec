"""The blocks every JSON provider payload shares (jsonapi, named attachments): no sockets."""

from __future__ import annotations

from postroom.delivery.mailers.api.jsonapi import custom_headers, mailbox_objects, optional
from postroom.delivery.mailers.api.mimeparts import Attachment, Mailbox, ParsedMessage

ZOE = Mailbox("zoe@example.org")


def test_a_part_without_a_file_name_is_named_by_its_content_id_else_by_its_place() -> None:
    parts = (
        Attachment("report.pdf", "application/pdf", b"%PDF", "ignored@example.org"),
        Attachment(None, "image/png", b"png", "logo@example.org", inline=True),
        Attachment(None, "text/csv", b"a,b"),
    )
    named = [name for name, _ in ParsedMessage(ZOE, attachments=parts).named_attachments()]
    assert named == ["report.pdf", "logo@example.org", "part-3"]


def test_custom_headers_keep_one_per_name_in_any_spelling_and_say_what_was_dropped() -> None:
    parsed = ParsedMessage(
        ZOE,
        headers=(("X-Tag", "a"), ("X-Campaign", "winter"), ("x-tag", "b")),
        message_id="<1@example.org>",
    )
    headers, lost = custom_headers(parsed, "Brevo", message_id="Message-Id")
    assert headers == {"x-tag": "b", "X-Campaign": "winter", "Message-Id": "<1@example.org>"}
    assert list(headers) == ["x-tag", "X-Campaign", "Message-Id"]  # the first one's place
    assert lost == ("repeated custom headers (Brevo keeps one of each)",)


def test_custom_headers_without_a_message_id_key_leave_the_message_id_out() -> None:
    parsed = ParsedMessage(ZOE, headers=(("X-Campaign", "winter"),), message_id="<1@example.org>")
    assert custom_headers(parsed, "Mailjet") == ({"X-Campaign": "winter"}, ())


def test_optional_leaves_out_none_and_empty_lists_and_objects_but_keeps_empty_text() -> None:
    fields: dict[str, object] = {
        "cc": [],
        "headers": {},
        "sender": None,
        "text": "",
        "to": ["a@x.test"],
        "n": 0,
    }
    assert optional(fields) == {"text": "", "to": ["a@x.test"], "n": 0}


def test_mailbox_objects_use_the_providers_keys_and_leave_out_an_empty_name() -> None:
    boxes = (Mailbox("anna@example.net", "Anna Öberg"), Mailbox("bob@example.net"))
    assert mailbox_objects(boxes, email="Email", name="Name") == [
        {"Email": "anna@example.net", "Name": "Anna Öberg"},
        {"Email": "bob@example.net"},
    ]
