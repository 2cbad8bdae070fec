"""Properties of the IMAP core under arbitrary input (hypothesis): nothing raises, and
how the bytes are split into reads changes nothing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.imap.connection import Event, ImapConfig, ImapConnection, State
from tests.support.depth import examples

CONFIG = ImapConfig(
    "imap.test", max_line=300, max_literal=64, max_message_size=256, max_command=600
)
FRAGMENTS = [
    b"a1 LOGIN bob pw\r\n",
    b"a2 SELECT INBOX\r\n",
    b"a3 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From)]<0.10>)\r\n",
    b"a4 UID SEARCH OR SEEN NOT (FROM x) 1:3\r\n",
    b"a5 APPEND INBOX (\\Seen) {5+}\r\nhello\r\n",
    b"a6 LOGIN {3}\r\n",
    b"bob {2}\r\npw\r\n",
    b"{999}\r\n",
    b"{10+}\r\n",
    b"a7 IDLE\r\n",
    b"DONE\r\n",
    b"a8 AUTHENTICATE PLAIN\r\n",
    b"AGJvYgBwdw==\r\n",
    b"a9 STORE 1 +FLAGS (\\Deleted)\r\n",
    b'"unterminated\r\n',
    b"((((((\r\n",
    b"\r\n",
    b"\n",
    b"x" * 350,
]


def _events(chunks: list[bytes], state: State) -> list[Event]:
    conn = ImapConnection(CONFIG, tls=True)
    conn.state = state
    events: list[Event] = []
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not None:
            events.append(event)
    return events


inputs = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=40)), max_size=12).map(
    b"".join
)
states = st.sampled_from([State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED])


@settings(max_examples=examples(150), deadline=None)
@given(
    data=inputs, state=states, cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=8)
)
def test_no_input_raises_and_any_split_gives_the_same_events(
    data: bytes, state: State, cuts: list[int]
) -> None:
    whole = _events([data], state)
    points = sorted({min(cut, len(data)) for cut in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert _events([p for p in pieces if p], state) == whole
