"""Properties of the core under arbitrary input (hypothesis).

- Nothing the peer sends makes an exception escape the core.
- Every reply ``send()`` produces is well formed (RFC 5321 4.2): ``ddd-`` lines then one
  ``ddd `` line, each ending in CRLF, one code throughout; an enhanced code, when present,
  has the class of the reply code (RFC 3463 2).
- Exactly one reply per command line, in order.
- How the bytes are split into reads changes nothing: same events, same output.
"""

from __future__ import annotations

import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.smtp import (
    NEED_DATA,
    AuthChallenge,
    AuthCredentials,
    BdatChunkEnd,
    ConnectionClosed,
    Data,
    Event,
    MailFrom,
    MessageChunk,
    MessageEnd,
    RcptTo,
    Reply,
    ServerConfig,
    ServerConnection,
    StartTls,
    TlsInfo,
)
from postroom.smtp import replies as r
from tests.support.depth import examples

CONFIG = ServerConfig(
    "mx.test", max_message_size=2048, max_recipients=3, max_errors=12, starttls_available=True
)
TLS = TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256")
_LINE = re.compile(rb"(\d{3})([ -])([^\r\n]*)")
_ENHANCED = re.compile(rb"([245])\.\d{1,3}\.\d{1,3} ")
_NO_ENHANCED = {220, 250, 334, 354}  # greeting/TLS, HELO/EHLO, AUTH and DATA continuations

FRAGMENTS = [
    b"EHLO client.test\r\n",
    b"HELO client.test\r\n",
    b"MAIL FROM:<a@example.org>\r\n",
    b"MAIL FROM:<> SIZE=10 BODY=8BITMIME RET=HDRS ENVID=x+2B\r\n",
    b"MAIL FROM:<j\xc3\xb6rg@example.org> SMTPUTF8\r\n",
    b"RCPT TO:<b@example.test> NOTIFY=SUCCESS ORCPT=rfc822;b@example.test\r\n",
    b"RCPT TO:<Postmaster>\r\n",
    b"RCPT TO:<>\r\n",
    b"DATA\r\n",
    b"Subject: x\r\n\r\nbody\r\n",
    b"..dot\r\n",
    b".\r\n",
    b"\r\n.\r\n",
    b"\n.\n",
    b"\r.\r",
    b"BDAT 5\r\n",
    b"BDAT 0 LAST\r\n",
    b"BDAT 3 LAST\r\nabc",
    b"BDAT x\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY x\r\n",
    b"HELP\r\n",
    b"EXPN x\r\n",
    b"STARTTLS\r\n",
    b"AUTH PLAIN AHUAcA==\r\n",
    b"AUTH LOGIN\r\n",
    b"dQ==\r\n",
    b"*\r\n",
    b"QUIT\r\n",
    b"\x00\xff\r\n",
    b"x" * 600,
    b"\r\n",
]

# What the application answers, by event type: one of these, chosen by the test.
ANSWERS: dict[type, list[Reply]] = {
    MailFrom: [r.OK, r.SENDER_NOT_ALLOWED, r.LOCAL_ERROR],
    RcptTo: [r.RECIPIENT_OK, r.NO_SUCH_USER, r.RELAY_DENIED],
    Data: [r.START_DATA, r.START_DATA, r.LOCAL_ERROR],
    MessageEnd: [r.queued("Q1"), r.STORAGE_FULL],
    BdatChunkEnd: [r.OK, r.STORAGE_FULL],
    AuthCredentials: [r.AUTH_OK, r.AUTH_FAILED, r.AUTH_THROTTLED],
    AuthChallenge: [],  # the event's own reply
    StartTls: [r.TLS_READY, r.TLS_NOT_AVAILABLE],
}


def check_reply(data: bytes) -> None:
    assert data.endswith(b"\r\n"), data
    lines = data[:-2].split(b"\r\n")
    codes = set()
    for i, line in enumerate(lines):
        match = _LINE.fullmatch(line)
        assert match, data
        code, sep, text = match.groups()
        codes.add(code)
        assert sep == (b" " if i == len(lines) - 1 else b"-"), data
        assert code[:1] in b"2345", data
        enhanced = _ENHANCED.match(text)
        if enhanced is not None:
            assert enhanced.group(1) == code[:1], data
        else:
            assert int(code) in _NO_ENHANCED, data
    assert len(codes) == 1, data


def answer_for(event: Event, choice: int) -> Reply:
    options = ANSWERS.get(type(event))
    if options:
        problem = getattr(event, "problem", None)
        return problem if isinstance(problem, Reply) else options[choice % len(options)]
    reply = getattr(event, "reply", None)
    assert isinstance(reply, Reply), event
    return reply


def drive(
    reads: list[bytes], choices: list[int], *, accept_tls: bool = True, tls: bool = False
) -> tuple[list[Event], bytes]:
    """Run a conversation; return its events and the server's output.

    Chunks are folded into one ``MessageChunk`` per message, put just before the end of a
    message that ended clean; content passed on before a refused message was refused
    depends on how the bytes were split, so it is left out.
    """
    conn = ServerConnection(CONFIG, tls=TLS if tls else None)
    events: list[Event] = []
    body = bytearray()
    out = bytearray()
    n = 0
    for data in [*reads, b""]:
        conn.receive_data(data)
        while True:
            event = conn.next_event()
            if event is NEED_DATA or isinstance(event, ConnectionClosed):
                break
            if isinstance(event, MessageChunk):
                body += event.data
                continue
            if isinstance(event, MessageEnd) and event.problem is None:
                events.append(MessageChunk(bytes(body)))
            if not isinstance(event, BdatChunkEnd):
                body.clear()
            events.append(event)
            reply = answer_for(event, choices[n % len(choices)] if choices else 0)
            if isinstance(event, StartTls) and not accept_tls:
                reply = r.TLS_NOT_AVAILABLE
            n += 1
            sent = conn.send(reply)
            check_reply(sent)
            out += sent
            if isinstance(event, StartTls) and reply.code == 220:
                conn.start_tls(TLS)
            if conn.closed:
                return events, bytes(out)
    return events, bytes(out)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


_ENVELOPE = b"EHLO c.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\n"
# A start that reaches deep states often, then fragments (three in four) and junk.
_STARTS = [b"", b"EHLO c.test\r\n", _ENVELOPE, _ENVELOPE + b"DATA\r\n", _ENVELOPE + b"BDAT 7\r\n"]
_fragment = st.sampled_from(FRAGMENTS)
conversation = st.builds(
    lambda start, rest: [start, *rest],
    st.sampled_from(_STARTS),
    st.lists(st.one_of(_fragment, _fragment, _fragment, st.binary(max_size=12)), max_size=40),
)


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 5000), max_size=30))
def test_arbitrary_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    drive(split(data, cuts), [0, 1, 2])


@settings(max_examples=examples(400), deadline=None)
@given(
    conversation,
    st.lists(st.integers(0, 10**6), max_size=20),
    st.lists(st.integers(0, 5)),
    st.booleans(),
)
def test_conversations_never_raise_and_replies_are_well_formed(
    fragments: list[bytes], cuts: list[int], choices: list[int], tls: bool
) -> None:
    drive(split(b"".join(fragments), cuts), choices, tls=tls)


@settings(max_examples=examples(300), deadline=None)
@given(
    conversation,
    st.lists(st.integers(0, 10**6), max_size=20),
    st.lists(st.integers(0, 5)),
    st.booleans(),
)
def test_splitting_the_input_changes_nothing(
    fragments: list[bytes], cuts: list[int], choices: list[int], tls: bool
) -> None:
    data = b"".join(fragments)
    # STARTTLS is refused: what was pipelined behind it depends on the reads by design.
    whole = drive([data], choices, accept_tls=False, tls=tls)
    assert drive(split(data, cuts), choices, accept_tls=False, tls=tls) == whole


COMMANDS = [
    b"EHLO client.test",
    b"HELO client.test",
    b"MAIL FROM:<a@example.org>",
    b"MAIL FROM:<bad",
    b"RCPT TO:<b@example.test>",
    b"RCPT TO:<Postmaster>",
    b"RSET",
    b"NOOP",
    b"VRFY someone",
    b"HELP",
    b"EXPN list",
    b"FROB",
    b"AUTH PLAIN",  # without TLS: 538, so the next line is a command again
    b"DATA now",
    b"\xff",
    b"",
    b"QUIT",
]


@settings(max_examples=examples(300), deadline=None)
@given(
    st.lists(st.sampled_from(COMMANDS), max_size=40),
    st.lists(st.integers(0, 10**6), max_size=20),
    st.lists(st.integers(0, 5)),
)
def test_one_reply_per_command_in_order(
    commands: list[bytes], cuts: list[int], choices: list[int]
) -> None:
    data = b"".join(c + b"\r\n" for c in commands)
    events, out = drive(split(data, cuts), choices)
    replies = sum(1 for line in out.split(b"\r\n") if line[3:4] == b" ")
    assert replies == len(events)
    closes = [i for i, c in enumerate(commands) if c == b"QUIT"]
    assert len(events) == (closes[0] + 1 if closes else len(commands)) or (
        # only 421 (too many errors) may end the conversation early
        out.endswith(b"\r\n") and out.rsplit(b"\r\n", 2)[-2].startswith(b"421 ")
    )
