"""FETCH responses for the selected mailbox, streamed (RFC 3501 6.4.5, 7.4.2).

Each message's response is written item by item; a body section goes out as a literal
whose octets are read from the store in chunks and written as they come, with a drain
between chunks, so a FETCH of a 20 MiB message holds a chunk of it, not the message.
The structure a section needs (``structure.scan``) is found in one pass in a worker
thread and kept for the last few messages fetched.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import OrderedDict
from typing import Final

from postroom.imap import commands as c
from postroom.imap.sections import Extract, cut, locate
from postroom.imap.structure import Entity, bodystructure, envelope, scan
from postroom.imap.view import MailboxView
from postroom.mailbox import MailAccount, MessageFile
from postroom.mailbox.base import FlagChange
from postroom.net.stream import Stream

__all__ = ["FetchWriter"]

_SEEN: Final = "\\Seen"
_KEPT: Final = 16  # structures kept (a client fetches BODYSTRUCTURE, then parts)
_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
_WHOLE: Final = c.Section()
_HEADER: Final = c.Section(text="HEADER")
_TEXT: Final = c.Section(text="TEXT")
# RFC822* items are their BODY[] equivalents under their own names (RFC 3501 6.4.5)
_RFC822: Final = {
    "RFC822": (_WHOLE, False),
    "RFC822.HEADER": (_HEADER, True),
    "RFC822.TEXT": (_TEXT, False),
}
_STRUCTURE_ITEMS: Final = frozenset(("ENVELOPE", "BODY", "BODYSTRUCTURE"))


def internal_date(timestamp: float) -> bytes:
    when = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return b'"%02d-%s-%04d %02d:%02d:%02d +0000"' % (
        when.day, _MONTHS[when.month - 1].encode(), when.year, when.hour, when.minute, when.second,
    )  # fmt: skip


def _scan_file(message: MessageFile) -> Entity:
    with message:
        return scan(iter(message.read, b""))


def _sets_seen(item: c.FetchAtt) -> bool:
    return (item.name == "BODY[]" and not item.peek) or item.name in ("RFC822", "RFC822.TEXT")


class FetchWriter:
    def __init__(self, stream: Stream, account: MailAccount, view: MailboxView) -> None:
        self._stream = stream
        self._account = account
        self._view = view
        self._structures: OrderedDict[int, Entity] = OrderedDict()

    async def fetch(self, chosen: list[tuple[int, int]], command: c.Fetch) -> None:
        view = self._view
        items = command.items
        marks_seen = not view.read_only and any(_sets_seen(item) for item in items)
        for seq, uid in chosen:
            facts = view.facts(uid)
            if facts is None:
                continue
            if command.changed_since is not None and facts.modseq <= command.changed_since:
                continue
            extra: tuple[c.FetchAtt, ...] = ()
            if marks_seen and _SEEN not in facts.flags:
                result = await self._account.store(view.folder, [uid], [_SEEN], FlagChange.ADD)
                for info in result.changed:
                    view.changed(info)
                if not any(item.name == "FLAGS" for item in items):
                    extra = (c.FetchAtt("FLAGS"),)
            await self._message(seq, uid, (*items, *extra))

    async def _message(self, seq: int, uid: int, items: tuple[c.FetchAtt, ...]) -> None:
        write = self._stream.write
        structure = None
        if any(self._needs_structure(item) for item in items):
            structure = await self._structure(uid)
            if structure is None:  # expunged by another session since our last look
                return
        write(b"* %d FETCH (" % seq)
        for index, item in enumerate(items):
            if index:
                write(b" ")
            plain = self._plain_item(item.name, uid, structure)
            if plain is not None:
                write(plain)
            else:
                await self._section(uid, item, structure)
        write(b")\r\n")
        await self._stream.drain()

    def _plain_item(self, name: str, uid: int, structure: Entity | None) -> bytes | None:
        """An item that is not a body section; None for a section."""
        facts = self._view.facts(uid)
        assert facts is not None  # the caller found it a moment ago
        if name == "UID":
            return b"UID %d" % uid
        if name == "FLAGS":
            return self._view.flags_item(facts)
        if name == "MODSEQ":
            return b"MODSEQ (%d)" % facts.modseq
        if name == "RFC822.SIZE":
            return b"RFC822.SIZE %d" % facts.size
        if name == "INTERNALDATE":
            return b"INTERNALDATE " + internal_date(facts.internal_date)
        if name == "ENVELOPE":
            assert structure is not None
            return b"ENVELOPE " + envelope(structure)
        if name in ("BODY", "BODYSTRUCTURE"):
            assert structure is not None
            extensible = name == "BODYSTRUCTURE"
            return name.encode() + b" " + bodystructure(structure, extensible=extensible)
        return None

    @staticmethod
    def _needs_structure(item: c.FetchAtt) -> bool:
        if item.name in _STRUCTURE_ITEMS or item.name in ("RFC822.HEADER", "RFC822.TEXT"):
            return True
        return item.name == "BODY[]" and item.section != _WHOLE

    async def _structure(self, uid: int) -> Entity | None:
        kept = self._structures.get(uid)
        if kept is not None:
            self._structures.move_to_end(uid)
            return kept
        message = await self._account.open_message(self._view.folder, uid)
        if message is None:
            return None
        structure = await asyncio.to_thread(_scan_file, message)
        self._structures[uid] = structure
        if len(self._structures) > _KEPT:
            self._structures.popitem(last=False)
        return structure

    async def _section(self, uid: int, item: c.FetchAtt, structure: Entity | None) -> None:
        if item.name in _RFC822:
            section, _ = _RFC822[item.name]
            label = item.name.encode()
        else:
            assert item.section is not None
            section = item.section
            label = b"BODY[" + str(section).encode() + b"]"
            if item.partial is not None:
                label += b"<%d>" % item.partial[0]
        if structure is None:  # the whole message, of the size the store reports
            facts = self._view.facts(uid)
            extract = Extract(0, facts.size if facts is not None else 0)
        else:
            extract = locate(structure, section)
        if item.partial is not None:
            extract = extract.partial(*item.partial)
        message = None
        if extract.data is None and extract.size:
            message = await self._account.open_message(self._view.folder, uid)
        self._stream.write(label + b" {%d}\r\n" % extract.size)
        if extract.data is not None:
            self._stream.write(extract.data)
        elif message is not None:
            with message:
                await self._stream_extract(message, extract)
        else:  # expunged since: keep the framing the size promised
            self._stream.write(b" " * extract.size)

    async def _stream_extract(self, message: MessageFile, extract: Extract) -> None:
        sent = 0
        for piece in cut(iter(message.read, b""), extract.start, extract.end):
            self._stream.write(piece)
            sent += len(piece)
            await self._stream.drain()
        if sent < extract.size:  # the file was shorter than its size said: keep framing
            self._stream.write(b" " * (extract.size - sent))
