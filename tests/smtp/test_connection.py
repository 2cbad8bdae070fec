"""ServerConnection: every command, sequence, limit and reply, without sockets or a loop.

Each conversation is fed whole and then one byte at a time (h11's habit); the bytes the
server writes and the events it reports must be the same either way.
"""

from __future__ import annotations

import base64
import codecs
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from postroom.mail.address import Address
from postroom.mail.envelope import DsnRequest, Notify, Ret
from postroom.smtp import (
    NEED_DATA,
    AuthChallenge,
    AuthCredentials,
    BdatChunkEnd,
    ConnectionClosed,
    Data,
    Ehlo,
    Event,
    Helo,
    InvalidCommand,
    MailFrom,
    MessageChunk,
    MessageEnd,
    Noop,
    Quit,
    RcptTo,
    Reply,
    ServerConfig,
    ServerConnection,
    StartTls,
    TlsInfo,
    Vrfy,
)
from postroom.smtp import replies as r
from postroom.smtp.state import State

TLS = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384")
CONFIG = ServerConfig("mx.test", starttls_available=True)
QUEUE_ID = "0123456789ABCDEF"
App = Callable[[Event], Reply]


@pytest.fixture(params=["whole", "bytewise"])
def bytewise(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "bytewise")


def app(event: Event) -> Reply:
    """The default application: accepts everything; the password is "secret"."""
    match event:
        case Data():
            return r.START_DATA
        case MessageEnd(problem=problem):
            return problem or r.queued(QUEUE_ID)
        case BdatChunkEnd(size=size, problem=problem):
            return problem or r.OK.with_text(f"{size} octets received")
        case AuthCredentials(password=password):
            return r.AUTH_OK if password == "secret" else r.AUTH_FAILED
        case StartTls():
            return r.TLS_READY
        case MailFrom():
            return r.OK
        case RcptTo():
            return r.RECIPIENT_OK
    reply = getattr(event, "reply", None)
    assert isinstance(reply, Reply), event
    return reply


def pieces(data: bytes, bytewise: bool) -> Iterator[bytes]:
    if bytewise:
        yield from (data[i : i + 1] for i in range(len(data)))
    else:
        yield data


def pump(
    conn: ServerConnection, data: bytes, *, bytewise: bool = False, answer: App = app
) -> tuple[list[Event], bytes]:
    """Feed ``data``, answer every event, return the events (chunks merged) and the output."""
    events: list[Event] = []
    out = bytearray()
    for piece in pieces(data, bytewise):
        conn.receive_data(piece)
        while not conn.closed:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, MessageChunk) and events and isinstance(events[-1], MessageChunk):
                events[-1] = MessageChunk(events[-1].data + event.data)
            else:
                events.append(event)
            if isinstance(event, (MessageChunk, ConnectionClosed)):
                continue
            reply = answer(event)
            out += conn.send(reply)
            if isinstance(event, StartTls) and reply.code == 220:
                conn.start_tls(TLS)
    return events, bytes(out)


def transcript(
    script: str,
    *,
    config: ServerConfig = CONFIG,
    tls: TlsInfo | None = None,
    bytewise: bool = False,
    answer: App = app,
) -> ServerConnection:
    """Run a C:/S: dialogue. Client lines between two S: blocks are sent together
    (pipelined); ``\\r``, ``\\n``, ``\\x00`` escapes are allowed in C: lines; a line that
    ends with ``\\`` is sent without its CRLF."""
    conn = ServerConnection(config, tls=tls)
    expected = bytearray()
    out = bytearray(conn.greeting())
    batch = bytearray()

    def flush() -> None:
        if batch:
            out.extend(pump(conn, bytes(batch), bytewise=bytewise, answer=answer)[1])
            batch.clear()

    for raw in script.strip().splitlines():
        line = raw.lstrip()
        if line.startswith("S: "):
            flush()
            expected += line[3:].encode() + b"\r\n"
        elif line.startswith("C:"):
            text = codecs.escape_decode(line[3:].encode())[0]
            assert isinstance(text, bytes)
            batch += text[:-1] if text.endswith(b"\\") else text + b"\r\n"
        elif line:
            raise AssertionError(f"bad transcript line {line!r}")
    flush()
    assert out.decode() == expected.decode()
    return conn


def run(
    data: bytes,
    *,
    config: ServerConfig = CONFIG,
    tls: TlsInfo | None = None,
    bytewise: bool = False,
    answer: App = app,
) -> tuple[ServerConnection, list[Event], bytes]:
    """Feed ``data`` as asked; unless asked for bytes one at a time, also feed it one byte at
    a time to a second connection and check that the commands and the output agree (chunks
    may differ: byte at a time, content passes on before a later problem is known)."""
    conn = ServerConnection(config, tls=tls)
    events, out = pump(conn, data, bytewise=bytewise, answer=answer)
    if not bytewise and not any(isinstance(e, StartTls) for e in events):
        other = ServerConnection(config, tls=tls)
        other_events, other_out = pump(other, data, bytewise=True, answer=answer)
        assert other_out == out
        assert commands(other_events) == commands(events)
        assert (other.state, other.closed, other.authenticated) == (
            conn.state,
            conn.closed,
            conn.authenticated,
        )
    return conn, events, out


def commands(events: list[Event]) -> list[Event]:
    return [e for e in events if not isinstance(e, MessageChunk)]


def codes(out: bytes) -> list[str]:
    """The last line of each reply: ``"250 2.0.0"`` style prefixes."""
    return [
        " ".join(line.decode().split(" ")[:2]) for line in out.split(b"\r\n") if line[3:4] == b" "
    ]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


EHLO = b"EHLO client.test\r\n"
ENVELOPE = EHLO + b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\n"


# -- greeting, HELO, EHLO --------------------------------------------------------------------
def test_greeting() -> None:
    assert ServerConnection(CONFIG).greeting() == b"220 mx.test ESMTP postroom\r\n"


def test_full_transcript(bytewise: bool) -> None:
    conn = transcript(
        r"""
        S: 220 mx.test ESMTP postroom
        C: EHLO client.test
        S: 250-mx.test
        S: 250-PIPELINING
        S: 250-SIZE 26214400
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250-DSN
        S: 250 STARTTLS
        C: MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME
        S: 250 2.0.0 Ok
        C: RCPT TO:<b@example.test> NOTIFY=SUCCESS,FAILURE
        S: 250 2.1.5 Recipient ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: hi
        C:
        C: ..leading dot
        C: .
        S: 250 2.0.0 Ok: queued as 0123456789ABCDEF
        C: VRFY b
        S: 252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery
        C: QUIT
        S: 221 2.0.0 Bye
        """,
        bytewise=bytewise,
    )
    assert conn.closed
    assert conn.helo_name == "client.test" and conn.esmtp
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_ehlo_under_tls_offers_auth_not_starttls() -> None:
    _, events, _ = run(EHLO, tls=TLS)
    (ehlo,) = events
    assert isinstance(ehlo, Ehlo) and ehlo.reply.enhanced is None
    assert ehlo.reply.lines[-1] == "AUTH PLAIN LOGIN"
    assert "STARTTLS" not in ehlo.reply.lines


def test_ehlo_follows_the_config() -> None:
    config = ServerConfig(
        "mx.test", max_message_size=4096, chunking=False, dsn=False, smtputf8=False
    )
    _, events, _ = run(EHLO, config=config, tls=TLS)
    assert isinstance(events[0], Ehlo)
    assert events[0].reply.lines == (
        "mx.test",
        "PIPELINING",
        "SIZE 4096",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "AUTH PLAIN LOGIN",
    )
    _, events, _ = run(EHLO, config=replace(config, auth_mechanisms=()), tls=TLS)
    assert isinstance(events[0], Ehlo) and not any("AUTH" in x for x in events[0].reply.lines)


def test_helo(bytewise: bool) -> None:
    conn = transcript(
        """
        S: 220 mx.test ESMTP postroom
        C: HELO client.test
        S: 250 mx.test
        C: MAIL FROM:<>
        S: 250 2.0.0 Ok
        """,
        bytewise=bytewise,
    )
    assert conn.helo_name == "client.test" and not conn.esmtp and conn.in_transaction


@pytest.mark.parametrize("line", [b"EHLO", b"HELO", b"EHLO two words", b"EHLO " + b"x" * 256])
def test_helo_syntax(line: bytes) -> None:
    conn, _events, out = run(line + b"\r\n")
    assert codes(out) == ["501 5.5.4"]
    assert conn.state is State.INITIAL and conn.helo_name is None


def test_ehlo_resets_a_transaction() -> None:
    conn, _events, out = run(ENVELOPE + EHLO + b"RCPT TO:<b@example.test>\r\n")
    assert codes(out)[-1] == "503 5.5.1"
    assert not conn.in_transaction


def test_refused_helo_keeps_the_previous_name() -> None:
    conn = ServerConnection(CONFIG)
    conn.receive_data(b"EHLO first\r\nHELO second\r\n")
    ehlo = conn.next_event()
    assert isinstance(ehlo, Ehlo)
    conn.send(ehlo.reply)
    assert isinstance(conn.next_event(), Helo)
    conn.send(Reply(550, "5.7.1", "go away"))
    assert conn.helo_name == "first" and conn.esmtp


# -- MAIL ------------------------------------------------------------------------------------
def test_mail_event_fields() -> None:
    data = EHLO + b"MAIL FROM:<a@example.org> SIZE=100 BODY=8bitmime RET=HDRS ENVID=x+2By\r\n"
    _, events, _ = run(data)
    assert events[1] == MailFrom(
        sender=Address("a", "example.org"),
        size=100,
        body="8BITMIME",
        smtputf8=False,
        dsn=DsnRequest(ret=Ret.HDRS, envid="x+y"),
        auth=None,
    )


def test_mail_null_sender_and_source_route() -> None:
    _, events, _ = run(EHLO + b"MAIL FROM:<>\r\nRSET\r\nMAIL FROM:<@relay.test:u@example.org>\r\n")
    assert isinstance(events[1], MailFrom) and events[1].sender is None
    assert isinstance(events[3], MailFrom) and events[3].sender == Address("u", "example.org")


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"MAIL", "501 5.5.4"),
        (b"MAIL FROM", "501 5.5.4"),
        (b"MAIL TO:<a@example.org>", "501 5.5.4"),
        (b"MAIL FROM:a@example.org", "501 5.5.4"),
        (b"MAIL FROM:<a@example.org", "501 5.5.4"),
        (b"MAIL FROM:<a@example.org>SIZE=1", "501 5.5.4"),
        (b"MAIL FROM:<a@>", "501 5.1.7"),
        (b"MAIL FROM:<a b@example.org>", "501 5.5.4"),
        (b"MAIL FROM:<@example.org>", "501 5.1.7"),
        (b"MAIL FROM:<a@example.org> SIZE=1 SIZE=2", "501 5.5.4"),
        (b"MAIL FROM:<a@example.org> SIZE=x", "501 5.5.4"),
        (b"MAIL FROM:<a@example.org> SIZE=99999999999", "552 5.3.4"),
        (b"MAIL FROM:<a@example.org> FROB=1", "555 5.5.4"),
        (b"MAIL FROM:<a@example.org> NOTIFY=NEVER", "555 5.5.4"),
        (b"MAIL FROM:<a@example.org> BODY=BINARYMIME", "504 5.5.4"),
        (b"MAIL FROM:<a@example.org> AUTH=<>", "555 5.5.4"),  # AUTH not offered without TLS
        ("MAIL FROM:<jörg@example.org>".encode(), "553 5.6.7"),
    ],
)
def test_mail_refusals(line: bytes, code: str) -> None:
    conn, _, out = run(EHLO + line + b"\r\n")
    assert codes(out)[1:] == [code]
    assert not conn.in_transaction


def test_mail_smtputf8() -> None:
    data = "MAIL FROM:<jörg@bücher.example> SMTPUTF8\r\nRCPT TO:<ünï@example.test>\r\n"
    _conn, events, out = run(EHLO + data.encode())
    assert codes(out)[1:] == ["250 2.0.0", "250 2.1.5"]
    assert isinstance(events[1], MailFrom) and events[1].smtputf8
    assert isinstance(events[2], RcptTo) and events[2].recipient.local == "ünï"


def test_non_ascii_recipient_needs_smtputf8_transaction() -> None:
    data = "MAIL FROM:<a@example.org>\r\nRCPT TO:<ünï@example.test>\r\n"
    _, _, out = run(EHLO + data.encode())
    assert codes(out)[-1] == "553 5.6.7"


def test_smtputf8_not_offered() -> None:
    config = replace(CONFIG, smtputf8=False)
    _, _, out = run(EHLO + b"MAIL FROM:<a@example.org> SMTPUTF8\r\n", config=config)
    assert codes(out)[-1] == "555 5.5.4"


def test_mail_auth_parameter_under_tls() -> None:
    _, events, _ = run(EHLO + b"MAIL FROM:<a@example.org> AUTH=e+2Bx@example.org\r\n", tls=TLS)
    assert isinstance(events[1], MailFrom) and events[1].auth == "e+x@example.org"


def test_mail_sequence(bytewise: bool) -> None:
    transcript(
        """
        S: 220 mx.test ESMTP postroom
        C: MAIL FROM:<a@example.org>
        S: 503 5.5.1 Send HELO/EHLO first
        C: EHLO client.test
        S: 250-mx.test
        S: 250-PIPELINING
        S: 250-SIZE 26214400
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250-DSN
        S: 250 STARTTLS
        C: MAIL FROM:<a@example.org>
        C: MAIL FROM:<a@example.org>
        S: 250 2.0.0 Ok
        S: 503 5.5.1 Sender already specified
        """,
        bytewise=bytewise,
    )


def test_refused_mail_starts_no_transaction() -> None:
    def refuse_mail(event: Event) -> Reply:
        return r.SENDER_NOT_ALLOWED if isinstance(event, MailFrom) else app(event)

    conn, _, out = run(ENVELOPE, answer=refuse_mail)
    assert codes(out)[1:] == ["553 5.7.1", "503 5.5.1"]
    assert not conn.in_transaction


# -- RCPT ------------------------------------------------------------------------------------
def test_rcpt_event_fields() -> None:
    data = EHLO + (
        b"MAIL FROM:<a@example.org>\r\n"
        b"RCPT TO:<b@example.test> NOTIFY=success,delay ORCPT=rfc822;b+2Bx@example.test\r\n"
        b"RCPT TO:<Postmaster>\r\nRCPT TO:<@one.test,@two.test:c@example.test>\r\n"
    )
    _, events, _ = run(data)
    assert events[2] == RcptTo(
        Address("b", "example.test"),
        frozenset({Notify.SUCCESS, Notify.DELAY}),
        "rfc822;b+x@example.test",
    )
    assert isinstance(events[3], RcptTo) and events[3].recipient == Address("postmaster", "mx.test")
    assert isinstance(events[4], RcptTo) and events[4].recipient == Address("c", "example.test")


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"RCPT", "501 5.5.4"),
        (b"RCPT TO:", "501 5.5.4"),
        (b"RCPT FROM:<b@example.test>", "501 5.5.4"),
        (b"RCPT TO:<>", "501 5.1.3"),
        (b"RCPT TO:<b>", "501 5.1.3"),
        (b"RCPT TO:<b@example..test>", "501 5.1.3"),
        (b"RCPT TO:<b@example.test> NOTIFY=NEVER,SUCCESS", "501 5.5.4"),
        (b"RCPT TO:<b@example.test> SIZE=10", "555 5.5.4"),
        (b"RCPT TO:<b@example.test> ORCPT=rfc822", "501 5.5.4"),
    ],
)
def test_rcpt_refusals(line: bytes, code: str) -> None:
    _, _, out = run(EHLO + b"MAIL FROM:<a@example.org>\r\n" + line + b"\r\n")
    assert codes(out)[-1] == code


def test_rcpt_before_mail() -> None:
    _, _, out = run(EHLO + b"RCPT TO:<b@example.test>\r\n")
    assert codes(out)[-1] == "503 5.5.1"


def test_recipient_limit_counts_accepted_recipients_only() -> None:
    config = replace(CONFIG, max_recipients=2)

    def refuse_first(event: Event) -> Reply:
        if isinstance(event, RcptTo) and event.recipient.local == "nobody":
            return r.NO_SUCH_USER
        return app(event)

    rcpts = b"".join(b"RCPT TO:<%s@example.test>\r\n" % n for n in (b"nobody", b"u1", b"u2", b"u3"))
    data = EHLO + b"MAIL FROM:<a@example.org>\r\n" + rcpts + b"DATA\r\nx\r\n.\r\n"
    _, events, out = run(data, config=config, answer=refuse_first)
    assert codes(out)[1:] == [
        "250 2.0.0",
        "550 5.1.1",
        "250 2.1.5",
        "250 2.1.5",
        "452 4.5.3",
        "354 End",
        "250 2.0.0",
    ]
    assert isinstance(events[5], InvalidCommand) and not events[5].close


def test_recipient_limit_is_not_an_error() -> None:
    config = replace(CONFIG, max_recipients=1, max_errors=2)
    data = ENVELOPE + b"RCPT TO:<c@example.test>\r\n" * 5 + b"NOOP\r\n"
    conn, _, out = run(data, config=config)
    assert codes(out)[-1] == "250 2.0.0" and not conn.closed


# -- DATA ------------------------------------------------------------------------------------
def test_data_events(bytewise: bool) -> None:
    data = ENVELOPE + b"DATA\r\nSubject: x\r\n\r\n..a\r\n.b\r\n.\r\nNOOP\r\n"
    conn, events, out = run(data, bytewise=bytewise)
    assert events[3:] == [
        Data(),
        MessageChunk(b"Subject: x\r\n\r\n.a\r\nb\r\n"),
        MessageEnd(size=21, problem=None),
        events[6],
    ]
    assert codes(out)[-2:] == ["250 2.0.0", "250 2.0.0"]
    assert not conn.in_transaction


def test_empty_message() -> None:
    _, events, _ = run(ENVELOPE + b"DATA\r\n.\r\n")
    assert events[3:] == [Data(), MessageEnd(size=0, problem=None)]


@pytest.mark.parametrize(
    ("before", "code"),
    [
        (EHLO, "503 5.5.1"),
        (b"", "503 5.5.1"),
        (EHLO + b"MAIL FROM:<a@example.org>\r\n", "554 5.5.1"),
    ],
)
def test_data_out_of_sequence(before: bytes, code: str) -> None:
    _conn, _, out = run(before + b"DATA\r\nSubject: x\r\n")
    assert codes(out)[-2:] == [code, "500 5.5.2"]  # the "message" is read as commands


def test_data_with_argument() -> None:
    _, _, out = run(ENVELOPE + b"DATA now\r\n")
    assert codes(out)[-1] == "501 5.5.4"


def test_refused_data_stays_in_command_mode() -> None:
    def refuse_data(event: Event) -> Reply:
        return r.LOCAL_ERROR if isinstance(event, Data) else app(event)

    conn, _, out = run(ENVELOPE + b"DATA\r\nNOOP\r\n", answer=refuse_data)
    assert codes(out)[-2:] == ["451 4.3.0", "250 2.0.0"]
    assert conn.in_transaction


def test_message_too_big(bytewise: bool) -> None:
    config = replace(CONFIG, max_message_size=1024)
    body = b"x" * 78 + b"\r\n"
    data = ENVELOPE + b"DATA\r\n" + body * 20 + b".\r\nNOOP\r\n"
    _conn, events, out = run(data, config=config, bytewise=bytewise)
    end = events[-2]
    assert isinstance(end, MessageEnd) and end.problem == r.MESSAGE_TOO_BIG
    assert end.size == 1600
    assert sum(len(e.data) for e in events if isinstance(e, MessageChunk)) <= 1024
    assert codes(out)[-2:] == ["552 5.3.4", "250 2.0.0"]


def test_message_of_exactly_max_size() -> None:
    config = replace(CONFIG, max_message_size=12)
    _, events, _ = run(ENVELOPE + b"DATA\r\n0123456789\r\n.\r\n", config=config)
    assert events[-1] == MessageEnd(size=12, problem=None)


@pytest.mark.parametrize(
    "smuggled",
    [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\n", b"\n.\r", b"\r\n.\r", b"\r\n\x00.\r\n"],
)
def test_smuggling_never_ends_data(smuggled: bytes, bytewise: bool) -> None:
    data = (
        ENVELOPE
        + b"DATA\r\nSubject: s\r\n\r\nhello"
        + smuggled
        + b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nsmuggled\r\n.\r\n"
        + b"NOOP\r\n"
    )
    _, events, out = run(data, bytewise=bytewise)
    # Content before the smuggled sequence may have been passed on (byte at a time), but
    # the message ends only at the real end, refused.
    commands = [e for e in events[3:-1] if not isinstance(e, MessageChunk)]
    assert [type(e) for e in commands] == [Data, MessageEnd]
    assert isinstance(commands[1], MessageEnd) and commands[1].problem == r.BAD_LINE_ENDINGS
    assert all(b"MAIL" not in e.data for e in events if isinstance(e, MessageChunk))
    assert codes(out)[-2:] == ["554 5.6.0", "250 2.0.0"]


# -- BDAT ------------------------------------------------------------------------------------
def test_bdat_chunks(bytewise: bool) -> None:
    part1, part2 = b"Subject: b\r\n\r\n", b"line\r\n.dot\r\n"
    data = (
        ENVELOPE
        + b"BDAT %d\r\n" % len(part1)
        + part1
        + b"BDAT %d LAST\r\n" % len(part2)
        + part2
        + b"NOOP\r\n"
    )
    conn, events, out = run(data, bytewise=bytewise)
    assert events[3:-1] == [
        MessageChunk(part1),
        BdatChunkEnd(size=len(part1), total=len(part1), problem=None),
        MessageChunk(part2),
        MessageEnd(size=len(part1 + part2), problem=None),
    ]
    assert codes(out)[3:] == ["250 2.0.0", "250 2.0.0", "250 2.0.0"]
    assert not conn.in_transaction


def test_bdat_zero_last() -> None:
    _, events, _ = run(ENVELOPE + b"BDAT 3\r\nabcBDAT 0 LAST\r\n")
    assert events[-2:] == [
        BdatChunkEnd(size=3, total=3, problem=None),
        MessageEnd(size=3, problem=None),
    ]


@pytest.mark.parametrize(
    ("before", "code"),
    [
        (b"", "503 5.5.1"),
        (EHLO, "503 5.5.1"),
        (EHLO + b"MAIL FROM:<a@example.org>\r\n", "554 5.5.1"),
    ],
)
def test_bdat_out_of_sequence_still_consumes_its_octets(before: bytes, code: str) -> None:
    _, events, out = run(before + b"BDAT 12\r\nQUIT\r\nQUIT\r\nNOOP\r\n")
    assert codes(out)[-2:] == [code, "250 2.0.0"]
    assert not any(isinstance(e, (MessageChunk, Quit)) for e in events)


def test_bdat_after_failed_bdat_is_consumed_and_refused() -> None:
    def refuse_chunks(event: Event) -> Reply:
        return r.STORAGE_FULL if isinstance(event, BdatChunkEnd) else app(event)

    data = ENVELOPE + b"BDAT 4\r\nabcdBDAT 6 LAST\r\nQUIT\r\nRSET\r\nMAIL FROM:<a@example.org>\r\n"
    conn, _events, out = run(data, answer=refuse_chunks)
    assert codes(out)[3:] == ["452 4.3.1", "503 5.5.1", "250 2.0.0", "250 2.0.0"]
    assert conn.in_transaction and conn.state is State.MAIL


def test_bdat_then_data_is_refused() -> None:
    _, _, out = run(ENVELOPE + b"BDAT 1\r\nxDATA\r\n")
    assert codes(out)[-1] == "503 5.5.1"


def test_bdat_message_too_big() -> None:
    config = replace(CONFIG, max_message_size=8)
    data = ENVELOPE + b"BDAT 5\r\n12345BDAT 5\r\n67890BDAT 2 LAST\r\nabNOOP\r\n"
    _, events, out = run(data, config=config, answer=app)
    assert BdatChunkEnd(size=5, total=10, problem=r.MESSAGE_TOO_BIG) in events
    assert codes(out)[3:] == ["250 2.0.0", "552 5.3.4", "503 5.5.1", "250 2.0.0"]


def test_bdat_bare_lf_is_refused_at_the_end_but_split_crlf_is_fine() -> None:
    data = ENVELOPE + b"BDAT 3\r\nab\rBDAT 4 LAST\r\n\nc\nd"
    _, events, _ = run(data)
    assert events[-1] == MessageEnd(size=7, problem=r.BAD_LINE_ENDINGS)
    data = ENVELOPE + b"BDAT 3\r\nab\rBDAT 5 LAST\r\n\ncd\r\n"
    _, events, _ = run(data)
    assert events[-1] == MessageEnd(size=8, problem=None)


@pytest.mark.parametrize(
    "line",
    [b"BDAT", b"BDAT x", b"BDAT -1", b"BDAT 1 FIRST", b"BDAT 1 LAST x", b"BDAT 1" + b"0" * 20],
)
def test_bdat_syntax_error_closes(line: bytes) -> None:
    conn, events, out = run(ENVELOPE + line + b"\r\nNOOP\r\n")
    assert codes(out)[-1] == "501 5.5.4"
    assert isinstance(events[-1], InvalidCommand) and events[-1].close
    assert conn.closed


def test_bdat_without_chunking_is_consumed() -> None:
    _, _, out = run(ENVELOPE + b"BDAT 4\r\nNOOPNOOP\r\n", config=replace(CONFIG, chunking=False))
    assert codes(out)[-2:] == ["502 5.5.1", "250 2.0.0"]


# -- RSET NOOP QUIT VRFY HELP EXPN -----------------------------------------------------------
def test_simple_commands(bytewise: bool) -> None:
    transcript(
        """
        S: 220 mx.test ESMTP postroom
        C: NOOP
        C: NOOP with an argument
        C: RSET
        C: RSET now
        C: HELP
        C: HELP MAIL
        C: VRFY
        C: VRFY someone
        C: EXPN list
        C: TURN
        C: quit now
        C: QuIt
        S: 250 2.0.0 Ok
        S: 250 2.0.0 Ok
        S: 250 2.0.0 Ok
        S: 501 5.5.4 Syntax error in parameters or arguments
        S: 214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH
        S: 214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH
        S: 501 5.5.4 Syntax: VRFY address
        S: 252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery
        S: 502 5.5.1 EXPN not available
        S: 502 5.5.1 Command not implemented
        S: 501 5.5.4 Syntax error in parameters or arguments
        S: 221 2.0.0 Bye
        C: NOOP
        """,
        bytewise=bytewise,
    )


def test_vrfy_event() -> None:
    _, events, _ = run(b"VRFY someone\r\n")
    assert events == [Vrfy("someone", r.VRFY_CANNOT)]


def test_rset_ends_the_transaction_but_keeps_the_greeting() -> None:
    conn, _, _ = run(ENVELOPE + b"RSET\r\n")
    assert conn.state is State.READY and not conn.in_transaction
    conn, _, _ = run(b"RSET\r\n")
    assert conn.state is State.INITIAL


def test_quit_closes() -> None:
    conn, _events, out = run(b"QUIT\r\nNOOP\r\n")
    assert conn.closed and codes(out) == ["221 2.0.0"]
    assert isinstance(conn.next_event(), ConnectionClosed)
    conn.receive_data(b"NOOP\r\n")  # ignored
    assert isinstance(conn.next_event(), ConnectionClosed)


# -- STARTTLS --------------------------------------------------------------------------------
def test_starttls_drops_pipelined_commands_and_resets() -> None:
    # Whole reads only: byte at a time, the driver would have done the handshake before
    # the next byte arrived (test_bytes_before_the_handshake_are_dropped covers the rest).
    conn = transcript(
        """
        S: 220 mx.test ESMTP postroom
        C: EHLO client.test
        C: MAIL FROM:<a@example.org>
        S: 250-mx.test
        S: 250-PIPELINING
        S: 250-SIZE 26214400
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250-DSN
        S: 250 STARTTLS
        S: 250 2.0.0 Ok
        C: RSET
        C: STARTTLS
        C: MAIL FROM:<evil@example.org>
        S: 250 2.0.0 Ok
        S: 220 2.0.0 Ready to start TLS
        C: RCPT TO:<b@example.test>
        S: 503 5.5.1 Need MAIL command first
        C: MAIL FROM:<a@example.org>
        S: 503 5.5.1 Send HELO/EHLO first
        """,
    )
    assert conn.tls == TLS and conn.helo_name is None and not conn.authenticated


def test_bytes_before_the_handshake_are_dropped() -> None:
    conn = ServerConnection(CONFIG)
    conn.receive_data(b"STARTTLS\r\n")
    assert isinstance(conn.next_event(), StartTls)
    conn.send(r.TLS_READY)
    conn.receive_data(b"MAIL FROM:<evil@example.org>\r\n")
    assert conn.next_event() is NEED_DATA
    conn.start_tls(TLS)
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"NOOP\r\n")
    assert isinstance(conn.next_event(), Noop)


def test_starttls_refused_by_the_application_keeps_reading() -> None:
    def no_tls(event: Event) -> Reply:
        return r.TLS_NOT_AVAILABLE if isinstance(event, StartTls) else app(event)

    conn, _, out = run(b"STARTTLS\r\nNOOP\r\n", answer=no_tls)
    assert codes(out) == ["454 4.7.0", "250 2.0.0"] and conn.tls is None


@pytest.mark.parametrize(
    ("data", "config", "tls", "code"),
    [
        (b"STARTTLS\r\n", CONFIG, TLS, "503 5.5.1"),
        (b"STARTTLS\r\n", replace(CONFIG, starttls_available=False), None, "502 5.5.1"),
        (b"STARTTLS now\r\n", CONFIG, None, "501 5.5.4"),
        (ENVELOPE + b"STARTTLS\r\n", CONFIG, None, "503 5.5.1"),
    ],
)
def test_starttls_refusals(
    data: bytes, config: ServerConfig, tls: TlsInfo | None, code: str
) -> None:
    _, _, out = run(data, config=config, tls=tls)
    assert codes(out)[-1] == code


def test_start_tls_without_starttls_is_a_driver_bug() -> None:
    with pytest.raises(RuntimeError):
        ServerConnection(CONFIG).start_tls(TLS)


# -- AUTH ------------------------------------------------------------------------------------
PLAIN = b64("\0user\0secret")


@pytest.mark.parametrize(
    "exchange",
    [
        f"C: AUTH PLAIN {PLAIN}",
        f"C: AUTH plain\nS: 334 \nC: {PLAIN}",
        f"C: AUTH LOGIN\nS: 334 VXNlcm5hbWU6\nC: {b64('user')}\n"
        f"S: 334 UGFzc3dvcmQ6\nC: {b64('secret')}",
        f"C: AUTH LOGIN {b64('user')}\nS: 334 UGFzc3dvcmQ6\nC: {b64('secret')}",
    ],
)
def test_auth_exchanges(exchange: str, bytewise: bool) -> None:
    script = f"""
        S: 220 mx.test ESMTP postroom
        C: EHLO client.test
        S: 250-mx.test
        S: 250-PIPELINING
        S: 250-SIZE 26214400
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250-DSN
        S: 250 AUTH PLAIN LOGIN
        {exchange}
        S: 235 2.7.0 Authentication successful
        C: AUTH PLAIN {PLAIN}
        S: 503 5.5.1 Already authenticated
        """
    conn = transcript(script, tls=TLS, bytewise=bytewise)
    assert conn.authenticated


def test_auth_credentials_event() -> None:
    response = b64("admin\0user\0pw")
    _, events, _ = run(EHLO + f"AUTH PLAIN {response}\r\n".encode(), tls=TLS)
    assert events[1] == AuthCredentials("PLAIN", "admin", "user", "pw")


def test_auth_failure_then_success() -> None:
    bad = b64("\0u\0bad")
    conn, _, out = run(EHLO + f"AUTH PLAIN {bad}\r\nAUTH PLAIN {PLAIN}\r\n".encode(), tls=TLS)
    assert codes(out)[1:] == ["535 5.7.8", "235 2.7.0"] and conn.authenticated


def test_auth_empty_initial_response() -> None:
    _, _, out = run(EHLO + b"AUTH PLAIN =\r\n", tls=TLS)
    assert codes(out)[-1] == "501 5.5.2"


@pytest.mark.parametrize(
    ("data", "tls", "code"),
    [
        (EHLO + b"AUTH PLAIN\r\n*\r\nNOOP\r\n", TLS, "501 5.7.0"),
        (EHLO + b"AUTH PLAIN\r\n!!!\r\nNOOP\r\n", TLS, "501 5.5.2"),
        (EHLO + b"AUTH LOGIN\r\n\xff\r\nNOOP\r\n", TLS, "501 5.5.2"),
        (EHLO + b"AUTH PLAIN AAAA\r\nNOOP\r\n", TLS, "501 5.5.2"),
    ],
)
def test_auth_exchange_failures_return_to_commands(data: bytes, tls: TlsInfo, code: str) -> None:
    conn, _, out = run(data, tls=tls)
    assert codes(out)[-2:] == [code, "250 2.0.0"] and not conn.authenticated


@pytest.mark.parametrize(
    ("data", "tls", "code"),
    [
        (EHLO + b"AUTH PLAIN\r\n", None, "538 5.7.11"),
        (EHLO + b"AUTH CRAM-MD5\r\n", TLS, "504 5.5.4"),
        (EHLO + b"AUTH\r\n", TLS, "501 5.5.4"),
        (EHLO + b"AUTH PLAIN a b\r\n", TLS, "501 5.5.4"),
        (b"AUTH PLAIN\r\n", TLS, "503 5.5.1"),
        (ENVELOPE + b"AUTH PLAIN\r\n", TLS, "503 5.5.1"),
    ],
)
def test_auth_refusals(data: bytes, tls: TlsInfo | None, code: str) -> None:
    _, _, out = run(data, tls=tls)
    assert codes(out)[-1] == code


def test_auth_mechanism_not_configured() -> None:
    config = replace(CONFIG, auth_mechanisms=("PLAIN",))
    _, _, out = run(EHLO + b"AUTH LOGIN\r\n", config=config, tls=TLS)
    assert codes(out)[-1] == "504 5.5.4"


def test_auth_challenge_answered_otherwise_ends_the_exchange() -> None:
    def throttled(event: Event) -> Reply:
        return r.AUTH_THROTTLED if isinstance(event, AuthChallenge) else app(event)

    _conn, _, out = run(EHLO + b"AUTH LOGIN\r\nNOOP\r\n", tls=TLS, answer=throttled)
    assert codes(out)[-2:] == ["454 4.7.0", "250 2.0.0"]


def test_auth_required(bytewise: bool) -> None:
    config = replace(CONFIG, auth_required=True)
    transcript(
        f"""
        S: 220 mx.test ESMTP postroom
        C: HELO client.test
        S: 250 mx.test
        C: MAIL FROM:<a@example.org>
        S: 530 5.7.0 Must issue a STARTTLS command first
        C: STARTTLS
        S: 220 2.0.0 Ready to start TLS
        C: HELO client.test
        S: 250 mx.test
        C: MAIL FROM:<a@example.org>
        S: 530 5.7.0 Authentication required
        C: AUTH PLAIN {PLAIN}
        S: 235 2.7.0 Authentication successful
        C: MAIL FROM:<a@example.org>
        S: 250 2.0.0 Ok
        """,
        config=config,
        bytewise=bytewise,
    )


def test_auth_required_without_starttls() -> None:
    config = replace(CONFIG, auth_required=True, starttls_available=False)
    _, _, out = run(EHLO + b"MAIL FROM:<a@example.org>\r\n", config=config)
    assert codes(out)[-1] == "530 5.7.0"


# -- errors, limits, framing -----------------------------------------------------------------
@pytest.mark.parametrize(
    "line",
    [b"FROB", b"", b"   ", b"M@IL FROM:<a@b.c>", b"NO\x00OP", b"NOOP \xff\xfe", b"\x1b[A", b"1234"],
)
def test_junk_gets_500(line: bytes) -> None:
    _conn, _events, out = run(line + b"\r\nNOOP\r\n")
    assert codes(out) == ["500 5.5.2", "250 2.0.0"]


def test_line_too_long_is_discarded_to_its_end(bytewise: bool) -> None:
    config = replace(CONFIG, max_line_length=512)
    data = b"NOOP " + b"x" * 600 + b"\r\nNOOP\r\n"
    _, _, out = run(data, config=config, bytewise=bytewise)
    assert codes(out) == ["500 5.5.2", "250 2.0.0"]


def test_line_at_the_limit_is_accepted() -> None:
    config = replace(CONFIG, max_line_length=512)
    line = b"NOOP " + b"x" * (512 - 7)
    assert len(line + b"\r\n") == 512
    _, _, out = run(line + b"\r\n" + line + b"x\r\n", config=config)
    assert codes(out) == ["250 2.0.0", "500 5.5.2"]


def test_bare_lf_ends_a_command_line() -> None:
    _, _, out = run(b"NOOP\nNOOP\r\n")
    assert codes(out) == ["250 2.0.0", "250 2.0.0"]


def test_too_many_errors_closes(bytewise: bool) -> None:
    config = replace(CONFIG, max_errors=3)
    conn, events, out = run(b"FROB\r\nFROB\r\nFROB\r\nNOOP\r\n", config=config, bytewise=bytewise)
    assert codes(out) == ["500 5.5.2", "500 5.5.2", "421 4.7.0"]
    assert events[-1] == InvalidCommand(r.TOO_MANY_ERRORS, close=True)
    assert conn.closed


def test_declined_commands_are_not_errors() -> None:
    config = replace(CONFIG, max_errors=2)
    conn, _, out = run(b"EXPN x\r\nTURN\r\nETRN x\r\nNOOP\r\n", config=config)
    assert codes(out)[-1] == "250 2.0.0" and not conn.closed


def test_an_application_421_closes() -> None:
    conn, _, out = run(b"NOOP\r\nNOOP\r\n", answer=lambda e: r.SHUTTING_DOWN)
    assert codes(out) == ["421 4.3.2"] and conn.closed


def test_shutdown() -> None:
    conn = ServerConnection(CONFIG)
    conn.receive_data(b"NOOP\r\n")
    conn.next_event()
    assert conn.shutdown(r.TIMEOUT) == b"421 4.4.2 Timeout exceeded\r\n"
    assert conn.closed and isinstance(conn.next_event(), ConnectionClosed)
    with pytest.raises(RuntimeError):
        conn.send(r.OK)


@pytest.mark.parametrize(
    "data",
    [b"", b"NOOP", ENVELOPE + b"DATA\r\nhalf a message", ENVELOPE + b"BDAT 10\r\nabc"],
)
def test_peer_close(data: bytes) -> None:
    conn = ServerConnection(CONFIG)
    pump(conn, data)
    conn.receive_data(b"")
    event = conn.next_event()
    while isinstance(event, MessageChunk):
        event = conn.next_event()
    assert isinstance(event, ConnectionClosed) and conn.closed


def test_commands_before_eof_are_still_answered() -> None:
    conn = ServerConnection(CONFIG)
    conn.receive_data(b"NOOP\r\n")
    conn.receive_data(b"")
    assert conn.next_event() != NEED_DATA
    conn.send(r.OK)
    assert isinstance(conn.next_event(), ConnectionClosed)


# -- the driver contract ---------------------------------------------------------------------
def test_one_command_ahead_only() -> None:
    conn = ServerConnection(CONFIG)
    conn.receive_data(b"NOOP\r\nNOOP\r\n")
    conn.next_event()
    with pytest.raises(RuntimeError):
        conn.next_event()
    conn.send(r.OK)
    conn.next_event()


def test_send_without_a_command_is_a_driver_bug() -> None:
    with pytest.raises(RuntimeError):
        ServerConnection(CONFIG).send(r.OK)


def test_pipelined_replies_keep_their_order() -> None:
    data = ENVELOPE + b"RCPT TO:<>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n"
    _, events, out = run(data)
    assert codes(out)[1:] == ["250 2.0.0", "250 2.1.5", "501 5.1.3", "250 2.1.5", "354 End"]
    assert [type(e) for e in events[1:]] == [MailFrom, RcptTo, InvalidCommand, RcptTo, Data]


def test_in_transaction() -> None:
    conn = ServerConnection(CONFIG)
    seen = []
    for line in (EHLO, b"MAIL FROM:<a@example.org>\r\n", b"RCPT TO:<b@example.test>\r\n"):
        pump(conn, line)
        seen.append(conn.in_transaction)
    pump(conn, b"DATA\r\nx\r\n")
    seen.append(conn.in_transaction)
    pump(conn, b".\r\n")
    seen.append(conn.in_transaction)
    assert seen == [False, True, True, True, False]


@pytest.mark.parametrize(
    "make",
    [
        lambda: ServerConfig("mx.test", max_line_length=100),
        lambda: ServerConfig("mx.test", max_errors=0),
        lambda: ServerConfig("mx.test", auth_mechanisms=("CRAM-MD5",)),
    ],
    ids=["max_line_length", "max_errors", "auth_mechanisms"],
)
def test_config_is_checked(make: Callable[[], ServerConfig]) -> None:
    with pytest.raises(ValueError):
        make()


# -- replies ---------------------------------------------------------------------------------
def test_reply_bytes() -> None:
    assert r.OK.to_bytes() == b"250 2.0.0 Ok\r\n"
    assert Reply(250, None, ("a", "b", "c")).to_bytes() == b"250-a\r\n250-b\r\n250 c\r\n"
    assert Reply(550, "5.1.1", ("x", "y")).to_bytes() == b"550-5.1.1 x\r\n550 5.1.1 y\r\n"
    assert Reply(334, None, "").to_bytes() == b"334 \r\n"
    assert Reply(250, None, ()).to_bytes() == b"250 \r\n"


def test_a_reply_once_sent_equals_and_renders_as_before() -> None:
    sent, fresh = Reply(250, "2.1.5", "Recipient ok"), Reply(250, "2.1.5", "Recipient ok")
    assert sent.to_bytes() == sent.to_bytes() == b"250 2.1.5 Recipient ok\r\n"
    assert (sent, hash(sent), repr(sent)) == (fresh, hash(fresh), repr(fresh))
    # A reply made from a sent one renders its own text, not the one it came from.
    assert sent.with_text("Other").to_bytes() == b"250 2.1.5 Other\r\n"
    assert replace(sent, code=251).to_bytes() == b"251 2.1.5 Recipient ok\r\n"


def test_reply_text_cannot_forge_lines() -> None:
    assert Reply(250, None, "a\r\n250 b").to_bytes() == b"250 a  250 b\r\n"


def test_reply_table_is_consistent() -> None:
    assert {"OK", "BAD_SEQUENCE", "MESSAGE_TOO_BIG", "BAD_LINE_ENDINGS"} <= set(r.REPLY_TABLE)
    used = {reply.code for reply in r.REPLY_TABLE.values()}
    rfc_codes = {211, 214, 220, 221, 235, 250, 251, 252, 334, 354, 421, 450, 451, 452, 454, 455}
    rfc_codes |= {500, 501, 502, 503, 504, 530, 534, 535, 538, 550, 551, 552, 553, 554, 555}
    assert rfc_codes <= used
    for name, reply in r.REPLY_TABLE.items():
        if reply.enhanced is None:
            assert reply.code in (334, 354), name
        else:
            assert reply.enhanced.split(".")[0] == str(reply.code)[0], name
        assert getattr(r, name) is reply


def test_awaiting_reply_is_true_from_an_event_until_its_send() -> None:
    conn = ServerConnection(CONFIG)
    conn.receive_data(b"NOOP\r\n")
    awaiting = [conn.awaiting_reply]
    assert isinstance(conn.next_event(), Noop)
    awaiting.append(conn.awaiting_reply)
    conn.send(r.OK)
    awaiting.append(conn.awaiting_reply)
    assert conn.next_event() is NEED_DATA
    awaiting.append(conn.awaiting_reply)
    assert awaiting == [False, True, False, False]
