"""SASL exchanges for SMTP AUTH (RFC 4954) as tiny state machines: PLAIN and LOGIN.

An exchange turns the AUTH command's initial response and each continuation line into
one event: ``AuthChallenge`` (send its ``334``, then feed the client's next line),
``AuthCredentials`` (done: the application verifies), or ``InvalidCommand`` (the
exchange failed: ``*`` cancel, bad base64, a malformed response).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Final

from postroom.smtp import replies
from postroom.smtp.events import AuthChallenge, AuthCredentials, InvalidCommand
from postroom.smtp.replies import Reply

__all__ = ["MECHANISMS", "AuthStep", "Exchange", "LoginExchange", "PlainExchange", "start"]

AuthStep = AuthChallenge | AuthCredentials | InvalidCommand

_CANCEL: Final = "*"  # RFC 4954 4: the client gives up
_EMPTY_INITIAL: Final = "="  # RFC 4954 4: an initial response that is empty


def _decode(line: str) -> bytes | Reply:
    """A client response: base64 (RFC 4648) or the cancel marker."""
    if line.strip() == _CANCEL:
        return replies.AUTH_CANCELLED
    try:
        return base64.b64decode(line.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return replies.BAD_BASE64


def _text(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


class PlainExchange:
    """RFC 4616: one message ``authzid NUL authcid NUL passwd``."""

    mechanism: Final = "PLAIN"

    def first(self, initial: str | None) -> AuthStep:
        if initial is None:
            return AuthChallenge(replies.AUTH_CONTINUE)  # RFC 4954 4: "334 " and wait
        return self.respond("" if initial == _EMPTY_INITIAL else initial)

    def respond(self, line: str) -> AuthStep:
        raw = _decode(line)
        if isinstance(raw, Reply):
            return InvalidCommand(raw)
        parts = raw.split(b"\0")
        texts = [_text(part) for part in parts]
        if len(parts) != 3 or None in texts or not parts[1] or not parts[2]:
            return InvalidCommand(replies.AUTH_MALFORMED)
        authzid, username, password = (t or "" for t in texts)
        return AuthCredentials(self.mechanism, authzid, username, password)


class LoginExchange:
    """The LOGIN mechanism (draft-murchison-sasl-login): username, then password."""

    mechanism: Final = "LOGIN"

    def __init__(self) -> None:
        self._username: str | None = None

    def first(self, initial: str | None) -> AuthStep:
        if initial is None:
            return AuthChallenge(replies.AUTH_USERNAME)
        return self.respond("" if initial == _EMPTY_INITIAL else initial)

    def respond(self, line: str) -> AuthStep:
        raw = _decode(line)
        if isinstance(raw, Reply):
            return InvalidCommand(raw)
        text = _text(raw)
        if text is None:
            return InvalidCommand(replies.AUTH_MALFORMED)
        if self._username is None:
            self._username = text
            return AuthChallenge(replies.AUTH_PASSWORD)
        return AuthCredentials(self.mechanism, "", self._username, text)


Exchange = PlainExchange | LoginExchange

MECHANISMS: Final[Mapping[str, Callable[[], Exchange]]] = {
    "PLAIN": PlainExchange,
    "LOGIN": LoginExchange,
}


def start(mechanism: str, initial: str | None) -> tuple[Exchange, AuthStep] | None:
    """Begin an exchange; None when the mechanism is not one we implement."""
    factory = MECHANISMS.get(mechanism.upper())
    if factory is None:
        return None
    exchange = factory()
    return exchange, exchange.first(initial)
