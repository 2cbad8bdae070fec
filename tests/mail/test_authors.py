"""The author fields of a header block, whatever their spelling (RFC 5322 3.6.2, 3.6.6)."""

from __future__ import annotations

import email.policy
from email.headerregistry import Address as MimeAddress
from email.message import EmailMessage

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postroom.mail.authors import MAX_FIELD_LENGTH, read_authors


def domains(head: bytes) -> list[tuple[str, str | None]]:
    return [(a.field, a.domain) for a in read_authors(head).addresses]


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"From: ceo@example.com\r\n\r\n", [("From", "example.com")]),
        (b"From : ceo@example.com\r\n\r\n", [("From", "example.com")]),
        (b"FROM:ceo@example.com\r\n\r\n", [("From", "example.com")]),
        (b"fRoM \t: ceo@example.com\r\n\r\n", [("From", "example.com")]),
        (b"From:\r\n ceo@example.com\r\n\r\n", [("From", "example.com")]),  # folded
        (b"From: Ceo\r\n\t<ceo@Example.COM>\r\n\r\n", [("From", "example.com")]),
        (b"From: =?utf-8?q?Ren=C3=A9_Ceo?= <ceo@example.com>\r\n\r\n", [("From", "example.com")]),
        (b"From: =?utf-8?b?Q2Vv?= <ceo@example.com>\r\n\r\n", [("From", "example.com")]),
        (b'From: "me@other.org" <ceo@example.com>\r\n\r\n', [("From", "example.com")]),
        (b"From: ceo@example.com (me@other.org)\r\n\r\n", [("From", "example.com")]),
        (
            b"From: a@other.org, ceo@example.com\r\n\r\n",
            [("From", "other.org"), ("From", "example.com")],
        ),
        (
            b"From: team: a@other.org, ceo@example.com;\r\n\r\n",
            [("From", "other.org"), ("From", "example.com")],
        ),
        (
            b"From: a@other.org\r\nFrom: ceo@example.com\r\n\r\n",
            [("From", "other.org"), ("From", "example.com")],
        ),
        (b"Sender: ceo@example.com\r\n\r\n", [("Sender", "example.com")]),
        (b"Resent-From: ceo@example.com\r\n\r\n", [("Resent-From", "example.com")]),
        (b"RESENT-SENDER : ceo@example.com\r\n\r\n", [("Resent-Sender", "example.com")]),
        (b"From: ceo@example.com\n\n", [("From", "example.com")]),  # bare LF
        (b"X: y\rFrom: ceo@example.com\r\r", [("From", "example.com")]),  # bare CR
        (b"garbage line\r\nFrom: ceo@example.com\r\n\r\n", [("From", "example.com")]),
        (b"From: a@b\xc3\xbccher.example\r\n\r\n", [("From", "xn--bcher-kva.example")]),
        (b"From: root (Cron Daemon)\r\n\r\n", [("From", None)]),
        (b"From: undisclosed:;\r\n\r\n", []),
        (b"Subject: x\r\n\r\nFrom: ceo@example.com\r\n", []),  # in the body: not a field
        (b"Reply-To: ceo@example.com\r\nX-From: ceo@example.com\r\n\r\n", []),
    ],
)
def test_author_fields_in_every_spelling(head: bytes, expected: list[tuple[str, str]]) -> None:
    authors = read_authors(head)
    assert authors.unreadable == ()
    assert domains(head) == expected


@pytest.mark.parametrize(
    "value",
    [
        b"<ceo@example.com",  # unclosed angle
        b"ceo@example.com@",
        b"me@other.org <ceo@example.com>",  # an unquoted @ in the display name
        b"Foo <ceo@example.com> trailing",
        b"ceo@example.com.",
        b"<>",
        b"=?utf-8?b?PGNlb0BleGFtcGxlLmNvbT4=?=",  # "<ceo@example.com>" as an encoded-word
        b"=?utf-8?b?cG90dXNAd2hpdGVob3VzZS5nb3YiIDx0ZXN0Pg==?==?utf-8?Q?=00?=@other.org",
        b"=?utf-8?q?ceo?=@example.com",  # encoded-word as a local part (RFC 2047 5)
        b"\xff@example.com",  # not UTF-8
        b"ceo\x00@example.com",
        b"ceo@exa mple.com",
        b'"unterminated <ceo@example.com>',
        b"(" * 5000,  # nests deep enough to exhaust the parser's recursion
        b"a@example.com, " * (MAX_FIELD_LENGTH // 15 + 1),
    ],
)
def test_unreadable_author_fields_are_reported(value: bytes) -> None:
    authors = read_authors(b"From: " + value + b"\r\n\r\n")
    assert authors.unreadable == ("From",)
    assert authors.problems


def test_the_first_from_domain_is_the_signing_domain() -> None:
    authors = read_authors(b"Sender: s@other.org\r\nFrom: a@example.com, b@x.org\r\n\r\n")
    assert authors.domain_of("From") == "example.com"
    assert read_authors(b"Subject: x\r\n\r\n").domain_of("From") is None


def test_a_cut_header_section_is_unreadable_unless_it_ended() -> None:
    assert read_authors(b"From: a@example.com\r\nX: y", complete=False).unreadable == ("header",)
    assert read_authors(b"From: a@example.com\r\n\r\nbody", complete=False).unreadable == ()
    assert read_authors(b"From: a@example.com\r\nX: y").unreadable == ()


@given(st.binary(max_size=2000))
def test_never_raises_on_any_bytes(data: bytes) -> None:
    read_authors(data)
    read_authors(b"From: " + data + b"\r\n\r\n", complete=False)


_NAMES = ["From", "Sender", "Resent-From", "Resent-Sender"]


@st.composite
def spelled_author_field(draw: st.DrawFn) -> tuple[bytes, str]:
    """An author field for ceo@example.com in a random spelling: case, space before the
    colon, folding, a display name (plain, quoted or encoded), a line ending."""
    name = draw(st.sampled_from(_NAMES))
    spelled = "".join(c.upper() if draw(st.booleans()) else c.lower() for c in name)
    before_colon = draw(st.sampled_from(["", " ", "\t", "  "]))
    display = draw(
        st.sampled_from(
            ["", "Ceo ", '"Ceo, Boss" ', "=?utf-8?q?C=C3=A9o?= ", "=?iso-8859-1?b?Q+lv?= "]
        )
    )
    fold = draw(st.sampled_from(["", "\r\n ", "\r\n\t", "\n "]))
    address = f"<ceo@{draw(st.sampled_from(['example.com', 'EXAMPLE.com', 'Example.Com']))}>"
    if not display:
        address = draw(st.sampled_from([address, address[1:-1]]))
    end = draw(st.sampled_from(["\r\n", "\n"]))
    line = f"{spelled}{before_colon}:{fold} {display}{address}{end}"
    return line.encode(), name


@given(
    st.lists(spelled_author_field(), min_size=1, max_size=3),
    st.lists(st.sampled_from([b"Subject: hi\r\n", b"To: a@b.test\r\n", b"X-A: b\r\n"])),
)
def test_no_spelling_hides_an_author_domain(
    fields: list[tuple[bytes, str]], others: list[bytes]
) -> None:
    head = b"".join(others) + b"".join(line for line, _ in fields) + b"\r\n"
    authors = read_authors(head)
    assert authors.unreadable == ()
    assert [(a.field, a.domain) for a in authors.addresses] == [
        (name, "example.com") for _, name in fields
    ]


_LOCAL = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,15}", fullmatch=True).filter(
    lambda s: ".." not in s and not s.endswith(".")
)
_DOMAIN = st.from_regex(r"[a-z0-9]{1,10}\.(test|example|org)", fullmatch=True)


_PRINTABLE = st.characters(exclude_categories=("Cc", "Cs"))
_ASCII_NAME = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@given(
    st.one_of(
        st.tuples(st.text(_PRINTABLE, max_size=40), _LOCAL, _DOMAIN).map(lambda m: [m]),
        st.lists(st.tuples(_ASCII_NAME, _LOCAL, _DOMAIN), min_size=1, max_size=4),
    )
)
def test_what_the_email_package_writes_is_read_back(
    mailboxes: list[tuple[str, str, str]],
) -> None:
    """One mailbox with a display name of any printable text, or several with ASCII
    names. (Control characters make an author field unreadable, on purpose; and the
    email package's folding of several non-ASCII names can encode the separating comma,
    which no reader can take apart.)"""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = [MimeAddress(name, local, domain) for name, local, domain in mailboxes]
    head = bytes(message)
    authors = read_authors(head)
    assert authors.unreadable == (), authors.problems
    assert [a.domain for a in authors.addresses] == [domain for _, _, domain in mailboxes]


@pytest.mark.parametrize("padding", [0, 2000])  # a short value (remembered) and a long one
def test_author_fields_read_again_give_the_same_answer(padding: int) -> None:
    name = "x" * padding
    head = f'From: "{name}" <ceo@example.com>\r\nSender: bad@[1.2.3\r\n\r\n'.encode()
    first, again = read_authors(head), read_authors(head)
    assert first == again
    assert [(a.field, a.domain) for a in again.addresses] == [("From", "example.com")]
    assert again.unreadable == ("Sender",)  # a refusal is remembered as a refusal
    other = read_authors(head.replace(b"example.com", b"example.org"))
    assert [a.domain for a in other.addresses] == ["example.org"]
