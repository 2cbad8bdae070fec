"""The selected mailbox as one session sees it (RFC 3501 2.3.1, 5.2, 7.4.1): message
sequence numbers over UIDs, and the untagged updates that bring the session's view up to
what the store holds now.

Pure: the store's look (``MessageFacts``, ascending UID) goes in, responses come out.
A view starts with the store's own sequence of the folder's messages and copies it only
to change it; once it has caught up with the store (``adopt``) it shares the store's
again, so a thousand sessions watching one large folder hold one list between them.
Expunges are reported from the highest sequence number down, so each number is right
when the client reads it; new messages as one EXISTS; changed flags as FETCH.
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
    messages: Sequence[MessageFacts]  # ascending UID: sequence number n is messages[n - 1]
    condstore: bool = False  # report MODSEQ with flag changes (RFC 7162 3.2.4)
    version: int = 0  # the store's look this view is at (``MailAccount.changes``)

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

    def _own(self) -> list[MessageFacts]:
        """The messages as this view's own list, to change (copied once if shared)."""
        if not isinstance(self.messages, list):
            self.messages = list(self.messages)
        return self.messages

    def adopt(self, messages: Sequence[MessageFacts]) -> None:
        """The store's own sequence, once this view holds the same messages (after
        ``apply`` of everything up to that look): shared instead of a copy."""
        if len(messages) == len(self.messages) and self.largest_uid == (
            messages[-1].uid if messages else 0
        ):
            self.messages = messages

    def changed(self, message: MessageFacts) -> None:
        """The store says ``message`` is now so (after a STORE of this session's)."""
        index = self._index(message.uid)
        if index is not None:
            self._own()[index] = message

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
            del self._own()[index]
            out += rs.untagged(b"%d EXPUNGE" % (index + 1))
        return bytes(out)

    def update(self, messages: Iterable[MessageFacts], *, with_uid: bool = False) -> bytes:
        """The untagged responses that bring this view to ``messages`` (the store now)."""
        now = {m.uid: m for m in messages}
        expunged = [m.uid for m in self.messages if m.uid not in now]
        changed = [now[m.uid] for m in self.messages if now[m.uid] is not m]
        last = self.largest_uid
        added = sorted((m for m in now.values() if m.uid > last), key=_uid)
        return self.apply(expunged, changed, added, with_uid=with_uid)

    def apply(
        self,
        expunged: Iterable[int],
        changed: Iterable[MessageFacts],
        added: Iterable[MessageFacts],
        *,
        with_uid: bool = False,
        now: Sequence[MessageFacts] | None = None,
    ) -> bytes:
        """The untagged responses for what changed in the store: ``expunged`` UIDs,
        ``changed`` messages (as they are now), ``added`` ones (ascending UID). ``now``:
        the store's own sequence of every message after them, which the view then
        shares rather than copying its own list to change it."""
        expunged = sorted(set(expunged), reverse=True)
        changed = list(changed)
        last = self.largest_uid
        fresh = [m for m in added if m.uid > last]
        if now is not None:
            gone = sum(1 for uid in expunged if self._index(uid) is not None)
            if len(self.messages) - gone + len(fresh) == len(now):
                return self._apply_shared(expunged, changed, bool(fresh), with_uid, now)
        out = bytearray(self.expunged(expunged))
        for new in changed:
            index = self._index(new.uid)
            if index is None:
                continue
            old = self.messages[index]
            if new is old:
                continue
            self._own()[index] = new
            out += self._flags_changed(index + 1, old, new, with_uid=with_uid)
        if fresh:
            self._own().extend(fresh)
            out += rs.untagged(b"%d EXISTS" % len(self.messages))
        if now is not None:
            self.adopt(now)
        return bytes(out)

    def _apply_shared(
        self,
        expunged: list[int],
        changed: list[MessageFacts],
        grew: bool,
        with_uid: bool,
        now: Sequence[MessageFacts],
    ) -> bytes:
        """``apply`` without copying: expunges numbered in the old sequence (highest
        first, so each number holds when read), flag changes in ``now`` (where the
        messages that stay keep their order and the new ones come last)."""
        out = bytearray()
        for uid in expunged:
            index = self._index(uid)
            if index is not None:
                out += rs.untagged(b"%d EXPUNGE" % (index + 1))
        before = self.messages
        for new in changed:
            index = self._index(new.uid)
            at = bisect.bisect_left(now, new.uid, key=_uid)
            if index is None or at >= len(now) or now[at].uid != new.uid:
                continue
            old = before[index]
            if new is not old:
                out += self._flags_changed(at + 1, old, new, with_uid=with_uid)
        self.messages = now
        if grew:
            out += rs.untagged(b"%d EXISTS" % len(now))
        return bytes(out)

    def _flags_changed(
        self, seq: int, old: MessageFacts, new: MessageFacts, *, with_uid: bool
    ) -> bytes:
        if new.flags == old.flags and (not self.condstore or new.modseq == old.modseq):
            return b""
        uid_item = b"UID %d " % old.uid if with_uid else b""
        return rs.untagged(b"%d FETCH (%s%s)" % (seq, uid_item, self.flags_item(new)))
