"""A message described as fields (the HTTP API's JSON, ``postroom send``) -> MIME bytes.

Built with the standard library's ``email`` package under ``policy.SMTP`` (CRLF, RFC 2047
encoded words for non-ASCII names and subjects, RFC 2231 for non-ASCII filenames), so
the result is 7-bit clean unless an address needs SMTPUTF8 (RFC 6531). Shape:
multipart/mixed( multipart/alternative( text/plain, multipart/related( text/html,
inline parts by Content-ID ) ), attachments ), each level only when needed. Bcc
recipients are in the envelope, never in a header. Nothing here knows HTTP.

``prepare_raw`` takes a finished RFC 5322 message instead and reads its envelope from
it; the message itself is left as given. Intake's clean-up (``cleanup.py``) makes line
endings canonical, removes Bcc and adds Date and Message-ID, for every source alike.
"""

from __future__ import annotations

import email.policy
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.errors import HeaderDefect, MessageError, NonASCIILocalPartDefect
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.parser import BytesHeaderParser

from postroom.errors import AddressError
from postroom.ids import message_id, new_queue_id
from postroom.intake.cleanup import header_fields, tidy_field
from postroom.mail.address import Address, parse_address
from postroom.mail.headers import date_header
from postroom.mail.labels import LINE_BREAKS

__all__ = [
    "Attachment",
    "ComposeError",
    "ComposeRequest",
    "ComposedMessage",
    "Mailbox",
    "compose",
    "mailbox",
    "parse_mailbox",
    "prepare_raw",
]

# Set from the request's own fields, or by postroom: a custom header may not name them.
RESERVED_HEADERS = frozenset(
    {
        "from", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id",
        "mime-version", "content-type", "content-transfer-encoding", "content-disposition",
        "content-id", "received", "return-path", "sender",
    }
)  # fmt: skip
HEADER_NAME = r"[!-9;-~]{1,76}"  # RFC 5322 2.2 ftext, within one line
CONTENT_TYPE = r"([A-Za-z0-9!#$&^_.+-]{1,64})/([A-Za-z0-9!#$&^_.+-]{1,64})"
CONTENT_ID = r"[!-;=?-~]{1,200}"  # printable, no "<" ">" (id-left@id-right)
# LINE_BREAKS: every separator of str.splitlines(): the email package breaks a header at
# each, so a one-line field holding one could start a header of its own. With NUL, never
# in a field.
_HEADER_NAME = re.compile(HEADER_NAME)
# A lone surrogate (from JSON "\\ud800") has no UTF-8: it cannot be in any message.
_LINE_BREAK = re.compile(f"[{LINE_BREAKS}\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_ONE_LINE = "must be one line: no CR, LF, NUL or other line break (U+2028 and the like)"
_CONTENT_TYPE = re.compile(CONTENT_TYPE)
_CONTENT_ID = re.compile(CONTENT_ID)
# What the email package's header parser raises on input it trips over ("a@", groups).
_PARSER_ERRORS = (MessageError, AttributeError, IndexError, TypeError, ValueError)


class ComposeError(ValueError):
    """The request cannot become a message: every problem as (field path, message)."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class Mailbox:
    address: Address
    name: str = ""

    def header(self) -> HeaderAddress:
        # A-labels in headers keep them ASCII; a UTF-8 local part needs SMTPUTF8 anyway.
        domain = self.address.domain if self.address.needs_smtputf8 else self.address.ascii_domain
        return HeaderAddress(display_name=self.name, username=self.address.local, domain=domain)


@dataclass(frozen=True, slots=True)
class Attachment:
    content: bytes
    content_type: str = "application/octet-stream"
    filename: str | None = None
    content_id: str | None = None  # set: an inline part, referred to as cid:<content_id>


@dataclass(frozen=True, slots=True)
class ComposeRequest:
    sender: Mailbox
    to: tuple[Mailbox, ...] = ()
    cc: tuple[Mailbox, ...] = ()
    bcc: tuple[Mailbox, ...] = ()
    reply_to: tuple[Mailbox, ...] = ()
    subject: str = ""
    text: str | None = None
    html: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True, slots=True)
class ComposedMessage:
    data: bytes
    sender: Address
    recipients: tuple[Address, ...]  # the envelope: To, Cc and Bcc, each once
    smtputf8: bool = False
    body_type: str = "7BIT"  # or 8BITMIME
    subject: str | None = field(default=None)
    authors: tuple[Address, ...] = ()  # the From header's addresses


def parse_mailbox(text: str, path: str = "address") -> Mailbox:
    """``Name <local@domain>`` or ``local@domain`` -> Mailbox; ComposeError naming ``path``."""
    if _LINE_BREAK.search(text):
        raise ComposeError([(path, _ONE_LINE)])
    try:
        header = email.policy.default.header_factory("to", text)
    except _PARSER_ERRORS:
        raise ComposeError([(path, "not a valid address")]) from None
    defects = [d for d in header.defects if not isinstance(d, NonASCIILocalPartDefect)]
    if defects or len(header.addresses) != 1:
        raise ComposeError([(path, "not a valid address")])
    return mailbox(header.addresses[0].addr_spec, header.addresses[0].display_name, path)


def mailbox(address: str, name: str = "", path: str = "address") -> Mailbox:
    if _LINE_BREAK.search(address) or _LINE_BREAK.search(name):
        raise ComposeError([(path, _ONE_LINE)])
    try:
        return Mailbox(parse_address(address.strip()), name.strip())
    except AddressError:
        raise ComposeError([(path, "not a valid address")]) from None


def compose(request: ComposeRequest, *, hostname: str, now: float) -> ComposedMessage:
    """The MIME message for ``request``; ComposeError when a field cannot be used."""
    _check(request)
    everyone = (request.sender, *request.to, *request.cc, *request.bcc, *request.reply_to)
    smtputf8 = any(m.address.needs_smtputf8 for m in everyone)
    policy = email.policy.SMTPUTF8 if smtputf8 else email.policy.SMTP
    message = EmailMessage(policy=policy)
    message["From"] = request.sender.header()
    for name, boxes in (("To", request.to), ("Cc", request.cc), ("Reply-To", request.reply_to)):
        if boxes:
            message[name] = [box.header() for box in boxes]
    if request.subject:
        message["Subject"] = request.subject
    message["Date"] = date_header(now)
    message["Message-ID"] = message_id(new_queue_id(now), hostname)
    for name, value in request.headers:
        message[name] = value
    _add_body(message, request)
    for part in message.walk():
        if part is not message:
            del part["MIME-Version"]  # the email package repeats it in parts
    recipients = {m.address.key: m.address for m in (*request.to, *request.cc, *request.bcc)}
    return ComposedMessage(
        data=message.as_bytes(policy=policy),
        sender=request.sender.address,
        recipients=tuple(recipients.values()),
        smtputf8=smtputf8,
        body_type="8BITMIME" if smtputf8 else "7BIT",
        subject=request.subject or None,
        authors=(request.sender.address,),
    )


def _check(request: ComposeRequest) -> None:
    problems: list[tuple[str, str]] = []
    if not (request.to or request.cc or request.bcc):
        problems.append(("to", "at least one of to, cc and bcc is needed"))
    if request.text is None and request.html is None:
        problems.append(("text", "at least one of text and html is needed"))
    if _LINE_BREAK.search(request.subject):
        problems.append(("subject", _ONE_LINE))
    for name, text in (("text", request.text), ("html", request.html)):
        if text is not None and _SURROGATE.search(text):  # a NUL goes quoted-printable
            problems.append((name, "must not contain a lone surrogate"))
    for name, value in request.headers:
        problems.extend(_header_problems(name, value))
    for index, attachment in enumerate(request.attachments):
        problems.extend(_attachment_problems(f"attachments[{index}]", attachment))
    if problems:
        raise ComposeError(problems)


def _header_problems(name: str, value: str) -> Iterable[tuple[str, str]]:
    path = f"headers.{name}"
    if not _HEADER_NAME.fullmatch(name):
        yield path, "not a valid header name"
    elif name.lower() in RESERVED_HEADERS:
        yield path, "set by postroom or by its own field; not allowed here"
    elif _LINE_BREAK.search(value):
        yield path, _ONE_LINE


def _attachment_problems(path: str, attachment: Attachment) -> Iterable[tuple[str, str]]:
    if not _CONTENT_TYPE.fullmatch(attachment.content_type):
        yield f"{path}.content_type", "not a MIME type like application/pdf"
    if attachment.filename is not None and (
        not attachment.filename or _LINE_BREAK.search(attachment.filename)
    ):
        yield f"{path}.filename", f"must not be empty; {_ONE_LINE}"
    if attachment.content_id is not None and not _CONTENT_ID.fullmatch(attachment.content_id):
        yield f"{path}.content_id", "not a valid Content-ID (printable, no angle brackets)"


def _text_part(message: EmailMessage, text: str, subtype: str, *, alternative: bool) -> None:
    # Quoted-printable keeps non-ASCII text 7-bit clean (the email package would pick 8bit),
    # and a NUL in the text becomes =00: intake never queues a raw NUL (RFC 2045 2.7).
    cte = None if text.isascii() and "\x00" not in text else "quoted-printable"
    if alternative:
        message.add_alternative(text, subtype=subtype, cte=cte)
    else:
        message.set_content(text, subtype=subtype, cte=cte)


def _add_body(message: EmailMessage, request: ComposeRequest) -> None:
    if request.text is not None:
        _text_part(message, request.text, "plain", alternative=False)
    if request.html is not None:
        _text_part(message, request.html, "html", alternative=request.text is not None)
    inline = [a for a in request.attachments if a.content_id is not None]
    if inline:
        body = message.get_body(("html", "plain"))
        assert isinstance(body, EmailMessage)
        for attachment in inline:
            maintype, subtype = attachment.content_type.split("/")
            body.add_related(
                attachment.content,
                maintype,
                subtype,
                cid=f"<{attachment.content_id}>",
                disposition="inline",
                filename=attachment.filename,
            )
    for attachment in request.attachments:
        if attachment.content_id is None:
            maintype, subtype = attachment.content_type.split("/")
            message.add_attachment(
                attachment.content, maintype, subtype, filename=attachment.filename
            )


def prepare_raw(
    data: bytes, *, mail_from: str | None = None, rcpt: Sequence[str] = ()
) -> ComposedMessage:
    """A finished message and its envelope. Without ``mail_from`` the From address is the
    sender; without ``rcpt`` the To, Cc and Bcc addresses are the recipients."""
    fields, _, _ = header_fields(data)
    try:
        head = b"".join(tidy_field(f)[1] for f in fields)
        parsed = BytesHeaderParser(policy=email.policy.default).parsebytes(head)
        sender = _envelope_sender(parsed, mail_from)
        recipients = _envelope_recipients(parsed, rcpt)
        subject = parsed.get("Subject")
        authors = tuple(_header_addresses(parsed, ["From"], "body"))
    except _PARSER_ERRORS as exc:
        if isinstance(exc, ComposeError):
            raise
        raise ComposeError([("body", "the message's header cannot be parsed")]) from None
    everyone = (sender, *recipients)
    return ComposedMessage(
        data=data,
        sender=sender,
        recipients=recipients,
        smtputf8=any(a.needs_smtputf8 for a in everyone),
        body_type="7BIT" if data.isascii() else "8BITMIME",
        subject=None if subject is None else str(subject),
        authors=authors,
    )


def _header_addresses(parsed: EmailMessage, names: Iterable[str], path: str) -> list[Address]:
    found: list[Address] = []
    for name in names:
        for value in parsed.get_all(name, []):
            defects = [d for d in value.defects if isinstance(d, HeaderDefect)]
            if not all(isinstance(d, NonASCIILocalPartDefect) for d in defects):
                raise ComposeError([(path, f"the {name} header holds an invalid address")])
            found.extend(mailbox(a.addr_spec, path=path).address for a in value.addresses)
    return found


def _envelope_sender(parsed: EmailMessage, mail_from: str | None) -> Address:
    if mail_from is not None:
        return mailbox(mail_from, path="mail_from").address
    senders = _header_addresses(parsed, ["From"], "mail_from")
    if len(senders) != 1:
        raise ComposeError([("mail_from", "no mail_from given and no single From address")])
    return senders[0]


def _envelope_recipients(parsed: EmailMessage, rcpt: Sequence[str]) -> tuple[Address, ...]:
    if rcpt:
        given = [mailbox(r, path=f"rcpt[{i}]").address for i, r in enumerate(rcpt)]
    else:
        given = _header_addresses(parsed, ["To", "Cc", "Bcc"], "rcpt")
    unique = {a.key: a for a in given}
    if not unique:
        raise ComposeError([("rcpt", "no rcpt given and no To, Cc or Bcc address")])
    return tuple(unique.values())
