"""The author fields of a header block: who a message says it is from.

RFC 5322 3.6.2 and 3.6.6 name the author fields: ``From``, ``Sender``, ``Resent-From`` and
``Resent-Sender``. Whoever may use a domain is decided on these and on the envelope
sender, so the reading here is deliberately wider than any single reader's: every line
of the header section that could be taken for an author field by some receiver counts.

- A field name is matched without regard to case or to white space before the colon
  (``FROM:``, ``From :``, RFC 5322 4.5.3 obs-optional); every instance counts.
- Lines end at CRLF, a bare LF or a bare CR; folded lines are unfolded; the section
  ends at the first empty line, and a line that is not a field is skipped, not taken
  as the end (a lenient receiver might read on).
- Values are parsed by the email package's RFC 5322 parser (groups, comments, quoted
  strings, RFC 2047 display names). What it reports as damaged, an encoded-word inside
  an address (RFC 2047 5: never allowed there, the Mailsploit trick), a domain that is not
  a valid name and a value too long to parse cheaply make the field *unreadable*: who
  decides must then refuse, because another reader may see another address in it.
- A bare local part with no domain (``From: root``, as cron writes it) claims no
  domain; it is kept with ``domain=None``.

Nothing here raises on any input.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from email.errors import (
    InvalidHeaderDefect,
    MessageDefect,
    NonASCIILocalPartDefect,
    ObsoleteHeaderDefect,
)
from email.headerregistry import AddressHeader, HeaderRegistry
from typing import Final, cast

from postroom.errors import AddressError
from postroom.mail.address import parse_domain, to_ascii_domain

__all__ = ["AUTHOR_FIELDS", "Author", "Authors", "read_authors"]

# Lower-case name -> the spelling used in answers.
AUTHOR_FIELDS: Final = {
    "from": "From",
    "sender": "Sender",
    "resent-from": "Resent-From",
    "resent-sender": "Resent-Sender",
}
# A longer author field is refused rather than parsed: the email package's parser is
# pure Python and costs about 10 µs per character on hostile input.
MAX_FIELD_LENGTH: Final = 8 * 1024
MAX_FIELDS: Final = 64  # author fields in one header section
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
# A bare local part is harmless only when it is a plain word: a decoded encoded-word or a
# quoted string in its place could read as an address ("<ceo@example.com>").
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+")
_NO_DOMAIN = "addr-spec local part with no domain"
_registry = HeaderRegistry()
# Applications send from a few addresses over and over, so short field values are
# remembered once parsed (the parse is a pure function of the name and the octets,
# both in the key): at most 256 of up to 1 KiB each.
_REMEMBERED = 256
_REMEMBERED_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class Author:
    field: str  # "From", "Sender", "Resent-From" or "Resent-Sender"
    address: str  # the addr-spec as parsed
    domain: str | None  # A-labels, lower case; None: a bare local part


@dataclass(frozen=True, slots=True)
class Authors:
    """The author addresses in header order, and the fields that could not be read."""

    addresses: tuple[Author, ...] = ()
    unreadable: tuple[str, ...] = ()  # field names, in header order
    problems: tuple[str, ...] = field(default=(), compare=False)  # why, for the log

    def domain_of(self, name: str) -> str | None:
        """The domain of the first address of the first ``name`` field (From: DKIM's d=)."""
        return next((a.domain for a in self.addresses if a.field == name), None)


def read_authors(head: bytes, *, complete: bool = True) -> Authors:
    """The author addresses of ``head`` (a header section, or a whole message).

    ``complete=False``: ``head`` was cut short, so a field may lie beyond it; the
    section is unreadable then unless its end (an empty line) is within ``head``."""
    fields, ended = _author_fields(head)
    addresses: list[Author] = []
    unreadable: list[str] = []
    problems: list[str] = []
    if not ended and not complete:
        unreadable.append("header")
        problems.append("the header section is too long to check")
    if len(fields) > MAX_FIELDS:
        unreadable.append(fields[MAX_FIELDS][0])
        problems.append(f"more than {MAX_FIELDS} author fields")
        fields = fields[:MAX_FIELDS]
    for name, value in fields:
        found, problem = _parse(name, value)
        if problem is None:
            addresses.extend(found)
        else:
            unreadable.append(name)
            problems.append(f"{name}: {problem}")
    return Authors(tuple(addresses), tuple(unreadable), tuple(problems))


def _author_fields(head: bytes) -> tuple[list[tuple[str, bytes]], bool]:
    """(field name, unfolded raw value) of each author field, and whether the section
    ended (an empty line) within ``head``."""
    fields: list[tuple[str, list[bytes]]] = []
    current: list[bytes] | None = None  # the value lines of the author field being read
    ended = False
    lines = _LINE_BREAK.split(head)
    if not lines[-1]:
        lines.pop()  # the break that ends the last line, not an empty line
    for line in lines:
        if not line:
            ended = True
            break
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        current = None
        name, colon, value = line.partition(b":")
        spelled = AUTHOR_FIELDS.get(name.strip().decode("latin-1").lower()) if colon else None
        if spelled is not None:
            current = [value]
            fields.append((spelled, current))
    return [(name, b"".join(lines)) for name, lines in fields], ended


def _parse(name: str, raw: bytes) -> tuple[tuple[Author, ...], str | None]:
    """The addresses of one field, or the reason it cannot be read."""
    if len(raw) <= _REMEMBERED_LENGTH:
        return _parse_remembered(name, raw)
    return _parse_value(name, raw)


def _parse_value(name: str, raw: bytes) -> tuple[tuple[Author, ...], str | None]:
    if len(raw) > MAX_FIELD_LENGTH:
        return (), f"longer than {MAX_FIELD_LENGTH} octets"
    # Undecodable octets become surrogates, which the parser reports as a defect.
    value = raw.decode("utf-8", "surrogateescape").strip()
    try:
        # The registry makes an address header for each author field name.
        header = _registry(name, value)
        addresses, defects = cast("AddressHeader", header).addresses, header.defects
    except Exception:  # the parser's own failures (deep nesting: RecursionError)
        return (), "cannot be parsed"
    if (problem := _serious_defect(defects)) is not None:
        return (), problem
    found: list[Author] = []
    for address in addresses:
        author, problem = _author(name, address.username, address.domain)
        if problem is not None:
            return (), problem
        if author is not None:
            found.append(author)
    return tuple(found), None


_parse_remembered = functools.lru_cache(maxsize=_REMEMBERED)(_parse_value)


def _serious_defect(defects: tuple[MessageDefect, ...]) -> str | None:
    for defect in defects:
        benign = (
            isinstance(defect, ObsoleteHeaderDefect | NonASCIILocalPartDefect)
            or (isinstance(defect, InvalidHeaderDefect) and str(defect) == _NO_DOMAIN)
        )  # fmt: skip
        if not benign:
            return str(defect) or type(defect).__name__
    return None


def _author(name: str, local: str, domain: str) -> tuple[Author | None, str | None]:
    if "=?" in local or "=?" in domain:
        return None, "an encoded-word inside an address"
    if not domain:
        if not local:
            return None, None  # an empty group entry or "<>": no address at all
        if not _PLAIN_LOCAL.fullmatch(local):
            return None, f"{local!r} is not an address"
        return Author(name, local, None), None
    try:
        ascii_domain = to_ascii_domain(parse_domain(domain))
    except AddressError:
        return None, f"{domain!r} is not a domain name"
    return Author(name, f"{local}@{domain}", ascii_domain), None
