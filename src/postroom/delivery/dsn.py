"""Delivery status notifications (RFC 3464), and when to send one (RFC 3461 4.1).

``build_dsn`` makes the report; the scheduler submits it through intake with the null
sender ``<>`` (RFC 5321 4.5.5), so a DSN never answers a DSN. Its shape (RFC 6522)::

    multipart/report; report-type=delivery-status
    ├── text/plain                 the explanation for people: recipients, reasons, replies
    ├── message/delivery-status    per-message fields, then one field block per recipient
    └── message/rfc822             the original (failure DSNs), or
        text/rfc822-headers        its header only

What is returned (third part), as a table in ``_RETURN_FULL`` and ``RETURN_FULL_LIMIT``:

==========  =====================  ===============================================
kind        RET                    returned
==========  =====================  ===============================================
failure     FULL or not given      the whole message, up to ``RETURN_FULL_LIMIT``;
                                   a larger one: its header only
failure     HDRS                   the header only
delay       any                    the header only (delivery is still going on)
success     any                    the header only (as Postfix does; RET governs
                                   "failed" DSNs, RFC 3461 4.3)
==========  =====================  ===============================================

Addresses with UTF-8 (SMTPUTF8 mail) make an internationalized DSN (RFC 6533):
``message/global-delivery-status`` with the ``utf-8`` address type, and
``message/global`` / ``message/global-headers`` for the original; it must be submitted
with SMTPUTF8. A report holding 8-bit bytes (an 8BITMIME original) is marked
``Content-Transfer-Encoding: 8bit`` and must be submitted with BODY=8BITMIME.
"""

from __future__ import annotations

import re
import secrets
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email import quoprimime
from types import MappingProxyType
from typing import Final, Literal, Protocol

from postroom.ids import message_id, new_queue_id
from postroom.mail.headers import date_header
from postroom.smtp.replies import Reply

__all__ = [
    "ACTIONS",
    "RETURN_FULL_LIMIT",
    "DsnKind",
    "DsnRecipient",
    "build_dsn",
    "wants_dsn",
]

DsnKind = Literal["failure", "delay", "success"]

RETURN_FULL_LIMIT: Final = 1024 * 1024
"""Originals larger than this (1 MiB) come back as their header only, whatever RET says:
the sender has the message, and a bounce should not itself be refused for size."""

ACTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {"failure": "failed", "delay": "delayed", "success": "delivered"}
)
"""The RFC 3464 2.3.3 ``Action`` for each kind of report."""


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    """One recipient's lines in a report."""

    address: str
    action: str  # RFC 3464 2.3.3: failed | delayed | delivered | relayed | expanded
    status: str  # RFC 3463 "x.y.z"
    diagnostic: Reply | None = None  # the last reply (the remote's, or ours)
    remote_mta: str | None = None  # the host that gave that reply, when there was one
    last_attempt: float | None = None
    orcpt: str | None = None  # RFC 3461 ORCPT as given: "addr-type;address"
    will_retry_until: float | None = None  # delay reports: when the queue gives up


@dataclass(frozen=True, slots=True)
class _Kind:
    subject: str
    intro: str  # {host} and {postmaster} are filled in
    returned: str  # Content-Description of the third part
    default_wanted: bool  # RFC 3461 4.1: when NOTIFY was not given
    default_status: str


_FAILURE_INTRO = (
    "This is the mail system at {host}.\n\n"
    "Your message could not be delivered to one or more recipients. The reasons are "
    "given below, and {returned} with this report.\n\n"
    "If you need help, write to {postmaster} and include this report."
)
_DELAY_INTRO = (
    "This is the mail system at {host}.\n\n"
    "Your message has not been delivered yet to the recipients below. Delivery is "
    "still being retried; you do not need to send the message again. You will be told "
    "if it finally fails."
)
_SUCCESS_INTRO = (
    "This is the mail system at {host}.\n\n"
    "Your message was delivered to the recipients below, as you asked."
)

_KINDS: Final[Mapping[str, _Kind]] = MappingProxyType(
    {
        "failure": _Kind(
            subject="Undelivered Mail Returned to Sender",
            intro=_FAILURE_INTRO,
            returned="Undelivered Message",
            default_wanted=True,
            default_status="5.0.0",
        ),
        "delay": _Kind(
            subject="Delayed Mail (still being retried)",
            intro=_DELAY_INTRO,
            returned="Delayed Message",
            default_wanted=True,  # RFC 3461 4.1: the MTA may send delay reports unasked
            default_status="4.0.0",
        ),
        "success": _Kind(
            subject="Successful Mail Delivery Report",
            intro=_SUCCESS_INTRO,
            returned="Delivered Message",
            default_wanted=False,
            default_status="2.0.0",
        ),
    }
)

# (kind, RET) → may the whole message be returned? Anything else: the header only.
_RETURN_FULL: Final[Mapping[tuple[str, str | None], bool]] = MappingProxyType(
    {("failure", None): True, ("failure", "FULL"): True}
)

# Content types: (plain, internationalized). RFC 3464 / RFC 6522, and RFC 6533 3.
_STATUS_TYPE: Final = ("message/delivery-status", "message/global-delivery-status")
_FULL_TYPE: Final = ("message/rfc822", "message/global")
_HEADERS_TYPE: Final = ("text/rfc822-headers", "message/global-headers")
_ADDRESS_TYPE: Final = ("rfc822", "utf-8")

_STATUS_CODE: Final = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_MAX_DIAGNOSTIC: Final = 900  # header lines stay under RFC 5322's 998 octets
_FOLD_AT: Final = 78
_CRLF: Final = "\r\n"


class Original(Protocol):
    """What a report says of the message it reports on (a stored or an outbound one)."""

    @property
    def id(self) -> str: ...
    @property
    def sender(self) -> str: ...
    @property
    def ret(self) -> str | None: ...
    @property
    def envid(self) -> str | None: ...
    @property
    def smtputf8(self) -> bool: ...
    @property
    def received_at(self) -> float: ...


def wants_dsn(kind: DsnKind, notify: str | None, sender: str) -> bool:
    """RFC 3461 4.1 with our defaults: no DSN for the null sender, none for NEVER;
    without NOTIFY, failure and delay reports but no success report."""
    if sender in ("", "<>"):
        return False
    values = {value.strip().upper() for value in (notify or "").split(",") if value.strip()}
    if not values:
        return _KINDS[kind].default_wanted
    return "NEVER" not in values and kind.upper() in values


def build_dsn(
    *,
    kind: DsnKind,
    original: Original,
    original_data: bytes,
    recipients: Sequence[DsnRecipient],
    reporting_mta: str,
    now: float,
    postmaster: str,
    full_limit: int = RETURN_FULL_LIMIT,
) -> bytes:
    """The report as a whole message (CRLF line endings), ready for intake with sender <>."""
    if original.sender in ("", "<>"):
        raise ValueError("a DSN never answers a message from the null sender <>")
    if not recipients:
        raise ValueError("a DSN reports on at least one recipient")
    spec = _KINDS[kind]
    host = _clean(reporting_mta)
    intl = _international(original, recipients)
    ret = original.ret.upper() if original.ret else None
    full = _RETURN_FULL.get((kind, ret), False) and len(original_data) <= full_limit
    returned = original_data if full else _header_of(original_data)
    returned_type = (_FULL_TYPE if full else _HEADERS_TYPE)[intl]
    status_type = _STATUS_TYPE[intl]
    parts = [
        _text_part(kind, recipients, host=host, postmaster=_clean(postmaster), full=full),
        _part(
            status_type,
            "Delivery report",
            _status_fields(kind, original, recipients, host=host, intl=intl).encode(),
        ),
        _part(
            returned_type,
            spec.returned if full else f"{spec.returned} Headers",
            returned,
        ),
    ]
    boundary = _boundary(parts)
    body = _multipart(parts, boundary)
    header = [
        _field("From", f"Mail Delivery System <MAILER-DAEMON@{host}>"),
        _field("To", original.sender),
        _field("Subject", spec.subject),
        _field("Date", date_header(now)),
        _field("Message-ID", message_id(new_queue_id(now), host)),
        _field("Auto-Submitted", "auto-replied"),  # RFC 3834 5
        _field("MIME-Version", "1.0"),
        _field(
            "Content-Type",
            f'multipart/report; report-type={status_type.split("/")[1]}; boundary="{boundary}"',
        ),
    ]
    if not body.isascii():
        header.append(_field("Content-Transfer-Encoding", "8bit"))  # RFC 2045 6.4
    return "".join(header).encode() + _CRLF.encode() + body


def _international(original: Original, recipients: Sequence[DsnRecipient]) -> int:
    """1 when any address in the report needs UTF-8 (RFC 6533), else 0 (a table index)."""
    texts = [
        original.sender,
        *(r.address for r in recipients),
        *(r.orcpt or "" for r in recipients),
    ]
    return int(original.smtputf8 or not all(text.isascii() for text in texts))


def _header_of(data: bytes) -> bytes:
    """The header section of a message: up to the blank line, CRLF-terminated."""
    if data.startswith(b"\r\n"):
        return b""
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[: end + 2]


def _clean(value: str) -> str:
    """One line of text: no CR, LF, NUL or runs of white space (which would break fields)."""
    return " ".join(value.replace("\x00", " ").split())


def _field(name: str, value: str) -> str:
    """``Name: value`` CRLF, folded at white space near 78 characters (RFC 5322 2.2.3)."""
    lines: list[str] = []
    line = f"{name}:"
    for word in _clean(value).split(" "):
        if len(line) + 1 + len(word) > _FOLD_AT and line != f"{name}:":
            lines.append(line)
            line = ""
        line = f"{line} {word}"
    lines.append(line)
    return _CRLF.join(lines) + _CRLF


def _diagnostic(reply: Reply) -> str:
    text = _clean(" ".join(reply.lines))[:_MAX_DIAGNOSTIC]
    return " ".join(str(x) for x in (reply.code, reply.enhanced, text) if x)


def _text(value: str, intl: int) -> str:
    """message/delivery-status is ASCII (RFC 3464 2.1); only the global form has UTF-8."""
    return value if intl else value.encode("ascii", "replace").decode("ascii")


def _status(recipient: DsnRecipient, kind: DsnKind) -> str:
    if _STATUS_CODE.fullmatch(recipient.status):
        return recipient.status
    enhanced = recipient.diagnostic.enhanced if recipient.diagnostic else None
    if enhanced and _STATUS_CODE.fullmatch(enhanced):
        return enhanced
    return _KINDS[kind].default_status


def _typed_address(value: str, intl: int) -> str:
    """``addr-type; address`` for Original-Recipient, from ORCPT's ``addr-type;address``."""
    addr_type, sep, address = value.partition(";")
    if not sep:
        return f"{_ADDRESS_TYPE[intl]}; {value.strip()}"
    return f"{addr_type.strip()}; {address.strip()}"


def _status_fields(
    kind: DsnKind,
    original: Original,
    recipients: Sequence[DsnRecipient],
    *,
    host: str,
    intl: int,
) -> str:
    """The message/delivery-status body: per-message fields, then per-recipient blocks."""
    blocks = [
        [
            _field("Reporting-MTA", f"dns; {host}"),
            _field("X-Postroom-Queue-ID", original.id),
            *([_field("Original-Envelope-Id", original.envid)] if original.envid else []),
            _field("Arrival-Date", date_header(original.received_at)),
        ]
    ]
    blocks.extend(_recipient_fields(r, kind, intl) for r in recipients)
    return _CRLF.join("".join(block) for block in blocks)


def _recipient_fields(recipient: DsnRecipient, kind: DsnKind, intl: int) -> list[str]:
    """RFC 3464 2.3, in its order. Diagnostic-Code has type ``smtp`` when a remote MTA
    answered, else ``X-Postroom`` (our own words, as Postfix writes ``X-Postfix``)."""
    fields: list[str] = []
    if recipient.orcpt:
        fields.append(_field("Original-Recipient", _typed_address(recipient.orcpt, intl)))
    fields.append(_field("Final-Recipient", f"{_ADDRESS_TYPE[intl]}; {recipient.address}"))
    fields.append(_field("Action", recipient.action))
    fields.append(_field("Status", _status(recipient, kind)))
    if recipient.remote_mta:
        fields.append(_field("Remote-MTA", _text(f"dns; {recipient.remote_mta}", intl)))
    if recipient.diagnostic is not None:
        diag_type = "smtp" if recipient.remote_mta else "X-Postroom"
        diagnostic = f"{diag_type}; {_diagnostic(recipient.diagnostic)}"
        fields.append(_field("Diagnostic-Code", _text(diagnostic, intl)))
    if recipient.last_attempt is not None:
        fields.append(_field("Last-Attempt-Date", date_header(recipient.last_attempt)))
    if recipient.will_retry_until is not None and recipient.action == "delayed":
        # RFC 3464 2.3.9: only in "delayed" reports.
        fields.append(_field("Will-Retry-Until", date_header(recipient.will_retry_until)))
    return fields


def _explain(recipient: DsnRecipient) -> str:
    """One paragraph for people: the address and what was said about it."""
    said = f": {_clean(recipient.action)}, status {_clean(recipient.status)}"
    if recipient.diagnostic is not None:
        where = f"host {_clean(recipient.remote_mta)} said" if recipient.remote_mta else "reason"
        said = f": {where}: {_diagnostic(recipient.diagnostic)}"
    line = f"<{_clean(recipient.address)}>{said}"
    return textwrap.fill(
        line,
        width=_FOLD_AT,
        subsequent_indent="    ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _text_part(
    kind: DsnKind,
    recipients: Sequence[DsnRecipient],
    *,
    host: str,
    postmaster: str,
    full: bool,
) -> bytes:
    spec = _KINDS[kind]
    returned = "the message is returned" if full else "the message's header is returned"
    intro = spec.intro.format(host=host, postmaster=postmaster, returned=returned)
    paragraphs = [textwrap.fill(p, width=_FOLD_AT) for p in intro.split("\n\n")]
    paragraphs.extend(_explain(r) for r in recipients)
    retry_until = [r.will_retry_until for r in recipients if r.will_retry_until is not None]
    if retry_until and kind == "delay":
        paragraphs.append(f"Delivery will be retried until {date_header(max(retry_until))}.")
    text = "\n\n".join(paragraphs) + "\n"
    raw = text.encode()
    if raw.isascii():
        content, encoding = text.replace("\n", _CRLF).encode(), "7bit"
    else:  # keep the report 7-bit where we can: quoted-printable, CRLF (RFC 2045 6.7)
        content = quoprimime.body_encode(raw.decode("latin-1"), eol=_CRLF).encode("ascii")
        encoding = "quoted-printable"
    return _part("text/plain; charset=utf-8", "Notification", content, encoding)


def _part(
    content_type: str, description: str, content: bytes, encoding: str | None = None
) -> bytes:
    if encoding is None and not content.isascii():
        encoding = "8bit"  # RFC 2046 5.2.1: message/* parts may be 7bit, 8bit or binary
    head = _field("Content-Description", description) + _field("Content-Type", content_type)
    if encoding:
        head += _field("Content-Transfer-Encoding", encoding)
    return head.encode() + _CRLF.encode() + content


def _boundary(parts: Sequence[bytes]) -> str:
    while True:
        boundary = f"=_postroom_{secrets.token_hex(12)}"
        if not any(boundary.encode() in part for part in parts):
            return boundary


def _multipart(parts: Sequence[bytes], boundary: str) -> bytes:
    """RFC 2046 5.1.1: the CRLF before each delimiter belongs to the delimiter."""
    delimiter = f"\r\n--{boundary}\r\n".encode()
    preamble = b"This is a MIME-encapsulated message.\r\n"
    return preamble + delimiter + delimiter.join(parts) + f"\r\n--{boundary}--\r\n".encode()
