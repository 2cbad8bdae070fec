"""The selected mailbox's view: untagged updates from the store's changes, and the
store's message sequence shared rather than copied (sans-IO)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from postroom.imap.view import MailboxView
from postroom.mailbox.base import SEEN, MessageInfo


def _info(uid: int, *flags: str, modseq: int = 1) -> MessageInfo:
    return MessageInfo(uid, frozenset(flags), 1_700_000_000.0, 100, modseq)


def _view(messages: tuple[MessageInfo, ...]) -> MailboxView:
    return MailboxView("INBOX", 1, False, messages)


def test_a_view_that_catches_up_shares_the_stores_sequence() -> None:
    """A thousand sessions on a 100,000-message folder held a copy each (800 KiB)."""
    before = tuple(_info(uid) for uid in range(1, 6))
    view = _view(before)
    now = (before[0], _info(2, SEEN, modseq=2), before[3], before[4], _info(6))
    out = view.apply([3], [now[1]], [now[4]], now=now)
    assert out == b"* 3 EXPUNGE\r\n* 2 FETCH (FLAGS (\\Seen))\r\n* 5 EXISTS\r\n"
    assert view.messages is now


@given(
    st.sets(st.integers(1, 30), max_size=30),
    st.sets(st.integers(1, 30)),
    st.sets(st.integers(1, 30)),
    st.integers(0, 5),
)
def test_applying_with_the_stores_sequence_answers_as_copying_would(
    held: set[int], gone: set[int], seen: set[int], new: int
) -> None:
    before = tuple(_info(uid) for uid in sorted(held))
    after = [
        _info(m.uid, SEEN, modseq=2) if m.uid in seen else m for m in before if m.uid not in gone
    ]
    added = [_info(31 + n) for n in range(new)]
    changed = [m for m in after if m.uid in seen]
    now = (*after, *added)
    shared, copying = _view(before), _view(before)
    expected = copying.apply(sorted(gone), changed, added)
    assert shared.apply(sorted(gone), changed, added, now=now) == expected
    assert list(shared.messages) == list(copying.messages) == list(now)
