"""SASL PLAIN (RFC 4616) and LOGIN exchanges, RFC 4954 framing."""

from __future__ import annotations

import base64

import pytest

from postroom.smtp import replies as r
from postroom.smtp import sasl
from postroom.smtp.events import AuthChallenge, AuthCredentials, InvalidCommand
from postroom.smtp.replies import Reply


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def exchange(mechanism: str, initial: str | None, *lines: str) -> list[object]:
    started = sasl.start(mechanism, initial)
    assert started is not None
    current, step = started
    steps: list[object] = [step]
    for line in lines:
        steps.append(current.respond(line))
    return steps


def test_plain_with_initial_response() -> None:
    assert exchange("PLAIN", b64(b"\0user\0pass")) == [AuthCredentials("PLAIN", "", "user", "pass")]


def test_plain_with_authzid_and_utf8() -> None:
    raw = "admin\0jörg\0pässwörd".encode()
    assert exchange("plain", b64(raw)) == [AuthCredentials("PLAIN", "admin", "jörg", "pässwörd")]


def test_plain_after_empty_challenge() -> None:
    assert exchange("PLAIN", None, b64(b"\0u\0p")) == [
        AuthChallenge(r.AUTH_CONTINUE),
        AuthCredentials("PLAIN", "", "u", "p"),
    ]
    assert r.AUTH_CONTINUE.to_bytes() == b"334 \r\n"


@pytest.mark.parametrize(
    "raw",
    [b"", b"\0u", b"u\0p", b"\0\0p", b"\0u\0", b"\0u\0p\0x", b"\0\xff\0p"],
)
def test_plain_malformed(raw: bytes) -> None:
    assert exchange("PLAIN", b64(raw) if raw else "=") == [InvalidCommand(r.AUTH_MALFORMED)]


def test_login() -> None:
    assert exchange("LOGIN", None, b64(b"user"), b64(b"pass")) == [
        AuthChallenge(r.AUTH_USERNAME),
        AuthChallenge(r.AUTH_PASSWORD),
        AuthCredentials("LOGIN", "", "user", "pass"),
    ]
    assert base64.b64decode(r.AUTH_USERNAME.lines[0]) == b"Username:"
    assert base64.b64decode(r.AUTH_PASSWORD.lines[0]) == b"Password:"


def test_login_with_initial_username() -> None:
    assert exchange("LOGIN", b64(b"user"), b64(b"pass")) == [
        AuthChallenge(r.AUTH_PASSWORD),
        AuthCredentials("LOGIN", "", "user", "pass"),
    ]


def test_login_empty_password() -> None:
    assert exchange("LOGIN", "=", "") == [
        AuthChallenge(r.AUTH_PASSWORD),
        AuthCredentials("LOGIN", "", "", ""),
    ]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("*", r.AUTH_CANCELLED),
        (" * ", r.AUTH_CANCELLED),
        ("!!!!", r.BAD_BASE64),
        ("abc", r.BAD_BASE64),
        ("ö", r.BAD_BASE64),
        ("a b=", r.BAD_BASE64),
    ],
)
def test_cancel_and_bad_base64(mechanism: str, line: str, reply: Reply) -> None:
    steps = exchange(mechanism, None, line)
    assert steps[-1] == InvalidCommand(reply)


def test_login_non_utf8_username() -> None:
    assert exchange("LOGIN", None, b64(b"\xff"))[-1] == InvalidCommand(r.AUTH_MALFORMED)


def test_unknown_mechanism() -> None:
    assert sasl.start("CRAM-MD5", None) is None
    assert set(sasl.MECHANISMS) == {"PLAIN", "LOGIN"}
