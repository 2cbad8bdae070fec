"""The selected mailbox as one session sees it (RFC 3501 2.3.1, 5.2, 7.4.1): message
sequence numbers over UIDs, and the untagged updates that bring the session's view up to
what the store holds now.

Pure: the store's look (``MessageFacts``, ascending UID) goes in, responses come out.
A view holds one list of references to the store's values, so many sessions on one
folder cost a pointer per message each. Expunges are reported from the highest sequence
number down, so each number is right when the client reads it; new messages as one
EXISTS; changed flags as FETCH.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from postroom.imap import responses as rs
from postroom.imap.search import MessageFacts

__all__ = ["MailboxView"]


def _uid(message: MessageFacts) -> int:
    return message.uid


@dataclass(slots=True)
class MailboxView:
    folder: str
    uidvalidity: int
    read_only: bool
    messages: list[MessageFacts]  # ascending UID: sequence number n is messages[n - 1]
    condstore: bool = False  # report MODSEQ with flag changes (RFC 7162 3.2.4)

    @property
    def exists(self) -> int:
        return len(self.messages)

    @property
    def uids(self) -> list[int]:
        return [m.uid for m in self.messages]

    @property
    def largest_uid(self) -> int:
        return self.messages[-1].uid if self.messages else 0

    def _index(self, uid: int) -> int | None:
        index = bisect.bisect_left(self.messages, uid, key=_uid)
        if index < len(self.messages) and self.messages[index].uid == uid:
            return index
        return None

    def seq_of(self, uid: int) -> int | None:
        index = self._index(uid)
        return None if index is None else index + 1

    def facts(self, uid: int) -> MessageFacts | None:
        index = self._index(uid)
        return None if index is None else self.messages[index]

    def changed(self, message: MessageFacts) -> None:
        """The store says ``message`` is now so (after a STORE of this session's)."""
        index = self._index(message.uid)
        if index is not None:
            self.messages[index] = message

    def select(self, messages: Sequence[int], *, uid: bool) -> list[tuple[int, int]]:
        """``(seq, uid)`` of each message a sequence set (already resolved) names."""
        if uid:
            out = []
            for number in messages:
                seq = self.seq_of(number)
                if seq is not None:
                    out.append((seq, number))
            return out
        count = len(self.messages)
        return [(n, self.messages[n - 1].uid) for n in messages if 1 <= n <= count]

    def flags_item(self, message: MessageFacts) -> bytes:
        item = b"FLAGS " + rs.flag_list(sorted(message.flags))
        if self.condstore:
            item += b" MODSEQ (%d)" % message.modseq
        return item

    def expunged(self, uids: Iterable[int]) -> bytes:
        """Forget ``uids``; the EXPUNGE responses that say so."""
        out = bytearray()
        for uid in sorted(set(uids), reverse=True):
            index = self._index(uid)
            if index is None:
                continue
            del self.messages[index]
            out += rs.untagged(b"%d EXPUNGE" % (index + 1))
        return bytes(out)

    def update(self, messages: Iterable[MessageFacts], *, with_uid: bool = False) -> bytes:
        """The untagged responses that bring this view to ``messages`` (the store now)."""
        now = {m.uid: m for m in messages}
        out = bytearray(self.expunged([m.uid for m in self.messages if m.uid not in now]))
        for index, old in enumerate(self.messages):
            new = now[old.uid]
            if new is old:
                continue
            self.messages[index] = new
            if new.flags != old.flags or (self.condstore and new.modseq != old.modseq):
                uid_item = b"UID %d " % old.uid if with_uid else b""
                item = self.flags_item(new)
                out += rs.untagged(b"%d FETCH (%s%s)" % (index + 1, uid_item, item))
        last = self.largest_uid
        added = sorted((m for m in now.values() if m.uid > last), key=_uid)
        if added:
            self.messages.extend(added)
            out += rs.untagged(b"%d EXISTS" % len(self.messages))
        return bytes(out)
