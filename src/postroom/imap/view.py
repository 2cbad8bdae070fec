"""The selected mailbox as one session sees it (RFC 3501 2.3.1, 5.2, 7.4.1): message
sequence numbers over UIDs, and the untagged updates that bring the session's view up to
what the store holds now.

Pure: the store's look (``MessageFacts``) goes in, responses come out. Expunges are
reported from the highest sequence number down, so each number is right when the client
reads it; new messages as one EXISTS; changed flags as FETCH.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from postroom.imap import responses as rs
from postroom.imap.search import MessageFacts

__all__ = ["MailboxView"]


@dataclass(slots=True)
class MailboxView:
    folder: str
    uidvalidity: int
    read_only: bool
    uids: list[int]  # ascending: sequence number n is uids[n - 1]
    facts: dict[int, MessageFacts]
    condstore: bool = False  # report MODSEQ with flag changes (RFC 7162 3.2.4)

    @classmethod
    def of(
        cls, folder: str, uidvalidity: int, read_only: bool, messages: Iterable[MessageFacts]
    ) -> MailboxView:
        facts = {m.uid: m for m in messages}
        return cls(folder, uidvalidity, read_only, sorted(facts), facts)

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        index = bisect.bisect_left(self.uids, uid)
        if index < len(self.uids) and self.uids[index] == uid:
            return index + 1
        return None

    def select(self, messages: Sequence[int], *, uid: bool) -> list[tuple[int, int]]:
        """``(seq, uid)`` of each message a sequence set (already resolved) names."""
        if uid:
            out = []
            for number in messages:
                seq = self.seq_of(number)
                if seq is not None:
                    out.append((seq, number))
            return out
        return [(n, self.uids[n - 1]) for n in messages if 1 <= n <= len(self.uids)]

    def flags_item(self, message: MessageFacts) -> bytes:
        item = b"FLAGS " + rs.flag_list(sorted(message.flags))
        if self.condstore:
            item += b" MODSEQ (%d)" % message.modseq
        return item

    def expunged(self, uids: Iterable[int]) -> bytes:
        """Forget ``uids``; the EXPUNGE responses that say so."""
        out = bytearray()
        for uid in sorted(set(uids), reverse=True):
            seq = self.seq_of(uid)
            if seq is None:
                continue
            del self.uids[seq - 1]
            self.facts.pop(uid, None)
            out += rs.untagged(b"%d EXPUNGE" % seq)
        return bytes(out)

    def update(self, messages: Iterable[MessageFacts], *, with_uid: bool = False) -> bytes:
        """The untagged responses that bring this view to ``messages`` (the store now)."""
        now = {m.uid: m for m in messages}
        out = bytearray(self.expunged([uid for uid in self.uids if uid not in now]))
        for seq, uid in enumerate(self.uids, start=1):
            new, old = now[uid], self.facts[uid]
            if new.flags != old.flags or (self.condstore and new.modseq != old.modseq):
                self.facts[uid] = new
                uid_item = b"UID %d " % uid if with_uid else b""
                out += rs.untagged(b"%d FETCH (%s%s)" % (seq, uid_item, self.flags_item(new)))
        last = self.uids[-1] if self.uids else 0
        added = sorted(uid for uid in now if uid > last)
        if added:
            self.uids.extend(added)
            for uid in added:
                self.facts[uid] = now[uid]
            out += rs.untagged(b"%d EXISTS" % len(self.uids))
        return bytes(out)
