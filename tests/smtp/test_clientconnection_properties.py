"""Properties of the client core under arbitrary replies (hypothesis).

- Nothing the server sends makes an exception escape the core.
- How the bytes are split into reads changes nothing: same events, same bytes sent.
- The core never waits on a closed connection: after EOF it says ``Closed``.
- A recipient is settled at most once per message: refused, or delivered, not both.

STARTTLS is left out on purpose: bytes that arrive in the same read as its 220 are
refused (RFC 3207 6), so there the split is meant to matter.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.smtp.clientconnection import (
    ClientConfig,
    ClientEvent,
    Closed,
    MessageDone,
    Ready,
    RecipientRefused,
)
from tests.smtp.test_clientconnection import ALICE, BOB, CAROL, WHERE, Conversation, Msg

CONFIG = ClientConfig("client.test", WHERE, username="user", password="secret")
MESSAGES = [(Msg(), [ALICE, BOB, CAROL]), (Msg(data=b"x" * 40), [BOB]), (Msg(), [CAROL, ALICE])]

FRAGMENTS = [
    b"220 mx.test ESMTP\r\n",
    b"220-mx.test\r\n220 hi\r\n",
    b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 100\r\n250-DSN\r\n250 AUTH PLAIN LOGIN\r\n",
    b"250-mx.test\r\n250 AUTH=LOGIN\r\n",
    b"250-mx.test\r\n250 SIZE 10\r\n",
    b"250-mx.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 AUTH PLAIN\r\n",
    b"250-mx.test\r\n250-CHUNKING\r\n250 AUTH LOGIN\r\n",
    b"250 2.1.0 Ok\r\n",
    b"251 2.1.5 will forward\r\n",
    b"235 2.7.0 Ok\r\n",
    b"334 VXNlcm5hbWU6\r\n",
    b"354 Go ahead\r\n",
    b"421 4.3.2 Bye\r\n",
    b"450 4.2.0 Greylisted\r\n",
    b"502 5.5.2 Unknown\r\n",
    b"535 5.7.8 No\r\n",
    b"550-5.1.1 No\r\n550 5.1.1 such user\r\n",
    b"554 5.6.0 Rejected\r\n",
    b"221 Bye\r\n",
    b"250",
    b"\r\n",
    b"\n",
    b"999 what\r\n",
    b"HTTP/1.1 200 OK\r\n",
    b"\x00\xff\r\n",
    b"x" * 9000,
]


def comparable(event: ClientEvent) -> object:
    """``Capabilities`` compare by identity; what they hold is what counts."""
    if isinstance(event, Ready):
        return ("Ready", dict(event.capabilities.extensions), event.capabilities.esmtp)
    return event


def play(data: bytes, cuts: list[int]) -> tuple[list[object], bytes, bool]:
    conversation = Conversation(CONFIG, list(MESSAGES))
    sent, start = [], 0
    for cut in [*sorted(cuts), len(data)]:
        if cut > start:  # an empty read is the end of the stream
            conversation.conn.receive_data(data[start:cut])
            sent.append(conversation.pump())
            start = cut
    conversation.conn.receive_data(b"")
    sent.append(conversation.pump())
    closed = conversation.conn.next_event() == Closed()
    return [comparable(e) for e in conversation.events], b"".join(sent), closed


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=12), max_size=30),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_no_input_raises_and_splitting_changes_nothing(
    fragments: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(fragments)
    cuts = [cut % (len(data) + 1) for cut in cuts]
    events, sent, closed = play(data, [])
    assert play(data, cuts) == (events, sent, closed)
    assert play(data, list(range(len(data) + 1))) == (events, sent, closed)  # every byte
    assert closed
    for _, group in itertools.groupby(events, lambda event: isinstance(event, MessageDone)):
        refused = [e.index for e in group if isinstance(e, RecipientRefused)]
        assert len(refused) == len(set(refused))
    for event in events:
        if isinstance(event, MessageDone):
            assert len(event.delivered) == len(set(event.delivered))
