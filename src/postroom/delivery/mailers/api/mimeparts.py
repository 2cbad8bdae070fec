"""The queued MIME message as a neutral structure, for provider APIs that only take JSON.

``parse(data, envelope)`` reads the message postroom queued and returns what a JSON API
can carry: the addresses (Bcc = envelope recipients named in neither To nor Cc), the
subject, one text and one HTML body, attachments and inline parts (by Content-ID),
custom headers and the Message-ID. Whatever cannot be carried this way (a second
text body, a DKIM signature that the rebuilt message would break, ...) is listed in
``lost`` so the attempt can record it. Pure: no I/O.
"""

from __future__ import annotations

import base64
import email.policy
import email.utils
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from email.headerregistry import AddressHeader
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Final

__all__ = ["Attachment", "Mailbox", "ParsedMessage", "base64_text", "parse"]

# Headers a JSON API rebuilds from its own fields, or that describe the MIME structure.
_STRUCTURAL: Final = frozenset(
    {
        "from", "to", "cc", "bcc", "reply-to", "subject", "message-id",
        "mime-version", "content-type", "content-transfer-encoding", "content-disposition",
        "content-id", "content-description",
    }
)  # fmt: skip
_SPECIALS: Final = frozenset('()<>[]:;@\\,."')
# Trace headers record the path so far and Date the submission: the provider stamps its own.
_TRACE: Final = frozenset({"received", "return-path", "x-original-to", "delivered-to", "date"})
# Headers no provider lets the caller set, or that the rebuilt message would make false.
_NOT_CARRIED: Final = frozenset(
    {"dkim-signature", "arc-seal", "arc-message-signature", "arc-authentication-results",
     "authentication-results", "sender"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Mailbox:
    email: str
    name: str = ""

    def formatted(self) -> str:
        """``Name <addr>`` with the name as Unicode text (JSON carries it; RFC 6532),
        quoted when it holds RFC 5322 specials; or the bare address."""
        if not self.name:
            return self.email
        name = self.name
        if any(c in _SPECIALS for c in name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{name} <{self.email}>"


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str | None
    content_type: str  # "image/png"
    content: bytes  # decoded from its transfer encoding
    content_id: str | None = None  # without the angle brackets
    inline: bool = False


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    sender: Mailbox | None  # the From header
    to: tuple[Mailbox, ...] = ()
    cc: tuple[Mailbox, ...] = ()
    bcc: tuple[Mailbox, ...] = ()
    reply_to: tuple[Mailbox, ...] = ()
    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()  # custom headers, in order, as decoded text
    message_id: str | None = None  # with the angle brackets, as in the header
    lost: tuple[str, ...] = field(default=())  # what a JSON API cannot carry, in words

    @property
    def inline(self) -> tuple[Attachment, ...]:
        return tuple(part for part in self.attachments if part.inline)

    def named_attachments(self) -> Iterator[tuple[str, Attachment]]:
        """Each attachment with the file name an API requires: its own, else its
        Content-ID, else ``part-N`` (counted from 1)."""
        for index, part in enumerate(self.attachments, start=1):
            yield part.filename or part.content_id or f"part-{index}", part

    def with_to(self) -> ParsedMessage:
        """For APIs that require a To recipient: when this delivery has none in To, the
        Cc (else Bcc) recipients take its place, and ``lost`` says so."""
        if self.to or not (self.cc or self.bcc):
            return self
        moved = "Cc" if self.cc else "Bcc"
        note = f"no To recipient in this delivery: the {moved} recipients were sent as To"
        if self.cc:
            return replace(self, to=self.cc, cc=(), lost=(*self.lost, note))
        return replace(self, to=self.bcc, bcc=(), lost=(*self.lost, note))


def parse(data: bytes, envelope: Sequence[str]) -> ParsedMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    lost: list[str] = []
    # A JSON API sends to everyone it is given: the header names outside this delivery
    # (delivered by another mailer, or already delivered) would get a second copy.
    wanted = {rcpt.lower() for rcpt in envelope}
    to, cc = _addresses(message, "To"), _addresses(message, "Cc")
    others = [box.email for box in (*to, *cc) if box.email.lower() not in wanted]
    if others:
        lost.append(f"To/Cc names outside this delivery left out: {', '.join(others)}")
    to = tuple(box for box in to if box.email.lower() in wanted)
    cc = tuple(box for box in cc if box.email.lower() in wanted)
    named = {box.email.lower() for box in (*to, *cc)}
    bcc = tuple(Mailbox(rcpt) for rcpt in envelope if rcpt.lower() not in named)
    senders = _addresses(message, "From")
    if len(senders) > 1:
        lost.append(f"From names {len(senders)} authors; only the first is sent")
    bodies = _Bodies(lost)
    for part in _leaves(message):
        bodies.add(part)
    return ParsedMessage(
        sender=senders[0] if senders else None,
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=_addresses(message, "Reply-To"),
        subject=str(message.get("Subject", "")),
        text=bodies.text,
        html=bodies.html,
        attachments=tuple(bodies.attachments),
        headers=_custom_headers(message, lost),
        message_id=_message_id(message),
        lost=tuple(lost),
    )


def _addresses(message: Message, name: str) -> tuple[Mailbox, ...]:
    boxes: list[Mailbox] = []
    for value in message.get_all(name, []):
        if isinstance(value, AddressHeader):
            boxes.extend(Mailbox(a.addr_spec, a.display_name) for a in value.addresses)
        else:  # an unparseable header: fall back to the lenient parser
            boxes.extend(Mailbox(a, n) for n, a in email.utils.getaddresses([str(value)]) if a)
    return tuple(boxes)


def _message_id(message: Message) -> str | None:
    value = message.get("Message-ID")
    return str(value).strip() or None if value is not None else None


def _custom_headers(message: Message, lost: list[str]) -> tuple[tuple[str, str], ...]:
    carried: list[tuple[str, str]] = []
    for name, value in message.items():
        lower = name.lower()
        if lower in _STRUCTURAL or lower in _TRACE:
            continue
        if lower in _NOT_CARRIED:
            lost.append(f"header {name}")
            continue
        carried.append((name, str(value)))
    return tuple(carried)


def _leaves(part: Message) -> Iterator[Message]:
    """Every part that holds content, depth first; an attached message stays whole."""
    if part.get_content_maintype() == "message" or not part.is_multipart():
        yield part
        return
    for child in part.iter_parts() if isinstance(part, EmailMessage) else ():
        yield from _leaves(child)


class _Bodies:
    """Sorts leaf parts into the text body, the HTML body and attachments."""

    def __init__(self, lost: list[str]) -> None:
        self.lost = lost
        self.text: str | None = None
        self.html: str | None = None
        self.attachments: list[Attachment] = []

    def add(self, part: Message) -> None:
        disposition = part.get_content_disposition()
        ctype = part.get_content_type()
        is_body = disposition != "attachment" and part.get_filename() is None
        if is_body and ctype == "text/plain":
            self._body(part, "text")
        elif is_body and ctype == "text/html":
            self._body(part, "html")
        else:
            self.attachments.append(_attachment(part, ctype, disposition))

    def _body(self, part: Message, kind: str) -> None:
        if getattr(self, kind) is not None:
            # e.g. a text part after an image in multipart/mixed: a JSON API has one slot.
            self.lost.append(f"a further {part.get_content_type()} body part")
            return
        setattr(self, kind, _text(part, self.lost))


def _text(part: Message, lost: list[str]) -> str:
    raw = part.get_payload(decode=True)
    payload = raw if isinstance(raw, bytes) else b""
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset)
    except (LookupError, UnicodeDecodeError):
        lost.append(f"text in charset {charset!r} decoded as Latin-1")
        return payload.decode("latin-1")


def _attachment(part: Message, ctype: str, disposition: str | None) -> Attachment:
    if part.get_content_maintype() == "message":
        inner = part.get_payload()
        first = inner[0] if isinstance(inner, list) and inner else None
        content = first.as_bytes() if isinstance(first, Message) else b""
    else:
        raw = part.get_payload(decode=True)
        content = raw if isinstance(raw, bytes) else b""
    cid = part.get("Content-ID")
    content_id = str(cid).strip().removeprefix("<").removesuffix(">") if cid else None
    inline = disposition == "inline" or (disposition is None and content_id is not None)
    return Attachment(part.get_filename(), ctype, content, content_id or None, inline)


def base64_text(data: bytes) -> str:
    """Bytes as the base64 text JSON APIs take for attachments and raw messages."""
    return base64.b64encode(data).decode("ascii")
