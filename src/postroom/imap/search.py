"""SEARCH (RFC 3501 6.4.4): whether a message matches the criteria.

Flags, sizes, dates, UIDs and sequence numbers come from what the store knows of each
message; header and text keys need the message itself, which the driver reads only when
``needs_content`` says so. Strings match as case-insensitive substrings of the decoded
text (RFC 2047 encoded words in headers; transfer encodings and charsets of text parts),
which is what CHARSET UTF-8 asks for.
"""

from __future__ import annotations

import datetime as dt
import email
import email.header
import email.message
import email.policy
import email.utils
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from postroom.imap import commands as c

__all__ = ["Candidate", "MessageFacts", "any_key", "matches", "needs_content"]


class MessageFacts(Protocol):
    @property
    def uid(self) -> int: ...
    @property
    def flags(self) -> frozenset[str]: ...
    @property
    def internal_date(self) -> float: ...
    @property
    def size(self) -> int: ...
    @property
    def modseq(self) -> int: ...


@dataclass(slots=True)
class Candidate:
    seq: int
    facts: MessageFacts
    largest_seq: int
    largest_uid: int
    content: bytes | None = None  # the message, when a key needs it
    _parsed: email.message.Message | None = field(default=None, repr=False)

    @property
    def parsed(self) -> email.message.Message:
        if self._parsed is None:
            self._parsed = email.message_from_bytes(
                self.content or b"", policy=email.policy.compat32
            )
        return self._parsed


def any_key(key: c.SearchKey, wanted: Callable[[c.SearchKey], bool]) -> bool:
    """Whether ``wanted`` holds for any key in the criteria, however nested."""
    match key:
        case c.AllOf(keys=keys):
            return any(any_key(k, wanted) for k in keys)
        case c.Or(left=left, right=right):
            return any_key(left, wanted) or any_key(right, wanted)
        case c.Not(key=inner):
            return any_key(inner, wanted)
    return wanted(key)


def needs_content(key: c.SearchKey) -> bool:
    return any_key(
        key,
        lambda k: isinstance(k, c.HeaderKey | c.TextKey) or (isinstance(k, c.DateKey) and k.sent),
    )


def matches(key: c.SearchKey, message: Candidate) -> bool:  # noqa: C901 (one case per key kind)
    facts = message.facts
    match key:
        case c.AllOf(keys=keys):
            return all(matches(k, message) for k in keys)
        case c.Or(left=left, right=right):
            return matches(left, message) or matches(right, message)
        case c.Not(key=inner):
            return not matches(inner, message)
        case c.FlagKey(flag=flag, present=present):
            return (flag in facts.flags) == present
        case c.Recency(name=name):
            return name == "OLD"  # the store keeps no \Recent: no message is new
        case c.SizeKey(larger=larger, size=size):
            return facts.size > size if larger else facts.size < size
        case c.SetKey(messages=messages, uid=True):
            return messages.contains(facts.uid, message.largest_uid)
        case c.SetKey(messages=messages):
            return messages.contains(message.seq, message.largest_seq)
        case c.ModSeqKey(modseq=modseq):
            return facts.modseq >= modseq
        case c.DateKey(sent=False, op=op, date=date):
            day = dt.datetime.fromtimestamp(facts.internal_date, dt.UTC).date()
            return _compare(op, day, date)
        case c.DateKey(op=op, date=date):
            sent = _sent_date(message.parsed)
            return sent is not None and _compare(op, sent, date)
        case c.HeaderKey(field=name, value=value):
            return _header_matches(message.parsed, name, value)
        case c.TextKey(where=where, value=value):
            needle = value.casefold()
            if where == "TEXT" and any(
                needle in _decoded(v).casefold() for v in message.parsed.values()
            ):
                return True
            return needle in _body_text(message.parsed).casefold()
    raise AssertionError(key)  # pragma: no cover


def _compare(op: str, day: dt.date, date: dt.date) -> bool:
    if op == "BEFORE":
        return day < date
    if op == "ON":
        return day == date
    return day >= date


def _sent_date(parsed: email.message.Message) -> dt.date | None:
    value = parsed.get("date")
    if value is None:
        return None
    try:
        return email.utils.parsedate_to_datetime(str(value)).date()
    except (TypeError, ValueError, IndexError):
        return None


def _decoded(value: object) -> str:
    """A header value with its encoded words decoded (never raising)."""
    text = str(value)
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except (UnicodeError, LookupError, ValueError, email.errors.HeaderParseError):
        return text


def _header_matches(parsed: email.message.Message, name: str, value: str) -> bool:
    values = parsed.get_all(name) or []
    if not value:
        return bool(values)  # RFC 3501: an empty string matches every message with the field
    needle = value.casefold()
    return any(needle in _decoded(v).casefold() for v in values)


def _body_text(parsed: email.message.Message) -> str:
    out: list[str] = []
    for part in parsed.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        charset = part.get_content_charset() or "utf-8"
        try:
            out.append(payload.decode(charset, "replace"))
        except LookupError:
            out.append(payload.decode("utf-8", "replace"))
    return "\n".join(out)
