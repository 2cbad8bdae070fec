"""Framing: command lines, DATA (end marker, dot-unstuffing, smuggling), BDAT counts."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable

import pytest

from postroom.smtp import replies as r
from postroom.smtp.receiver import (
    TOO_LONG,
    BdatReader,
    DataReader,
    LineEndings,
    MessageBody,
    ReceiveBuffer,
)
from postroom.smtp.replies import Reply

MAX = 1 << 20


def lines(pieces: Iterable[bytes], limit: int = 64) -> list[bytes | str]:
    buffer = ReceiveBuffer()
    out: list[bytes | str] = []
    for piece in pieces:
        buffer.feed(piece)
        while (line := buffer.read_line(limit)) is not None:
            out.append("TOO_LONG" if line is TOO_LONG else line)
    return out


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# -- command lines ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"NOOP\r\n", [b"NOOP"]),
        (b"NOOP\n", [b"NOOP"]),
        (b"A\r\nB\r\nC", [b"A", b"B"]),
        (b"\r\n", [b""]),
        (b"A\rB\r\n", [b"A\rB"]),
        (b"x" * 62 + b"\r\n", [b"x" * 62]),
        (b"x" * 63 + b"\r\nNEXT\r\n", ["TOO_LONG", b"NEXT"]),
        (b"x" * 64 + b"\r\nNEXT\r\n", ["TOO_LONG", b"NEXT"]),
        (b"x" * 63 + b"\n", [b"x" * 63]),
        (b"x" * 200 + b"\r\nNEXT\r\n", ["TOO_LONG", b"NEXT"]),
        (b"x" * 200 + b"\r\n" + b"y" * 200 + b"\r\nNEXT\r\n", ["TOO_LONG", "TOO_LONG", b"NEXT"]),
    ],
)
def test_read_line(data: bytes, expected: list[bytes | str]) -> None:
    assert lines([data]) == expected
    assert lines(bytewise(data)) == expected


def test_overlong_line_reported_before_it_ends() -> None:
    buffer = ReceiveBuffer()
    buffer.feed(b"x" * 100)
    assert buffer.read_line(64) is TOO_LONG
    buffer.feed(b"x" * 100)
    assert buffer.read_line(64) is None
    assert len(buffer) == 0  # the rest of the line is not kept
    buffer.feed(b"x\r\nNOOP\r\n")
    assert buffer.read_line(64) == b"NOOP"


def test_byte_at_a_time_is_not_quadratic() -> None:
    buffer = ReceiveBuffer()
    for _ in range(2000):
        buffer.feed(b"x")
        assert buffer.read_line(4096) is None
    assert buffer._searched == 2000


def test_clear_and_eof() -> None:
    buffer = ReceiveBuffer()
    buffer.feed(b"abc")
    buffer.feed(b"")
    assert buffer.eof and len(buffer) == 3
    buffer.clear()
    assert len(buffer) == 0


# -- DATA ------------------------------------------------------------------------------------
def read_data(
    pieces: Iterable[bytes], max_size: int = MAX
) -> tuple[bytes, bool, Reply | None, bytes, int]:
    """(content, ended, problem, what is left after the end, number of chunks)."""
    buffer = ReceiveBuffer()
    reader = DataReader(max_size)
    content = bytearray()
    chunks = 0
    for piece in pieces:
        buffer.feed(piece)
        chunk = reader.read(buffer)
        if chunk:
            chunks += 1
            content += chunk
        if reader.ended:
            assert reader.read(buffer) == b""
    return bytes(content), reader.ended, reader.body.problem, bytes(buffer.data), chunks


def splits(data: bytes) -> Iterable[list[bytes]]:
    yield [data]
    yield bytewise(data)
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]


@pytest.mark.parametrize(
    ("wire", "content", "rest"),
    [
        (b".\r\n", b"", b""),  # the DATA command's CRLF comes before the dot: empty message
        (b"a\r\n.\r\n", b"a\r\n", b""),
        (b"..\r\n.\r\n", b".\r\n", b""),  # a line that is one dot, stuffed
        (b"...\r\n.\r\n", b"..\r\n", b""),
        (b".x\r\n.\r\n", b"x\r\n", b""),  # RFC 5321 4.5.2: a leading dot is always dropped
        (b"a\r\n..b\r\n..\r\n.\r\n", b"a\r\n.b\r\n.\r\n", b""),
        (b"a\r\n\r\n.\r\n", b"a\r\n\r\n", b""),
        (b"a.\r\n.\r\n", b"a.\r\n", b""),
        (b"a\r\n.\r\n.\r\n", b"a\r\n", b".\r\n"),  # left for the command reader
        (b"\r\n.\r\n", b"\r\n", b""),
        (b".\r\n\r\n.\r\n", b"", b"\r\n.\r\n"),
    ],
)
def test_data_framing(wire: bytes, content: bytes, rest: bytes) -> None:
    for pieces in splits(wire):
        assert read_data(pieces)[:4] == (content, True, None, rest), pieces


def test_data_leaves_what_follows_the_end() -> None:
    for pieces in splits(b"a\r\n.\r\nQUIT\r\n"):
        got, ended, _, left, _ = read_data(pieces)
        assert (got, ended, left) == (b"a\r\n", True, b"QUIT\r\n"), pieces


def test_data_waits_for_more() -> None:
    for wire in (b"", b".", b".\r", b"a\r", b"a\r\n", b"a\r\n.", b"a\r\n.\r"):
        got, ended, problem, _, _ = read_data([wire])
        assert not ended and problem is None
        assert b"\r" not in got  # a possible start of the end marker is held back


SMUGGLED = [
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\n",
    b"\n.\r",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\n.\r\x00\n",
    b"\n\n.\n\n",
    b"\r\n.\r\r\n",
]


@pytest.mark.parametrize("smuggled", SMUGGLED)
def test_smuggling_variants_do_not_end_data(smuggled: bytes) -> None:
    injected = b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<v@example.test>\r\nDATA\r\nevil\r\n"
    wire = b"Subject: s\r\n\r\nhello" + smuggled + injected + b".\r\nNOOP\r\n"
    for pieces in splits(wire):
        _, ended, problem, left, _ = read_data(pieces)
        assert ended, pieces
        assert problem == r.BAD_LINE_ENDINGS, pieces
        assert left == b"NOOP\r\n", pieces


@pytest.mark.parametrize(
    "wire",
    [
        b"a\nb\r\n.\r\n",
        b"a\rb\r\n.\r\n",
        b"a\x00b\r\n.\r\n",
        b"\nab\r\n.\r\n",
        b"ab\r\r\n.\r\n",
        b"ab\r\n\n.\r\n.\r\n",
        b"a\r\n.\r\r\n.\r\n",
    ],
)
def test_bare_cr_lf_and_nul_anywhere(wire: bytes) -> None:
    for pieces in splits(wire):
        _, ended, problem, left, _ = read_data(pieces)
        assert (ended, problem, left) == (True, r.BAD_LINE_ENDINGS, b""), pieces


def test_every_split_of_a_message_gives_the_same_content() -> None:
    wire = b"..a\r\n..\r\nb\r\n.c\r\n\r\n.\r\nX"
    whole = read_data([wire])
    assert whole[:4] == (b".a\r\n.\r\nb\r\nc\r\n\r\n", True, None, b"X")
    for i, j in itertools.combinations(range(len(wire) + 1), 2):
        assert read_data([wire[:i], wire[i:j], wire[j:]])[:4] == whole[:4], (i, j)


def test_end_marker_split_at_every_offset() -> None:
    body = b"x" * 10
    for i in range(1, 5):
        pieces = [body + b"\r\n.\r\n"[:i], b"\r\n.\r\n"[i:] + b"NEXT"]
        assert read_data(pieces)[:4] == (body + b"\r\n", True, None, b"NEXT")


def test_size_limit() -> None:
    line = b"y" * 98 + b"\r\n"
    content, ended, problem, left, _ = read_data([line * 10 + b".\r\nN"], max_size=1000)
    assert (len(content), ended, problem, left) == (1000, True, None, b"N")
    content, ended, problem, left, _ = read_data([line * 11 + b".\r\nN"], max_size=1000)
    assert (content, ended, problem, left) == (b"", True, r.MESSAGE_TOO_BIG, b"N")


def test_past_the_limit_the_rest_is_drained() -> None:
    line = b"y" * 98 + b"\r\n"
    buffer = ReceiveBuffer()
    reader = DataReader(1000)
    emitted = 0
    for _ in range(50):
        buffer.feed(line * 5)
        emitted += len(reader.read(buffer))
        assert len(buffer) <= 2
    buffer.feed(b".\r\n")
    reader.read(buffer)
    assert reader.ended and reader.body.problem == r.MESSAGE_TOO_BIG
    # Content passes on while it fits (the trailing CRLF of a read waits for the next one).
    assert reader.body.size == 50 * 500 and emitted == 998


def test_first_problem_wins() -> None:
    _, _, problem, _, _ = read_data([b"a\nb" + b"x" * 100 + b"\r\n.\r\n"], max_size=10)
    assert problem == r.BAD_LINE_ENDINGS


def test_a_4k_message_is_one_chunk() -> None:
    wire = (b"z" * 78 + b"\r\n") * 51 + b".\r\n"
    content, ended, _, _, chunks = read_data([wire])
    assert ended and chunks == 1 and len(content) == 80 * 51


def test_large_message_in_large_reads_is_fast() -> None:
    size = 25 * 1024 * 1024
    line = b"q" * 998 + b"\r\n"
    read = line * 256  # 256 KB reads, as the driver does
    start = time.perf_counter()
    buffer = ReceiveBuffer()
    reader = DataReader(size + 1)
    total = chunks = 0
    for _ in range(size // len(read)):
        buffer.feed(read)
        chunk = reader.read(buffer)
        total += len(chunk)
        chunks += 1
    buffer.feed(b".\r\n")
    total += len(reader.read(buffer))
    elapsed = time.perf_counter() - start
    assert reader.ended and reader.body.problem is None and total == reader.body.size
    assert chunks == size // len(read)
    assert elapsed < 5.0  # about 0.1 s on a laptop; quadratic copying would take minutes


# -- BDAT ------------------------------------------------------------------------------------
def test_bdat_reads_exactly_its_count() -> None:
    for pieces in splits(b"0123456789MORE"):
        buffer = ReceiveBuffer()
        body = MessageBody(MAX)
        reader = BdatReader(10, last=False, body=body)
        out = bytearray()
        for piece in pieces:
            buffer.feed(piece)
            out += reader.read(buffer)
        assert out == b"0123456789" and reader.done
        assert bytes(buffer.data) == b"MORE" and body.size == 10


def test_bdat_dot_and_crlf_are_plain_octets() -> None:
    buffer = ReceiveBuffer()
    buffer.feed(b"\r\n.\r\n..")
    reader = BdatReader(7, last=True, body=MessageBody(MAX))
    assert reader.read(buffer) == b"\r\n.\r\n.."


def test_refused_bdat_is_drained() -> None:
    buffer = ReceiveBuffer()
    buffer.feed(b"x" * 5)
    reader = BdatReader(8, last=False, body=None)
    assert (reader.read(buffer), reader.done, len(buffer)) == (b"", False, 0)
    buffer.feed(b"yyyNEXT")
    assert (reader.read(buffer), reader.done) == (b"", True)
    assert bytes(buffer.data) == b"NEXT"


def test_bdat_over_the_limit_is_drained() -> None:
    body = MessageBody(4)
    buffer = ReceiveBuffer()
    buffer.feed(b"abcdefgh")
    assert BdatReader(3, last=False, body=body).read(buffer) == b"abc"
    assert BdatReader(3, last=False, body=body).read(buffer) == b""
    assert body.problem == r.MESSAGE_TOO_BIG
    assert BdatReader(2, last=True, body=body).read(buffer) == b""
    assert body.size == 8 and body.finish() == r.MESSAGE_TOO_BIG


def test_bdat_zero() -> None:
    reader = BdatReader(0, last=True, body=MessageBody(MAX))
    assert reader.done and reader.read(ReceiveBuffer()) == b""


# -- line endings ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pieces", "clean"),
    [
        ([b"a\r\nb\r\n"], True),
        ([b"a\r", b"\nb"], True),
        ([b"a\r", b"\r\n"], False),
        ([b"a\r", b"b"], False),
        ([b"a\r", b""], False),  # an empty piece changes nothing: the CR stays bare
        ([b"\n"], False),
        ([b"a\n"], False),
        ([b"\r"], False),  # a lone CR at the very end
        ([b"a\x00"], False),
        ([b"\r", b"\n", b"\r", b"\n"], True),
        ([b""], True),
    ],
)
def test_line_endings(pieces: list[bytes], clean: bool) -> None:
    check = LineEndings()
    for piece in pieces:
        check.feed(piece)
    assert check.finish() is clean


def test_line_endings_on_a_slice() -> None:
    check = LineEndings()
    assert check.feed(b"\nab\r\ncd\n", 1, 6)
    assert check.finish()
