"""BODY[section]<partial> (RFC 3501 6.4.5): where a section's octets are in a message,
and cutting them out of the message's chunks as they stream past.

``locate`` resolves a section against the ``structure.Entity`` tree to a span of the
message's octets, or, for HEADER.FIELDS (NOT), to the few octets it builds from the
header kept in the tree. ``cut`` yields only a span's octets from the chunks of the whole
message, so a FETCH of a large message never holds more than a chunk of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from postroom.imap.commands import Section
from postroom.imap.structure import Entity

__all__ = ["Extract", "cut", "locate"]


@dataclass(frozen=True, slots=True)
class Extract:
    start: int = 0  # octets of the message, [start, end)
    end: int = 0
    data: bytes | None = None  # built octets (HEADER.FIELDS) in place of a span

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.end - self.start

    def partial(self, origin: int, length: int | None) -> Extract:
        """The ``<origin.length>`` of this extract."""
        if self.data is not None:
            end = None if length is None else origin + length
            return Extract(data=self.data[origin:end])
        start = min(self.start + origin, self.end)
        end = self.end if length is None else min(start + length, self.end)
        return Extract(start, end)


def _entity_at(root: Entity, path: tuple[int, ...]) -> Entity | None:
    entity = root
    for index, number in enumerate(path):
        if entity.children:
            if number > len(entity.children):
                return None
            entity = entity.children[number - 1]
        elif number != 1:
            return None
        if index < len(path) - 1 and entity.message is not None:
            entity = entity.message
    return entity


def locate(root: Entity, section: Section) -> Extract:
    """The octets of ``section``; an empty extract when the message has no such part."""
    entity = _entity_at(root, section.part)
    if entity is None:
        return Extract()
    text = section.text
    if text == "":
        if not section.part:
            return Extract(0, root.end)
        return Extract(entity.body_start, entity.end)
    if text == "MIME":
        return Extract(entity.start, entity.body_start)
    target = root if not section.part else entity.message
    if target is None:
        return Extract()
    if text == "HEADER":
        return Extract(target.start, target.body_start)
    if text == "TEXT":
        return Extract(target.body_start, target.end)
    return Extract(data=_fields(bytes(target.header), section.fields, text.endswith("NOT")))


def _fields(header: bytes, names: tuple[str, ...], exclude: bool) -> bytes:
    """The header's fields named in ``names`` (or all others), as they are folded in the
    message, then the blank line."""
    wanted = {name.lower() for name in names}
    out = bytearray()
    keep = False
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if keep:
                out += line
            continue
        name = line.split(b":", 1)[0].strip().decode("ascii", "replace").lower()
        keep = (name in wanted) != exclude and b":" in line
        if keep:
            out += line
    return bytes(out) + b"\r\n"


def cut(chunks: Iterable[bytes], start: int, end: int) -> Iterator[bytes]:
    """The octets ``[start, end)`` of the stream ``chunks``."""
    pos = 0
    for chunk in chunks:
        following = pos + len(chunk)
        if following > start and pos < end:
            yield chunk[max(0, start - pos) : end - pos]
        pos = following
        if pos >= end:
            return
