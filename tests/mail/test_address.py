"""Addresses (RFC 5321 4.1.2, 4.5.3.1; RFC 6531 3.3): tables of valid and invalid ones."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postroom.errors import AddressError
from postroom.mail.address import (
    Address,
    address_key,
    mailbox_problem,
    parse_address,
    parse_domain,
    path_name_problem,
)
from postroom.mail.address import _key_of as remembered_keys

VALID = [
    ("user@example.org", Address("user", "example.org")),
    ("User.Name+tag@Example.ORG", Address("User.Name+tag", "example.org")),
    ("a@b", Address("a", "b")),
    ("a@example.org.", Address("a", "example.org")),  # the root dot is dropped
    ("1@2.3", Address("1", "2.3")),
    ("a-b@x-y.example", Address("a-b", "x-y.example")),
    ("!#$%&'*+-/=?^_`{|}~@example.org", Address("!#$%&'*+-/=?^_`{|}~", "example.org")),
    ('"quoted string"@example.org', Address('"quoted string"', "example.org")),
    ('"with\\"escape"@example.org', Address('"with\\"escape"', "example.org")),
    ('"a@b"@example.org', Address('"a@b"', "example.org")),
    ('""@example.org', Address('""', "example.org")),
    ("a@[192.0.2.1]", Address("a", "[192.0.2.1]")),
    ("a@[IPv6:2001:db8::1]", Address("a", "[IPv6:2001:db8::1]")),
    ("jörg@example.org", Address("jörg", "example.org")),
    ("a@bücher.example", Address("a", "bücher.example")),
    ("用户@例子.广告", Address("用户", "例子.广告")),
    ("x" * 64 + "@example.org", Address("x" * 64, "example.org")),
    ("a@" + "x" * 63 + ".org", Address("a", "x" * 63 + ".org")),
]

INVALID = [
    "",
    "a",
    "@",
    "a@",
    "@example.org",
    "a@@example.org",
    "a b@example.org",
    "a@exa mple.org",
    ".a@example.org",
    "a.@example.org",
    "a..b@example.org",
    "a@.example.org",
    "a@example..org",
    "a@example.org..",
    "a@-example.org",
    "a@example-.org",
    "a@ex_ample.org",
    "a@example.org\r\n",
    "a\x00@example.org",
    "a(comment)@example.org",
    "<a@example.org>",
    '"unclosed@example.org',
    '"bad\\\x01"@example.org',
    "a@[192.0.2.300]",
    "a@[192.0.2.1",
    "a@[IPv6:not-an-address]",
    "a@[]",
    "x" * 65 + "@example.org",  # RFC 5321 4.5.3.1.1: local part 64 octets
    "ö" * 33 + "@example.org",  # 66 octets in UTF-8
    "a@" + "x" * 64 + ".org",  # a label of 64 octets
    "a@" + ".".join(["x" * 60] * 5),  # RFC 5321 4.5.3.1.2: domain 255 octets
    "a@\u00a0x.org",  # no valid A-label form
    "a@a\u3002b.org",  # an ideographic full stop would turn into a label separator
    "a@" + "ü" * 70 + ".de",  # an A-label longer than 63 octets
]


@pytest.mark.parametrize(("text", "address"), VALID)
def test_valid(text: str, address: Address) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", INVALID)
def test_invalid(text: str) -> None:
    with pytest.raises(AddressError):
        parse_address(text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a/b@example.org", "it holds '/'"),
        ('"../../x"@example.org', "it holds '/'"),
        ('".x"@example.org', "it starts with a dot"),
        ('".."@example.org', "it starts with a dot"),
        ('""@example.org', "it is empty"),
        ('"a\\\\b"@example.org', "it holds '\\\\'"),
    ],
)
def test_local_parts_that_cannot_name_a_mailbox(text: str, problem: str) -> None:
    assert mailbox_problem(parse_address(text)) == problem


@pytest.mark.parametrize(
    "text",
    [
        "app@example.org",
        "first.last+tag@example.org",
        '"john smith"@example.org',
        "o'brien@example.org",
        "jörg@example.org",
    ],
)
def test_ordinary_local_parts_name_a_mailbox(text: str) -> None:
    assert mailbox_problem(parse_address(text)) is None


def test_path_names_without_nul_or_control_characters() -> None:
    assert path_name_problem("a\x00b") == "it holds '\\x00'"
    assert path_name_problem("a\nb") == "it holds '\\n'"
    assert path_name_problem("example.org") is None


def test_str_key_and_ascii_domain() -> None:
    address = parse_address("Jörg.X@Bücher.Example")
    assert str(address) == "Jörg.X@bücher.example"
    assert address.ascii_domain == "xn--bcher-kva.example"
    assert address.key == "jörg.x@xn--bcher-kva.example"
    assert address.needs_smtputf8
    assert not parse_address("a@bücher.example").needs_smtputf8


def test_address_literals_are_kept() -> None:
    assert parse_domain("[IPv6:2001:DB8::1]") == "[IPv6:2001:DB8::1]"
    assert parse_address("a@[IPv6:2001:DB8::1]").ascii_domain == "[ipv6:2001:db8::1]"


@given(st.text(max_size=80))
def test_arbitrary_text_parses_or_raises_address_error(text: str) -> None:
    try:
        address = parse_address(text)
    except AddressError:
        return
    assert address.ascii_domain  # a parsed address always has an A-label form
    assert "@" in str(address)


@given(st.text(max_size=80))
def test_arbitrary_domains_parse_or_raise_address_error(text: str) -> None:
    try:
        domain = parse_domain(text)
    except AddressError:
        return
    assert domain == domain.lower() or domain.startswith("[")


@pytest.mark.parametrize(("text", "address"), VALID)
def test_address_key_is_the_parsed_address_key_every_time(text: str, address: Address) -> None:
    for _ in range(2):  # the second answer is the remembered one
        assert address_key(f" {text}\t") == address.key


@pytest.mark.parametrize("text", [t for t in INVALID if t == t.strip()])
def test_address_key_refuses_what_parse_address_refuses_every_time(text: str) -> None:
    for _ in range(2):  # a refusal is never remembered as an answer
        with pytest.raises(AddressError):
            address_key(text)


def test_address_key_remembers_a_bounded_number_of_keys() -> None:
    for n in range(1000):
        address_key(f"user{n}@example.test")
    assert remembered_keys.cache_info().currsize <= 256
