"""Returned mail, read: a delivery report or an auto-reply, told apart (sans-IO).

``read_returned(data)`` takes a whole message as bytes and says what it is:

- ``BOUNCE``: an RFC 3464 report (``multipart/report; report-type=delivery-status``),
  or one of the plain-text notices that Exim, qmail, Exchange, Gmail and older Postfix or
  Sendmail set-ups still send. Each failed (or delayed) recipient gets its action, status
  code and diagnostic; the original's Message-ID is read from the returned copy when it
  has one.
- ``AUTO_REPLY``: a vacation or out-of-office answer (RFC 3834 ``Auto-Submitted``, the
  headers and subjects responders use), which says nothing about the address.
- ``OTHER``: neither; a person's answer sent to the bounce address.

A DSN is itself ``Auto-Submitted: auto-replied`` (RFC 3834 5.1, RFC 3464 does not forbid
it), so the report's structure is looked at before the auto-reply signs.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import Message
from enum import StrEnum

__all__ = ["HARD_BOUNCE_CLASS", "BouncedRecipient", "Returned", "ReturnedKind", "read_returned"]


class ReturnedKind(StrEnum):
    BOUNCE = "bounce"
    AUTO_REPLY = "auto_reply"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class BouncedRecipient:
    address: str  # lower-cased addr-spec, as the report names it (Original- or Final-Recipient)
    action: str  # RFC 3464 2.3.3: failed | delayed | delivered | relayed | expanded
    status: str  # enhanced status code, "5.1.1"
    diagnostic: str  # the remote reply or the notice's words, one line
    remote_mta: str | None = None

    @property
    def hard(self) -> bool:
        """A permanent failure that says the address itself is bad: RFC 3463 5.1.x (no
        such user, no such domain, a bad address), the rule postroom's own delivery
        applies to put an address on the suppression list. A full or disabled mailbox
        (5.2.x) and policy refusals (5.7.x) are not the address's fault."""
        return self.action == "failed" and self.status.startswith(HARD_BOUNCE_CLASS)


# RFC 3463: X.1.Y is about the address (bad mailbox, bad domain, moved, null MX); a
# 5.7.x refusal is the remote's policy about this message, not a dead address. The one
# rule for our own bounces, returned mail and provider events alike.
HARD_BOUNCE_CLASS = "5.1."


@dataclass(frozen=True, slots=True)
class Returned:
    kind: ReturnedKind
    recipients: tuple[BouncedRecipient, ...] = ()
    original_message_id: str | None = None  # "<id@host>" of the message that bounced
    reporting_mta: str | None = None


def read_returned(data: bytes) -> Returned:
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    standard = _standard_report(message)
    if standard is not None:
        return standard
    plain = _plain_notice(message)
    if plain is not None:
        return plain
    if _auto_reply(message):
        return Returned(ReturnedKind.AUTO_REPLY)
    return Returned(ReturnedKind.OTHER)


# --- RFC 3464 ---------------------------------------------------------------------------


def _standard_report(message: Message) -> Returned | None:
    if message.get_content_type() != "multipart/report":
        return None
    if (message.get_param("report-type") or "").lower() != "delivery-status":  # type: ignore[union-attr]
        return None
    status_part = next(
        (p for p in message.walk() if p.get_content_type() == "message/delivery-status"), None
    )
    if status_part is None:
        return None
    blocks = _status_blocks(status_part)
    if not blocks:
        return None
    per_message, per_recipient = blocks[0], blocks[1:]
    recipients = tuple(r for r in (_report_recipient(b) for b in per_recipient) if r is not None)
    if not recipients:
        return None
    return Returned(
        ReturnedKind.BOUNCE,
        recipients,
        original_message_id=_original_message_id(message),
        reporting_mta=_typed_value(per_message.get("Reporting-MTA")),
    )


def _status_blocks(part: Message) -> list[Message]:
    """The per-message block and the per-recipient blocks (RFC 3464 2.1). The email
    package parses each block as a Message; a body it could not split is read here."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        return [p for p in payload if isinstance(p, Message)]
    raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    chunks = re.split(r"\r?\n[ \t]*\r?\n", text.strip())
    return [email.message_from_string(c + "\n\n", policy=email.policy.compat32) for c in chunks]


def _report_recipient(block: Message) -> BouncedRecipient | None:
    address = _typed_value(block.get("Original-Recipient")) or _typed_value(
        block.get("Final-Recipient")
    )
    action = (block.get("Action") or "").strip().lower()
    if not address or not action:
        return None
    status = _status_code(block.get("Status") or "") or ("5.0.0" if action == "failed" else "4.0.0")
    diagnostic = _typed_value(block.get("Diagnostic-Code")) or ""
    return BouncedRecipient(
        address=_bare(address),
        action=action,
        status=status,
        diagnostic=_one_line(diagnostic),
        remote_mta=_typed_value(block.get("Remote-MTA")),
    )


def _typed_value(value: object) -> str | None:
    """``rfc822; user@example.com`` → ``user@example.com`` (RFC 3464 2.1.2 address-type)."""
    if value is None:
        return None
    text = _one_line(str(value))
    _, sep, rest = text.partition(";")
    return (rest if sep else text).strip() or None


# --- plain-text notices -------------------------------------------------------------------

# Who sends notices, and what they are called: the first decides whether to read the body.
_NOTICE_FROM = re.compile(r"mailer-daemon|postmaster|mail delivery (sub)?system", re.I)
_NOTICE_SUBJECT = re.compile(
    r"undeliver|returned mail|delivery (status notification|failure|has failed)"
    r"|mail delivery failed|failure notice|delivery failure|non[- ]?delivery|could not be delivered"
    r"|warning: could not send|delayed mail",
    re.I,
)
# Where the notice ends and the copy of the original begins.
_COPY_MARKERS = re.compile(
    r"^(?:-+ ?(?:below this line is a copy of the message"
    r"|this is a copy of the (?:message|headers)"
    r"|original message(?: headers)?|the header of the original message is following)"
    r"|original message headers:"
    r"|-+ ?forwarded message)",
    re.I | re.M,
)
_ADDRESS = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
# A line that names a recipient: "  user@example.com", "<user@example.com>:" (Postfix,
# qmail), "user@example.com: host ... said" (Postfix's plain variant).
_RECIPIENT_LINE = re.compile(rf"^[ \t]*<?({_ADDRESS})>?(?::|[ \t]*$)", re.M)
_RECIPIENT_INLINE = re.compile(
    rf"(?:(?:wasn't|was not|couldn't be|could not be|cannot be) delivered to"
    rf"|delivery to(?: the following recipient)?(?: has)? failed[^<\n]*?)\s*<?({_ADDRESS})>?",
    re.I,
)
_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_REPLY_CODE = re.compile(r"(?<!\d)([245])\d\d(?=[ -])")
_TEMPORARY_WORDS = re.compile(
    r"temporar|will (?:keep|continue) (?:trying|to try)|still trying|delivery incomplete"
    r"|has been delayed|delivery delayed|not yet been delivered|retry",
    re.I,
)
_NO_SUCH_USER = re.compile(
    r"no such (?:user|mailbox|recipient|address)|user(?:name)? unknown|unknown (?:user|recipient)"
    r"|does not exist|doesn't exist|address (?:couldn't|could not) be found|not found"
    r"|invalid (?:recipient|mailbox|address)|mailbox unavailable|no mailbox",
    re.I,
)
_DIAGNOSTIC_LINE = re.compile(
    r"(?:said|returned|error|reply|response)[^\n]*?\b([245]\d\d[ -].*)$|^\s*([245]\d\d[ -].*)$",
    re.I | re.M,
)


def _plain_notice(message: Message) -> Returned | None:
    looks = _NOTICE_FROM.search(message.get("From") or "") or _NOTICE_SUBJECT.search(
        message.get("Subject") or ""
    )
    if not looks:
        return None
    text = _notice_text(message)
    end = _COPY_MARKERS.search(text)
    notice = text[: end.start()] if end else text
    ours = {a.lower() for a in re.findall(_ADDRESS, " ".join(_own_addresses(message)))}
    recipients = tuple(_notice_recipients(notice, ours))
    if not recipients:
        return None
    return Returned(
        ReturnedKind.BOUNCE,
        recipients,
        original_message_id=_original_message_id(message, text[end.start() :] if end else ""),
    )


def _notice_recipients(notice: str, ours: set[str]) -> Iterator[BouncedRecipient]:
    """Each recipient the notice names, with the words that follow it up to the next one."""
    found = sorted(
        {m.start(1): m.group(1) for m in _RECIPIENT_LINE.finditer(notice)}.items()
        | {m.start(1): m.group(1) for m in _RECIPIENT_INLINE.finditer(notice)}.items()
    )
    temporary = bool(_TEMPORARY_WORDS.search(notice))
    seen: dict[str, BouncedRecipient] = {}
    for index, (start, address) in enumerate(found):
        key = address.lower().rstrip(".")
        if key in ours:
            continue
        stop = found[index + 1][0] if index + 1 < len(found) else len(notice)
        block = notice[start + len(address) : stop]
        parsed = _notice_recipient(key, block, temporary)
        if key not in seen or (seen[key].diagnostic == "" and parsed.diagnostic):
            seen[key] = parsed  # Exchange names each address twice; keep the one with the reply
    yield from seen.values()


def _notice_recipient(address: str, block: str, temporary: bool) -> BouncedRecipient:
    diagnostic_match = _DIAGNOSTIC_LINE.search(block)
    diagnostic = ""
    if diagnostic_match:
        diagnostic = _one_line(diagnostic_match.group(1) or diagnostic_match.group(2))
    status = _status_code(block)
    if status is None:
        reply = _REPLY_CODE.search(diagnostic or block)
        klass = reply.group(1) if reply else ("4" if temporary else "5")
        # A notice with no enhanced code (qmail, old Sendmail) says "no such user" in
        # words: RFC 3463's 5.1.1, so it counts as the address being bad.
        status = f"{klass}.1.1" if klass == "5" and _NO_SUCH_USER.search(block) else f"{klass}.0.0"
    action = "delayed" if status.startswith("4") or (temporary and not diagnostic) else "failed"
    return BouncedRecipient(address=address, action=action, status=status, diagnostic=diagnostic)


def _notice_text(message: Message) -> str:
    """The notice's text: its first text/plain part (or an HTML one stripped of tags),
    then what follows it, so the copy of the original stays after the notice."""
    texts: list[str] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        kind = part.get_content_type()
        if kind in ("text/plain", "text/html", "message/rfc822", "text/rfc822-headers"):
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            text = payload.decode(part.get_content_charset() or "utf-8", "replace")
            if kind == "text/html":
                text = re.sub(r"<br\s*/?>|</p>|</div>|</tr>", "\n", text, flags=re.I)
                text = re.sub(r"<[^>]+>", " ", text).replace("&lt;", "<").replace("&gt;", ">")
            if kind in ("message/rfc822", "text/rfc822-headers"):
                text = "------ This is a copy of the message\n" + text
            texts.append(text)
    return "\n".join(texts).replace("\r\n", "\n")


def _own_addresses(message: Message) -> Iterable[str]:
    """The notice's own From and To: the daemon and our bounce address, never a bounced
    recipient."""
    for name in ("From", "To", "Reply-To", "Return-Path", "Delivered-To"):
        yield from (message.get_all(name) or [])


# --- the original message ------------------------------------------------------------------

_MESSAGE_ID = re.compile(r"^Message-ID:[ \t]*(<[^>\s]+>)", re.I | re.M)


def _original_message_id(message: Message, copy: str = "") -> str | None:
    """The returned original's Message-ID: from its message/rfc822 or
    text/rfc822-headers part (RFC 3464 2), else from the copy after a plain notice's
    marker."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                copy = inner[0].as_string() + copy
        elif kind == "text/rfc822-headers":
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                copy = raw.decode("utf-8", "replace") + copy
    copy = copy.replace("\r\n", "\n")
    found = _MESSAGE_ID.search(copy)
    return found.group(1) if found else None


# --- auto-replies ----------------------------------------------------------------------------

_AUTO_SUBJECT = re.compile(
    r"^(?:auto(?:matic)?[ -]?(?:reply|response|antwort)|out of (?:the )?office|vacation"
    r"|abwesenheit|r[ée]ponse automatique|respuesta autom[áa]tica|risposta automatica"
    r"|i am (?:currently )?(?:out|away)|away from (?:my|the) office|autoreply|auto:)",
    re.I,
)
_AUTO_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress-Reply")


def _auto_reply(message: Message) -> bool:
    """RFC 3834 5.1 ``Auto-Submitted`` other than ``no``, the fields responders add, or a
    subject that says so (Exchange and Gmail set neither on every answer)."""
    submitted = (message.get("Auto-Submitted") or "no").strip().lower()
    if submitted.split(";")[0].strip() != "no":
        return True
    if any(message.get(name) for name in _AUTO_HEADERS):
        return True
    if (message.get("Precedence") or "").strip().lower() == "auto_reply":
        return True
    if (message.get("X-Auto-Response-Suppress") or "").strip().lower() == "all" and (
        message.get("X-MS-Exchange-Generated-Message-Source") or ""
    ):
        return True
    return bool(_AUTO_SUBJECT.search(_one_line(message.get("Subject") or "")))


# --- small helpers ------------------------------------------------------------------------------


def _status_code(text: str) -> str | None:
    match = _ENHANCED.search(text)
    return ".".join(match.groups()) if match else None


def _bare(address: str) -> str:
    return address.strip().strip("<>").lower()


def _one_line(text: str) -> str:
    return " ".join(text.split())
