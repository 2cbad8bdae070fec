"""Message structure from octets: ENVELOPE, BODYSTRUCTURE, sections with partials, and
SEARCH evaluation; all without sockets or a store."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from postroom.imap import commands as c
from postroom.imap.search import Candidate, matches, needs_content
from postroom.imap.sections import cut, locate
from postroom.imap.structure import Entity, bodystructure, envelope, scan

MESSAGE = (
    b"From: Ann <ann@example.org>\r\n"
    b'To: bob@example.test, "C, D" <c@x.y>\r\n'
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Date: Tue, 6 Feb 2024 10:00:00 +0100\r\n"
    b"Message-ID: <m1@example.org>\r\n"
    b"X-Long: a\r\n folded\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"hello w=C3=B6rld\r\n"
    b"second line\r\n"
    b"--b1\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"Content-Disposition: attachment; filename=inner.eml\r\n"
    b"\r\n"
    b"Subject: inner\r\n"
    b"Content-Type: multipart/alternative; boundary=b2\r\n"
    b"\r\n"
    b"--b2\r\n"
    b"\r\n"
    b"plain inner\r\n"
    b"--b2\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>inner</p>\r\n"
    b"--b2--\r\n"
    b"--b1--\r\n"
    b"epilogue\r\n"
)


def _tree(chunk: int = 7) -> Entity:
    return scan(MESSAGE[i : i + chunk] for i in range(0, len(MESSAGE), chunk))


def _section(spec: str, partial: tuple[int, int | None] | None = None) -> bytes:
    extract = locate(_tree(), c.parse_section(spec))
    if partial is not None:
        extract = extract.partial(*partial)
    if extract.data is not None:
        return extract.data
    return b"".join(
        cut([MESSAGE[i : i + 5] for i in range(0, len(MESSAGE), 5)], extract.start, extract.end)
    )


@pytest.mark.parametrize("chunk", [1, 3, 64, 100_000])
def test_the_structure_is_the_same_however_the_message_is_chunked(chunk: int) -> None:
    assert bodystructure(_tree(chunk)) == bodystructure(_tree(100_000))


def test_envelope_has_the_raw_fields_and_parsed_addresses() -> None:
    assert envelope(_tree()) == (
        b'("Tue, 6 Feb 2024 10:00:00 +0100" "=?utf-8?q?Gr=C3=BC=C3=9Fe?="'
        b' (("Ann" NIL "ann" "example.org")) (("Ann" NIL "ann" "example.org"))'
        b' (("Ann" NIL "ann" "example.org"))'
        b' ((NIL NIL "bob" "example.test") ("C, D" NIL "c" "x.y")) NIL NIL NIL "<m1@example.org>")'
    )


def test_bodystructure_nests_multiparts_and_an_encapsulated_message() -> None:
    assert bodystructure(_tree(), extensible=False) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 29 2)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 142'
        b' (NIL "inner" NIL NIL NIL NIL NIL NIL NIL NIL)'
        b' (("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 11 1)'
        b'("TEXT" "HTML" NIL NIL NIL "7BIT" 12 1) "ALTERNATIVE") 11) "MIXED")'
    )
    assert b'("ATTACHMENT" ("FILENAME" "inner.eml"))' in bodystructure(_tree())


def test_sections_by_part_number_header_text_mime_and_fields() -> None:
    assert _section("") == MESSAGE
    assert _section("1") == b"hello w=C3=B6rld\r\nsecond line"
    assert _section("1.MIME") == (
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    assert (
        _section("2.HEADER")
        == b"Subject: inner\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n"
    )
    assert _section("2.1") == b"plain inner"
    assert _section("2.2") == b"<p>inner</p>"
    assert _section("2.TEXT").startswith(b"--b2\r\n") and _section("2.TEXT").endswith(b"--b2--")
    assert _section("HEADER.FIELDS (SUBJECT X-LONG)") == (
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nX-Long: a\r\n folded\r\n\r\n"
    )
    not_fields = _section("HEADER.FIELDS.NOT (FROM TO SUBJECT DATE MESSAGE-ID X-LONG MIME-VERSION)")
    assert not_fields == b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    assert _section("TEXT").startswith(b"preamble\r\n--b1")
    assert _section("3") == b"" and _section("1.2") == b"" and _section("1.HEADER") == b""


def test_partials_cut_within_the_section() -> None:
    assert _section("1", (6, 5)) == b"w=C3="
    assert _section("1", (1000, 5)) == b""
    assert _section("HEADER.FIELDS (SUBJECT)", (0, 8)) == b"Subject:"


def test_a_single_part_message_has_part_one() -> None:
    message = b"Subject: s\r\n\r\nbody\r\n"
    tree = scan([message])
    assert (
        bodystructure(tree, extensible=False)
        == b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 6 1)'
    )
    one = locate(tree, c.parse_section("1"))
    assert message[one.start : one.end] == b"body\r\n"


def test_a_message_without_a_blank_line_is_all_header() -> None:
    tree = scan([b"Subject: only\r\nX: y"])
    assert tree.body_start == tree.end == len(b"Subject: only\r\nX: y")


@dataclass(frozen=True)
class Facts:
    uid: int
    flags: frozenset[str]
    internal_date: float
    size: int
    modseq: int = 1


def _candidate(seq: int = 2, flags: frozenset[str] = frozenset({"\\Seen"})) -> Candidate:
    when = dt.datetime(2024, 2, 6, 12, tzinfo=dt.UTC).timestamp()
    return Candidate(seq, Facts(10 + seq, flags, when, len(MESSAGE)), 5, 15, content=MESSAGE)


def _search(criteria: bytes) -> bool:
    from postroom.imap.tokens import tokenize

    command = c.parse("SEARCH", tokenize([criteria]))
    assert isinstance(command, c.Search)
    return matches(command.criteria, _candidate())


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        (b"ALL", True),
        (b"SEEN", True),
        (b"UNSEEN", False),
        (b"NOT SEEN", False),
        (b"OR UNSEEN FLAGGED", False),
        (b"OR UNSEEN 2", True),
        (b"UID 12", True),
        (b"UID 13:*", False),
        (b"*", False),
        (b"1:2", True),
        (b"LARGER 100", True),
        (b"SMALLER 100", False),
        (b"SINCE 6-Feb-2024", True),
        (b"BEFORE 6-Feb-2024", False),
        (b"ON 6-Feb-2024", True),
        (b"SENTON 6-Feb-2024", True),
        (b"SENTBEFORE 1-Jan-2024", False),
        (b'SUBJECT "gr\xc3\xbc\xc3\x9f"', True),
        (b"FROM ann@EXAMPLE", True),
        (b"TO nobody", False),
        (b'HEADER X-Long ""', True),
        (b'HEADER X-Missing ""', False),
        (b'BODY "w\xc3\xb6rld"', True),
        (b"BODY inner", True),
        (b"BODY Ann", False),
        (b"TEXT Ann", True),
        (b"(SEEN LARGER 10) NOT DELETED", True),
    ],
)
def test_search_keys(criteria: bytes, expected: bool) -> None:
    assert _search(criteria) is expected


def test_only_header_and_text_keys_need_the_message() -> None:
    flags_only = c.Or(c.FlagKey("\\Seen", True), c.Not(c.SizeKey(True, 1)))
    assert not needs_content(flags_only)
    assert needs_content(c.AllOf((flags_only, c.TextKey("BODY", "x"))))
