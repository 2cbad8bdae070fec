"""Intake's clean-up (Postfix's cleanup(8)): one set of rules over every message,
whichever door it came in by (SMTP on any listener, the HTTP API, sendmail, ``postroom
send``, DSNs). Sans-IO: body chunks in, canonical chunks out; a header block in, the
cleaned header block and the facts about it out.

Rules, by source:

* Line endings (``LINE_ENDINGS``): only CRLF ends a line, and no NUL is ever queued
  (RFC 5321 2.3.8; a bare CR, a bare LF or a NUL is how a message smuggles a second one
  past a receiver that reads line ends differently). SMTP refuses them (``554 5.6.0``;
  the DATA reader has refused first). Whole messages handed over by a program (API,
  sendmail, ``postroom send``, DSNs) have bare LF and bare CR turned into CRLF, as
  sendmail does with a file, and end in CRLF; a NUL is refused.
* The header block ends at the first empty line, or at the first line that is neither
  a field (``name:``) nor a continuation line: there an empty line is inserted and the
  rest is body (Postfix's rule). So a message with a line without a colon, or with no
  header at all, is stored with a header block every parser reads the same way.
* Field names lose the obsolete white space before their colon (``Subject :``, RFC 5322
  4.5.8), so every reader sees the same name.
* ``Authentication-Results`` fields naming our authserv-id are removed from mail of any
  source: only our own checks write them (RFC 8601 5).
* Submitted mail (a principal's, a program's, our own DSNs): ``Bcc`` fields are removed,
  the envelope carries those recipients (RFC 5322 3.6.3); ``Date`` and ``Message-ID``
  are added when missing (RFC 6409 8.2, 8.3), from ``mail.headers.date_header`` and
  ``ids.message_id`` with the message's queue id.
* postroom's request fields (``X-Postroom-Track``, ``X-Postroom-Unsubscribe``,
  ``X-Postroom-Tag``, ``X-Postroom-Metadata``) are removed from mail of any source, never
  sent on; a submitted message's values are handed to intake (``CleanHeader.requests``),
  which acts on them. Those of mail relayed to us from outside are dropped unread: a
  stranger cannot label or track our mail.
"""

from __future__ import annotations

import email.policy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from postroom.ids import message_id
from postroom.mail.envelope import Source, SourceKind
from postroom.mail.headers import date_header
from postroom.mailauth.results import authserv_id_of
from postroom.smtp import replies
from postroom.smtp.receiver import LineEndings as CrlfCheck
from postroom.smtp.replies import Reply

__all__ = [
    "LINE_ENDINGS",
    "REQUEST_FIELDS",
    "CleanHeader",
    "LineEndings",
    "LineFixer",
    "Rules",
    "clean_header",
    "header_fields",
    "rules_for",
    "tidy_field",
]


class LineEndings(StrEnum):
    REFUSE = "refuse"  # a bare CR or LF refuses the message
    NORMALISE = "normalise"  # a bare CR or LF becomes CRLF


LINE_ENDINGS: Final[Mapping[SourceKind, LineEndings]] = {
    SourceKind.SMTP: LineEndings.REFUSE,  # RFC 5321 2.3.8: the client must send CRLF
    SourceKind.API: LineEndings.NORMALISE,
    SourceKind.SENDMAIL: LineEndings.NORMALISE,  # also `postroom send`
    SourceKind.DSN: LineEndings.NORMALISE,
}

_FIELD = re.compile(rb"([!-9;-~]+)([ \t]*):")  # RFC 5322 2.2 ftext, then obs WSP
_BARE = re.compile(rb"\r\n|\r|\n")
_FOLD = re.compile(rb"\r\n[ \t]")  # RFC 5322 2.2.3: a line break before white space
_REMOVED_WHEN_SUBMITTED = frozenset({b"bcc"})
_COMPLETED = (b"date", b"message-id")
REQUEST_FIELDS = frozenset(
    {b"x-postroom-track", b"x-postroom-unsubscribe", b"x-postroom-tag", b"x-postroom-metadata"}
)


@dataclass(frozen=True, slots=True)
class Rules:
    authserv_id: str  # our hostname, as our Authentication-Results name us
    hostname: str  # the right side of the Message-IDs we add
    submitted: bool  # from a principal, a program or postroom itself: not relayed to us
    line_endings: LineEndings


def rules_for(source: Source, *, authenticated: bool, hostname: str) -> Rules:
    """The clean-up a message from ``source`` gets; ``authenticated``: a principal
    (AUTH user, trusted network, API key, Unix user) submitted it."""
    return Rules(
        authserv_id=hostname,
        hostname=hostname,
        submitted=authenticated or source.kind is not SourceKind.SMTP,
        line_endings=LINE_ENDINGS[source.kind],
    )


class LineFixer:
    """Makes a body's line endings canonical chunk by chunk (or finds that they are not),
    with the SMTP reader's check (``smtp.receiver.LineEndings``: counted in C, so a clean
    chunk costs little and is passed on as it is). When normalising, a CR at the end of a
    chunk waits for the next one, which may start with its LF. ``refusal`` after
    ``finish``."""

    def __init__(self, mode: LineEndings) -> None:
        self._mode = mode
        self._check = CrlfCheck()
        self._held_cr = False
        self._ends_in_crlf = True
        self._nul = False

    def feed(self, chunk: bytes) -> bytes:
        if self._mode is LineEndings.REFUSE:
            self._check.feed(chunk)
            return chunk
        if self._held_cr:
            chunk, self._held_cr = b"\r" + chunk, False
        if chunk.endswith(b"\r"):
            chunk, self._held_cr = chunk[:-1], True
        if not chunk:
            return b""
        self._nul = self._nul or b"\x00" in chunk
        # Once one was bare, every chunk is rewritten. A CR still at the end is followed
        # by the held one: bare too.
        if not self._check.feed(chunk) or chunk.endswith(b"\r"):
            chunk = _BARE.sub(b"\r\n", chunk)
        self._ends_in_crlf = chunk.endswith(b"\n")
        return chunk

    def finish(self) -> bytes:
        """What is left to write: a held CR, and a last CRLF when normalising."""
        if self._mode is LineEndings.REFUSE:
            self._check.finish()
            return b""
        rest = b"\r\n" if self._held_cr or not self._ends_in_crlf else b""
        self._held_cr, self._ends_in_crlf = False, True
        return rest

    @property
    def refusal(self) -> Reply | None:
        if self._nul:
            return replies.NUL_IN_MESSAGE
        if self._mode is LineEndings.REFUSE and not self._check.clean:
            return replies.BAD_LINE_ENDINGS  # says "bare <CR>, bare <LF> or NUL"
        return None


def header_fields(data: bytes) -> tuple[list[bytes], int, bool]:
    """The header block at the start of ``data``: its fields (each with its continuation
    lines and line ends, as given), the bytes they take, and whether an empty line ends
    them (else a non-field line, or the end of the data, does). Any line end counts, so
    a door can read a message before intake has made it canonical."""
    fields: list[bytes] = []
    offset = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith((b"\n", b"\r")):
            break  # cut off (the header block is longer than what was read): body
        if line in (b"\r\n", b"\n", b"\r"):
            return fields, offset + len(line), True
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        elif _FIELD.match(line):
            fields.append(line)
        else:
            break
        offset += len(line)
    return fields, offset, False


@dataclass(frozen=True, slots=True)
class CleanHeader:
    consumed: int  # bytes at the start of the message that ``head`` replaces
    head: bytes | None  # the new header block with its empty line; None: unchanged
    added: bytes  # fields to prepend (Date, Message-ID), CRLF-terminated
    message_id: str | None  # the Message-ID value the message leaves with
    removed: tuple[str, ...]  # lower-case names of the fields removed
    subject: str | None = None  # the first Subject, unfolded, encoded words decoded
    # A submitted message's request fields (lower-case name, unfolded value), in order.
    requests: tuple[tuple[str, str], ...] = ()


def clean_header(start: bytes, rules: Rules, *, now: float, queue_id: str) -> CleanHeader:
    """``start``: the first bytes of a canonical message (at least its header block when
    it has one; ``Submission`` reads up to 1 MiB)."""
    fields, consumed, ended = header_fields(start)
    kept: list[bytes] = []
    removed: list[str] = []
    found_id: str | None = None
    subject: str | None = None
    requests: list[tuple[str, str]] = []
    for original in fields:
        name, field = tidy_field(original)
        if name in REQUEST_FIELDS:
            removed.append(name.decode())
            if rules.submitted:
                requests.append((name.decode(), _unfold(field.split(b":", 1)[1])))
            continue
        if _removed(name, field, rules):
            removed.append(name.decode())
            continue
        if name == b"message-id" and found_id is None:
            found_id = _unfold(field.split(b":", 1)[1])
        elif name == b"subject" and subject is None:
            subject = _text(_unfold(field.split(b":", 1)[1]))
        kept.append(field)
    added = b""
    if rules.submitted:
        present = {tidy_field(field)[0] for field in kept}
        if b"date" not in present:
            added += f"Date: {date_header(now)}\r\n".encode()
        if b"message-id" not in present:
            found_id = message_id(queue_id, rules.hostname)
            added += f"Message-ID: {found_id}\r\n".encode()
    head = b"".join(kept) + b"\r\n"
    unchanged = ended and head == start[:consumed]
    return CleanHeader(
        consumed=consumed,
        head=None if unchanged else head,
        added=added,
        message_id=found_id,
        removed=tuple(removed),
        subject=subject,
        requests=tuple(requests),
    )


def tidy_field(field: bytes) -> tuple[bytes, bytes]:
    """The field's lower-case name, and the field without white space before its colon
    (the form intake stores, so a door reading the header sees the names intake sees)."""
    match = _FIELD.match(field)
    assert match is not None  # header_fields gives only fields
    if match.group(2):  # "Subject :" -> "Subject:"
        field = match.group(1) + field[match.end() - 1 :]
    return match.group(1).lower(), field


def _removed(name: bytes, field: bytes, rules: Rules) -> bool:
    if name == b"authentication-results":  # RFC 8601 5: only we write ours
        return authserv_id_of(field) == rules.authserv_id.lower().encode()
    if not rules.submitted:
        return False
    if name in _REMOVED_WHEN_SUBMITTED:
        return True
    # An empty Date or Message-ID is no value: it is replaced by one of ours.
    return name in _COMPLETED and not field.split(b":", 1)[1].strip()


def _text(value: str) -> str:
    """A header value as people read it: RFC 2047 encoded words decoded (only parsed
    when there are any: most subjects are plain)."""
    if "=?" not in value:
        return value
    try:
        return str(email.policy.default.header_fetch_parse("Subject", value))
    except Exception:  # the email package trips on some malformed words: keep it as written
        return value


def _unfold(value: bytes) -> str:
    return _FOLD.sub(b" ", value).strip().decode("utf-8", "replace")
