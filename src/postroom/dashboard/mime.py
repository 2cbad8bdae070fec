"""A stored message read for display: its header fields (decoded), its text and HTML
bodies and its attachments. Nothing here trusts the message: a part that does not
decode is shown as what could be read, and every value is plain text for the templates
(autoescaped), the HTML body included, which only the sandboxed preview renders."""

from __future__ import annotations

import email.policy
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser

__all__ = ["HEAD_SIZE", "Attachment", "Shown", "read_message", "subject_of"]

HEAD_SIZE = 32 * 1024  # of a stored message, read for its Subject in the log

_MAX_PARTS = 200


@dataclass(frozen=True, slots=True)
class Attachment:
    index: int  # the part's place in walk() order: /attachments/{index}
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class Shown:
    headers: list[tuple[str, str]]
    subject: str
    from_: str
    text: str | None
    html: str | None
    attachments: list[Attachment]


def _parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)  # the default policy's message_factory
    return message


def _value(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except (ValueError, IndexError, TypeError, AttributeError):  # the parser trips
        return ""
    return "" if value is None else str(value)


def _content(part: Message) -> str | None:
    try:
        payload = part.get_payload(decode=True)
    except (ValueError, LookupError, AssertionError):
        return None
    if not isinstance(payload, bytes):
        return None
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # an unknown charset
        return payload.decode("utf-8", errors="replace")


def _parts(message: Message) -> list[Message]:
    parts: list[Message] = []
    for part in message.walk():
        parts.append(part)
        if len(parts) >= _MAX_PARTS:
            break
    return parts


def read_message(data: bytes) -> Shown:
    message = _parse(data)
    headers: list[tuple[str, str]] = []
    for name in message:
        headers.extend((name, _value_of(v)) for v in message.get_all(name, ()))
    text = html = None
    attachments: list[Attachment] = []
    for index, part in enumerate(_parts(message)):
        if part.is_multipart():
            continue
        kind = part.get_content_type()
        disposition = (part.get_content_disposition() or "").lower()
        filename = _filename(part)
        if disposition != "attachment" and filename is None:
            if kind == "text/plain" and text is None:
                text = _content(part)
                continue
            if kind == "text/html" and html is None:
                html = _content(part)
                continue
        if index == 0:
            continue  # a single-part message of another type is its own body
        payload = part.get_payload(decode=True)
        attachments.append(
            Attachment(
                index,
                filename or f"part-{index}",
                kind,
                len(payload) if isinstance(payload, bytes) else 0,
            )
        )
    return Shown(
        headers, _value(message, "Subject"), _value(message, "From"), text, html, attachments
    )


def attachment(data: bytes, index: int) -> tuple[str, str, bytes] | None:
    """(filename, content type, bytes) of the part at ``index``, or None."""
    parts = _parts(_parse(data))
    if not 0 < index < len(parts) or parts[index].is_multipart():
        return None
    part = parts[index]
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    return _filename(part) or f"part-{index}", part.get_content_type(), payload


def _filename(part: Message) -> str | None:
    try:
        return part.get_filename()
    except (ValueError, IndexError, TypeError, AttributeError):
        return None


def _value_of(value: object) -> str:
    try:
        return str(value)
    except (ValueError, IndexError, TypeError, AttributeError):
        return repr(value)


def subject_of(head: bytes) -> str:
    """The Subject in the first bytes of a stored message ("" when none is there)."""
    end = head.find(b"\r\n\r\n")
    block = head[: end + 2] if end >= 0 else head
    try:
        parsed = BytesHeaderParser(policy=email.policy.default).parsebytes(block)
    except (ValueError, IndexError, TypeError, AttributeError):  # the parser trips
        return ""
    return _value(parsed, "Subject")
