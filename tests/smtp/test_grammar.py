"""Command-line grammar: verbs, paths, esmtp-params, xtext."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postroom.errors import AddressError
from postroom.mail.address import Address
from postroom.smtp.grammar import (
    decode_line,
    parse_bdat_argument,
    parse_forward_path,
    parse_helo_argument,
    parse_params,
    parse_reverse_path,
    split_command,
    split_path_argument,
    xtext_decode,
    xtext_encode,
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("NOOP", ("NOOP", "")),
        ("noop", ("NOOP", "")),
        ("MAIL FROM:<a@b.c>", ("MAIL", "FROM:<a@b.c>")),
        ("MAIL  FROM:<a@b.c>  ", ("MAIL", "FROM:<a@b.c>")),
        ("  EHLO host", ("EHLO", "host")),
        ("", None),
        ("M4IL FROM:<>", None),
        ("MAIL:", None),
        ("\tNOOP", ("NOOP", "")),
        ("ÉHLO x", None),
    ],
)
def test_split_command(line: str, expected: tuple[str, str] | None) -> None:
    assert split_command(line) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"NOOP", "NOOP"),
        (b"MAIL FROM:<j\xc3\xb6rg@example.org>", "MAIL FROM:<jörg@example.org>"),
        (b"NOOP\tx", "NOOP\tx"),
        (b"NO\x00OP", None),
        (b"NOOP\x7f", None),
        (b"NOOP\x1b", None),
        (b"NOOP\r", None),
        (b"\xff", None),
        (b"\xc3", None),
    ],
)
def test_decode_line(raw: bytes, expected: str | None) -> None:
    assert decode_line(raw) == expected


@pytest.mark.parametrize(
    ("argument", "keyword", "expected"),
    [
        ("FROM:<a@b.c>", "FROM", ("a@b.c", "")),
        ("from:<a@b.c>", "FROM", ("a@b.c", "")),
        ("FROM: <a@b.c>", "FROM", ("a@b.c", "")),
        ("FROM :<a@b.c>", "FROM", ("a@b.c", "")),
        ("FROM:<>", "FROM", ("", "")),
        ("FROM:<a@b.c> SIZE=1 BODY=8BITMIME", "FROM", ("a@b.c", "SIZE=1 BODY=8BITMIME")),
        ('FROM:<"a>b"@b.c> X', "FROM", ('"a>b"@b.c', "X")),
        ('FROM:<"a\\"b"@b.c>', "FROM", ('"a\\"b"@b.c', "")),
        ("TO:<@x.y,@z.w:a@b.c>", "TO", ("@x.y,@z.w:a@b.c", "")),
        ("FROM:a@b.c", "FROM", None),
        ("FROM:<a@b.c", "FROM", None),
        ("FROM:<a@b.c>X=1", "FROM", None),
        ("FROM:<a b@c.d>", "FROM", None),
        ("FROM:<<a@b.c>>", "FROM", None),
        ("TO:<a@b.c>", "FROM", None),
        ("FROM<a@b.c>", "FROM", None),
        ("", "FROM", None),
    ],
)
def test_split_path_argument(argument: str, keyword: str, expected: tuple[str, str] | None) -> None:
    assert split_path_argument(argument, keyword) == expected


VALID_PATHS = [
    ("a@example.org", Address("a", "example.org")),
    ("A.B-c+tag@Example.ORG", Address("A.B-c+tag", "example.org")),
    ("@relay.test:a@example.org", Address("a", "example.org")),
    ("@one.test,@two.test:a@example.org", Address("a", "example.org")),
    ('"john doe"@example.org', Address('"john doe"', "example.org")),
    ('"a@b"@example.org', Address('"a@b"', "example.org")),
    ("a@[192.0.2.1]", Address("a", "[192.0.2.1]")),
    ("a@[IPv6:2001:db8::1]", Address("a", "[IPv6:2001:db8::1]")),
    ("jörg@bücher.example", Address("jörg", "bücher.example")),
    ("!#$%&'*+-/=?^_`{|}~@example.org", Address("!#$%&'*+-/=?^_`{|}~", "example.org")),
    ("x" * 64 + "@example.org", Address("x" * 64, "example.org")),
]
INVALID_PATHS = [
    "a",
    "a@",
    "@example.org",
    "a@@example.org",
    "a..b@example.org",
    ".a@example.org",
    "a.@example.org",
    "a@example..org",
    "a@-example.org",
    "a@example-.org",
    "a@exa_mple.org",
    "a@[192.0.2.256]",
    "a@[IPv6:zz::1]",
    "a@[192.0.2.1",
    "x" * 65 + "@example.org",
    "a@" + ("x" * 63 + ".") * 4 + "org",
    "@relay:a@example.org:",
    "@bad_relay.test:a@example.org",
    '"unterminated@example.org',
    "a b@example.org",
]


@pytest.mark.parametrize(("path", "address"), VALID_PATHS)
def test_valid_paths(path: str, address: Address) -> None:
    assert parse_reverse_path(path) == address
    assert parse_forward_path(path, "mx.test") == address


@pytest.mark.parametrize("path", INVALID_PATHS)
def test_invalid_paths(path: str) -> None:
    with pytest.raises(AddressError):
        parse_reverse_path(path)
    with pytest.raises(AddressError):
        parse_forward_path(path, "mx.test")


def test_null_and_postmaster_paths() -> None:
    assert parse_reverse_path("") is None
    with pytest.raises(AddressError):
        parse_forward_path("", "mx.test")
    # RFC 5321 4.1.1.3: "Postmaster" (any case) without a domain is ours.
    assert parse_forward_path("PostMaster", "MX.test") == Address("postmaster", "mx.test")
    with pytest.raises(AddressError):
        parse_reverse_path("postmaster")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("SIZE=100", [("SIZE", "100")]),
        ("size=100 smtputf8", [("SIZE", "100"), ("SMTPUTF8", None)]),
        ("X-Y=a  Z=b", [("X-Y", "a"), ("Z", "b")]),
        ("ORCPT=rfc822;a+2Bb@c.d", [("ORCPT", "rfc822;a+2Bb@c.d")]),
        ("A=ü", [("A", "ü")]),
        ("=1", None),
        ("-A=1", None),
        ("A=", None),
        ("A==1", None),
        ("A=1=2", None),
        ("A_B=1", None),
    ],
)
def test_parse_params(text: str, expected: list[tuple[str, str | None]] | None) -> None:
    assert parse_params(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("abc", "abc"),
        ("a+2Bb", "a+b"),
        ("a+3Db", "a=b"),
        ("a+20b", "a b"),
        ("+2b", "+"),
        ("+C3+B6", "ö"),
        ("a+2", None),
        ("a+ZZ", None),
        ("a=b", None),
        ("a b", None),
        ("ö", None),
        ("+FF", None),
    ],
)
def test_xtext_decode(text: str, expected: str | None) -> None:
    assert xtext_decode(text) == expected


def test_xtext_encode() -> None:
    assert xtext_encode("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext_encode("ö") == "+C3+B6"


@given(st.text())
def test_xtext_round_trip(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return
    assert xtext_decode(xtext_encode(text)) == text


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("10", (10, False)),
        ("10 LAST", (10, True)),
        ("0 last", (0, True)),
        ("", None),
        ("x", None),
        ("-1", None),
        ("1.5", None),
        ("²", None),
        ("1 FIRST", None),
        ("1 LAST x", None),
        ("1" * 21, None),
    ],
)
def test_parse_bdat_argument(argument: str, expected: tuple[int, bool] | None) -> None:
    assert parse_bdat_argument(argument) == expected


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("client.test", "client.test"),
        ("[192.0.2.1]", "[192.0.2.1]"),
        ("my_machine", "my_machine"),  # not a hostname, but RFC 5321 4.1.4: do not refuse
        ("", None),
        ("two words", None),
        ("x" * 256, None),
    ],
)
def test_parse_helo_argument(argument: str, expected: str | None) -> None:
    assert parse_helo_argument(argument) == expected
