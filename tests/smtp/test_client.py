"""The sans-IO client core: reply framing, capabilities, command and DATA writers."""

from __future__ import annotations

import base64
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postroom.smtp.client import (
    DATA,
    HELO_CAPABILITIES,
    Capabilities,
    ReplyError,
    ReplyParser,
    auth_plain,
    base64_line,
    command,
    mail_from,
    message_data,
    rcpt_to,
)
from postroom.smtp.receiver import DataReader, ReceiveBuffer
from postroom.smtp.replies import Reply


def parse(pieces: Iterable[bytes]) -> list[Reply]:
    parser = ReplyParser()
    out: list[Reply] = []
    for piece in pieces:
        parser.feed(piece)
        while (reply := parser.next_reply()) is not None:
            out.append(reply)
    return out


def splits(data: bytes) -> Iterable[list[bytes]]:
    """The whole, one byte at a time, and cut in two at every boundary."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]


# -- replies ---------------------------------------------------------------------------------
STREAM = (
    b"220 mx.test ESMTP ready\r\n"
    b"250-mx.test greets you\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 ENHANCEDSTATUSCODES\r\n"
    b"250 2.1.0 Sender ok\r\n"
    b"451-4.7.1 Greylisted,\r\n451 4.7.1 come back later\r\n"
    b"550 5.1.1 No such user\r\n"
    b"354 End data with <CR><LF>.<CR><LF>\r\n"
    b"250 2.0.0 Ok: queued as X\r\n"
)
EXPECTED = [
    Reply(220, "2.0.0", "mx.test ESMTP ready"),
    Reply(250, "2.0.0", ("mx.test greets you", "PIPELINING", "SIZE 1000", "ENHANCEDSTATUSCODES")),
    Reply(250, "2.1.0", "Sender ok"),
    Reply(451, "4.7.1", ("Greylisted,", "come back later")),
    Reply(550, "5.1.1", "No such user"),
    Reply(354, None, "End data with <CR><LF>.<CR><LF>"),
    Reply(250, "2.0.0", "Ok: queued as X"),
]


def test_replies_split_at_every_byte_boundary() -> None:
    for pieces in splits(STREAM):
        assert parse(pieces) == EXPECTED


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"250 Ok\n", Reply(250, "2.0.0", "Ok")),  # a bare LF ends a line too
        (b"250\r\n", Reply(250, "2.0.0", "")),  # RFC 5321 4.2: the text is optional
        (b"250-\r\n250 \r\n", Reply(250, "2.0.0", ("", ""))),
        (b"451 5.7.1 odd\r\n", Reply(451, "4.7.1", "odd")),  # the class follows the code
        (b"550 5.1.1\r\n", Reply(550, "5.1.1", "")),
        (b"550 5.1.1x no code\r\n", Reply(550, "5.0.0", "5.1.1x no code")),
        (b"554-5.7.1 one\r\n554 two\r\n", Reply(554, "5.7.1", ("one", "two"))),
        (b"334 VXNlcm5hbWU6\r\n", Reply(334, None, "VXNlcm5hbWU6")),
        (b"250 caf\xc3\xa9 \xff\r\n", Reply(250, "2.0.0", "caf\u00e9 \ufffd")),
    ],
)
def test_reply_forms(data: bytes, expected: Reply) -> None:
    assert parse([data]) == [expected]


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 400 Bad Request\r\n",
        b"25 short\r\n",
        b"650 no such class\r\n",
        b"250_what\r\n",
        b"250-one\r\n251 two\r\n",  # the code changed within a reply
        b"2" * 9000,  # no line end in sight
    ],
)
def test_what_is_not_a_reply_raises_reply_error(data: bytes) -> None:
    parser = ReplyParser()
    parser.feed(b"220 hello\r\n" + data)
    assert parser.next_reply() == Reply(220, "2.0.0", "hello")  # what came before stands
    with pytest.raises(ReplyError):
        parser.next_reply()
    assert parser.failed
    parser.feed(b"250 Ok\r\n")  # nothing after the fault is believed
    with pytest.raises(ReplyError):
        parser.next_reply()


def test_pending_tells_whether_anything_is_held() -> None:
    parser = ReplyParser()
    held = [parser.pending]
    parser.feed(b"220 go\r\n")
    held.append(parser.pending)
    assert parser.next_reply() is not None
    held.append(parser.pending)
    parser.feed(b"2")
    held.append(parser.pending)
    assert held == [False, True, False, True]


def test_feeding_one_byte_at_a_time_is_not_quadratic() -> None:
    parser = ReplyParser()
    line = b"250-" + b"x" * 8000 + b"\r\n"
    for byte in (line + b"250 end\r\n").__iter__():
        parser.feed(bytes((byte,)))
    reply = parser.next_reply()
    assert reply is not None and reply.lines[1] == "end"


@given(
    st.integers(200, 599),
    st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40), min_size=1),
)
def test_our_own_replies_round_trip(code: int, lines: list[str]) -> None:
    """Whatever ``Reply.to_bytes`` writes (the server side), the parser reads back."""
    original = Reply(code, None, tuple(lines) if len(lines) > 1 else lines[0])
    [parsed] = parse([original.to_bytes()])
    assert parsed.code == code
    assert len(parsed.lines) == len(lines)


# -- capabilities ----------------------------------------------------------------------------
def test_capabilities_from_ehlo() -> None:
    reply = Reply(
        250,
        None,
        (
            "mx.test Hello",
            "PIPELINING",
            "SIZE 35882577",
            "8BITMIME",
            "AUTH PLAIN LOGIN",
            "AUTH=CRAM-MD5",
            "STARTTLS",
            "ENHANCEDSTATUSCODES",
            "DSN",
            "SMTPUTF8",
            "-not-a-keyword",
        ),
    )
    caps = Capabilities.from_ehlo(reply)
    assert caps.pipelining and caps.starttls and caps.esmtp
    assert caps.size == 35882577
    assert caps.auth == {"PLAIN", "LOGIN", "CRAM-MD5"}
    assert set(caps.extensions) == {
        "pipelining", "size", "8bitmime", "auth", "starttls", "enhancedstatuscodes", "dsn",
        "smtputf8",
    }  # fmt: skip


@pytest.mark.parametrize(("line", "size"), [("SIZE", None), ("SIZE 0", None), ("SIZE x", None)])
def test_size_without_a_limit(line: str, size: int | None) -> None:
    assert Capabilities.from_ehlo(Reply(250, None, ("mx", line))).size == size


def test_helo_means_no_extensions() -> None:
    assert not HELO_CAPABILITIES.esmtp and not HELO_CAPABILITIES.extensions
    assert not HELO_CAPABILITIES.pipelining and HELO_CAPABILITIES.auth == frozenset()


# -- commands --------------------------------------------------------------------------------
def test_commands() -> None:
    assert mail_from("a@x.test", ["SIZE=5", "BODY=8BITMIME"]) == (
        b"MAIL FROM:<a@x.test> SIZE=5 BODY=8BITMIME\r\n"
    )
    assert mail_from("") == b"MAIL FROM:<>\r\n"
    assert rcpt_to("j\u00f6rg@x.test") == "RCPT TO:<j\u00f6rg@x.test>\r\n".encode()
    assert DATA == b"DATA\r\n"
    assert command("EHLO", "mail.test") == b"EHLO mail.test\r\n"


@pytest.mark.parametrize("bad", ["a@x.test>\r\nRCPT TO:<b@y.test", "a\n@x", "a\r@x", "a\0@x"])
def test_a_line_break_cannot_smuggle_a_command(bad: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        rcpt_to(bad)


def test_sasl_responses() -> None:
    line = auth_plain("user", "p\u00e4ss")
    assert line.startswith(b"AUTH PLAIN ") and line.endswith(b"\r\n")
    assert base64.b64decode(line[11:-2]) == "\0user\0p\u00e4ss".encode()
    assert base64_line("user") == b"dXNlcg==\r\n"


# -- DATA ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"a", b"a\r\n.\r\n"),  # the last line gets its CRLF
        (b"", b".\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"x\r\n.\r\n..x\r\n.x\r\n", b"x\r\n..\r\n...x\r\n..x\r\n.\r\n"),
        (b"x\r\n.", b"x\r\n..\r\n.\r\n"),
        (b"x\n.\ny\rz\r\n", b"x\r\n..\r\ny\r\nz\r\n.\r\n"),  # no bare CR or LF leaves
    ],
)
def test_message_data_is_dot_stuffed(data: bytes, wire: bytes) -> None:
    assert message_data(data) == wire


def unstuff(wire: bytes) -> bytes:
    """The server side of DATA (our own receiver), after the DATA command's CRLF."""
    buffer, reader = ReceiveBuffer(), DataReader(1 << 24)
    buffer.feed(wire)
    content = reader.read(buffer)
    assert reader.ended and not buffer.data
    return content


@given(st.lists(st.binary(max_size=20).map(lambda b: bytes(c for c in b if c not in b"\r\n\0"))))
def test_dot_stuffing_round_trips_through_our_receiver(lines: list[bytes]) -> None:
    data = b"".join(line + b"\r\n" for line in lines)
    assert unstuff(message_data(data)) == data
