"""A message's MIME structure from its octets, in one streaming pass (RFC 3501 6.4.5,
7.4.2; RFC 2045, 2046).

``scan(chunks)`` reads the message (CRLF line endings) chunk by chunk and keeps only
what describes it: for every entity the offsets of its header, body and end, its line
count, and its header block (up to ``MAX_HEADER`` octets). A 20 MiB message costs a few
kilobytes here; the octets a FETCH sends are read again from the store between the
offsets ``locate`` gives (``sections``).

``envelope`` and ``bodystructure`` render the FETCH items from that. Header values go
out as they are in the message (encoded words undecoded), as RFC 3501 asks.
"""

from __future__ import annotations

import email.message
import email.utils
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from postroom.imap import responses as rs

__all__ = ["MAX_HEADER", "Entity", "bodystructure", "envelope", "header_fields", "scan"]

MAX_HEADER: Final = 256 * 1024  # octets of one header block kept for parsing
MAX_DEPTH: Final = 32  # nested multiparts and message/rfc822 followed; deeper is a leaf
MAX_PARTS: Final = 5000  # entities in one message; later boundaries are plain text
_FIELD_NAME: Final = re.compile(rb"[!-9;-~]+\Z")  # RFC 5322 ftext
_LINE_MAX: Final = 1000  # longest boundary line looked at (RFC 2046: 70-char boundaries)


@dataclass(eq=False, slots=True)
class Entity:
    """One MIME entity: a message or a body part. Offsets are into the CRLF octets."""

    start: int  # where its header starts
    body_start: int = -1  # where its body starts (after the blank line); -1: in the header
    end: int = -1  # where its body ends; -1: still open
    lines: int = 0  # lines of its body
    header: bytearray = field(default_factory=bytearray)
    children: list[Entity] = field(default_factory=list)
    message: Entity | None = None  # a message/rfc822 body, parsed
    boundary: bytes | None = None  # a multipart's, while it is open
    closed: bool = False  # a multipart past its close delimiter
    depth: int = 0
    _parsed: email.message.Message | None = None

    @property
    def mime(self) -> email.message.Message:
        """The header block parsed for its MIME fields (not for display)."""
        if self._parsed is None:
            msg = email.message.Message()
            for name, value in header_fields(bytes(self.header)):
                if name.lower().startswith("content-"):
                    msg[name] = value.decode("utf-8", "replace")
            self._parsed = msg
        return self._parsed

    @property
    def content_type(self) -> tuple[str, str]:
        maintype, _, subtype = self.mime.get_content_type().partition("/")
        return maintype.upper(), subtype.upper()

    @property
    def is_multipart(self) -> bool:
        return bool(self.children) or self.content_type[0] == "MULTIPART"

    @property
    def size(self) -> int:
        return max(0, self.end - self.body_start)


def header_fields(header: bytes) -> list[tuple[str, bytes]]:
    """``(name, unfolded value)`` of each field in a header block, raw octets."""
    fields: list[tuple[str, bytearray]] = []
    for line in header.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1][1].extend(line)
            continue
        name, colon, value = line.partition(b":")
        if colon and _FIELD_NAME.match(name):
            fields.append((name.decode("ascii"), bytearray(value.strip(b" \t"))))
    return [(name, bytes(value)) for name, value in fields]


class _Scanner:
    def __init__(self) -> None:
        self.root = Entity(0)
        self.open: list[Entity] = [self.root]  # from the root to the innermost
        self.pos = 0
        self.parts = 1
        self.partial = bytearray()  # the current line until its LF (its start)
        self.partial_length = 0  # the current line's length so far

    def feed(self, chunk: bytes) -> None:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                self._hold(chunk[start:])
                return
            self._hold(chunk[start : end + 1])
            start = end + 1
            line, length = bytes(self.partial), self.partial_length
            self.partial, self.partial_length = bytearray(), 0
            self._take(line, length)
            self.pos += length

    def _hold(self, data: bytes) -> None:
        """Part of a line: its length counts; only its start can matter (boundaries and
        header fields), so a long line is not kept whole."""
        keep = MAX_HEADER + _LINE_MAX - len(self.partial)
        if keep > 0:
            self.partial += data[:keep]
        self.partial_length += len(data)

    def finish(self) -> Entity:
        if self.partial or self.partial_length:
            line, length = bytes(self.partial), self.partial_length
            self.partial, self.partial_length = bytearray(), 0
            self._take(line, length)
            self.pos += length
        for entity in self.open:
            self._close(entity, self.pos)
        return self.root

    def _take(self, line: bytes, length: int) -> None:
        if line.startswith(b"--") and self._boundary(line):
            return
        self._count_line(self.open)
        entity = self.open[-1]
        if entity.body_start < 0:
            self._header_line(entity, line, length)

    @staticmethod
    def _count_line(entities: list[Entity]) -> None:
        for entity in entities:
            if entity.body_start >= 0:
                entity.lines += 1

    def _header_line(self, entity: Entity, line: bytes, length: int) -> None:
        if line in (b"\r\n", b"\n"):
            entity.body_start = self.pos + length
            self._body_begins(entity)
            return
        room = MAX_HEADER - len(entity.header)
        if room > 0:
            entity.header += line[:room]

    def _body_begins(self, entity: Entity) -> None:
        if entity.depth >= MAX_DEPTH or self.parts >= MAX_PARTS:
            return
        maintype, subtype = entity.content_type
        if maintype == "MULTIPART":
            boundary = entity.mime.get_param("boundary")
            if isinstance(boundary, str) and 0 < len(boundary) <= 200:
                entity.boundary = boundary.encode("utf-8", "replace")
        elif (maintype, subtype) in (("MESSAGE", "RFC822"), ("MESSAGE", "GLOBAL")):
            inner = Entity(entity.body_start, depth=entity.depth + 1)
            entity.message = inner
            self.parts += 1
            self.open.append(inner)

    def _boundary(self, line: bytes) -> bool:
        text = line.rstrip(b"\r\n").rstrip(b" \t")
        for index in range(len(self.open) - 1, -1, -1):
            container = self.open[index]
            boundary = container.boundary
            if boundary is None or container.closed or not text.startswith(b"--" + boundary):
                continue
            rest = text[2 + len(boundary) :]
            if rest not in (b"", b"--"):
                continue
            for inner in self.open[index + 1 :]:
                self._close(inner, self.pos - 2)
            del self.open[index + 1 :]
            self._count_line(self.open[:index])  # a line of the messages around it
            if rest == b"--":
                container.closed = True
            elif self.parts < MAX_PARTS:
                child = Entity(self.pos + len(line), depth=container.depth + 1)
                container.children.append(child)
                self.parts += 1
                self.open.append(child)
            return True
        return False

    def _close(self, entity: Entity, end: int) -> None:
        if entity.body_start < 0:  # a header that never ended: no body
            entity.body_start = max(entity.start, min(end + 2, self.pos))
        entity.end = max(entity.body_start, end)
        if entity.message is not None:
            self._close(entity.message, end)


def scan(chunks: Iterable[bytes]) -> Entity:
    scanner = _Scanner()
    for chunk in chunks:
        scanner.feed(chunk)
    return scanner.finish()


# -- ENVELOPE and BODYSTRUCTURE ----------------------------------------------------------


def _field(fields: list[tuple[str, bytes]], name: str) -> bytes | None:
    for field_name, value in fields:
        if field_name.lower() == name:
            return value
    return None


def _addresses(value: bytes | None) -> bytes:
    if value is None:
        return b"NIL"
    text = value.decode("utf-8", "surrogateescape")
    out: list[bytes] = []
    for name, address in email.utils.getaddresses([text]):
        if not address:
            continue
        mailbox, at, host = address.rpartition("@")
        if not at:
            mailbox, host = address, ""
        out.append(
            rs.paren(
                (
                    rs.nstring(name or None, utf8=True),
                    b"NIL",
                    rs.nstring(mailbox, utf8=True),
                    rs.nstring(host or None, utf8=True),
                )
            )
        )
    return rs.paren(out) if out else b"NIL"


def envelope(entity: Entity) -> bytes:
    fields = header_fields(bytes(entity.header))
    sender_from = _field(fields, "from")
    items = [
        rs.nstring(_field(fields, "date"), utf8=True),
        rs.nstring(_field(fields, "subject"), utf8=True),
        _addresses(sender_from),
        _addresses(_field(fields, "sender") or sender_from),
        _addresses(_field(fields, "reply-to") or sender_from),
        _addresses(_field(fields, "to")),
        _addresses(_field(fields, "cc")),
        _addresses(_field(fields, "bcc")),
        rs.nstring(_field(fields, "in-reply-to"), utf8=True),
        rs.nstring(_field(fields, "message-id"), utf8=True),
    ]
    return rs.paren(items)


def _params(entity: Entity, header: str) -> bytes:
    """The parameters of a Content-Type or Content-Disposition field (RFC 2231 values
    joined and decoded), as a list of name-value pairs; NIL when it has none."""
    params = (entity.mime.get_params(header=header) or [])[1:]  # the first is the value
    out: list[bytes] = []
    for name, value in params:
        text = email.utils.collapse_rfc2231_value(value)
        if name:
            out += [rs.string(name.upper()), rs.string(str(text), utf8=True)]
    return rs.paren(out) if out else b"NIL"


def _disposition(entity: Entity) -> bytes:
    value = entity.mime.get("content-disposition")
    if value is None:
        return b"NIL"
    kind = str(value).split(";", 1)[0].strip()
    params = _params(entity, "content-disposition")
    return rs.paren((rs.string(kind.upper() or "ATTACHMENT"), params))


def _nfield(entity: Entity, name: str) -> bytes:
    value = entity.mime.get(name)
    return b"NIL" if value is None else rs.string(str(value).strip(), utf8=True)


def bodystructure(entity: Entity, *, extensible: bool = True) -> bytes:
    """BODYSTRUCTURE (``extensible``) or BODY of a message or part."""
    if entity.children:
        parts = b"".join(bodystructure(child, extensible=extensible) for child in entity.children)
        items = [parts, rs.string(entity.content_type[1])]
        if extensible:
            items += [
                _params(entity, "content-type"),
                _disposition(entity),
                _nfield(entity, "content-language"),
                _nfield(entity, "content-location"),
            ]
        return b"(" + b" ".join(items) + b")"
    maintype, subtype = entity.content_type
    if maintype == "MULTIPART":  # a multipart without parts: say what it holds, text
        maintype, subtype = "TEXT", "PLAIN"
    encoding = entity.mime.get("content-transfer-encoding")
    items = [
        rs.string(maintype),
        rs.string(subtype),
        _params(entity, "content-type")
        if entity.mime.get("content-type")
        else b'("CHARSET" "US-ASCII")',
        _nfield(entity, "content-id"),
        _nfield(entity, "content-description"),
        rs.string(str(encoding).strip().upper() if encoding else "7BIT"),
        str(entity.size).encode(),
    ]
    if entity.message is not None:
        items += [
            envelope(entity.message),
            bodystructure(entity.message, extensible=extensible),
            str(entity.lines).encode(),
        ]
    elif maintype == "TEXT":
        items.append(str(entity.lines).encode())
    if extensible:
        items += [
            _nfield(entity, "content-md5"),
            _disposition(entity),
            _nfield(entity, "content-language"),
            _nfield(entity, "content-location"),
        ]
    return rs.paren(items)
