"""Dashboard sessions as signed tokens, and the CSRF tokens bound to them (no I/O).

A session cookie holds the admin's name, when the session began and when it was last
used, signed with HMAC-SHA256 under the server's dashboard key. It ends when idle for
``idle`` seconds, after ``max_age`` in any case, and when the admin logs out or changes
password (the store's ``sessions_after`` moves past its start: every session of that
admin ends, a stolen copy included). Each request refreshes the last-used time.

A form's CSRF token is an HMAC of the session's start and name: a page of one session
cannot post into another, and nothing needs keeping on the server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

__all__ = ["Session", "SessionSigner"]


@dataclass(frozen=True, slots=True)
class Session:
    admin: str
    began: float
    seen: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    def __init__(self, key: bytes, *, idle: float, max_age: float) -> None:
        if len(key) < 32:
            raise ValueError("the dashboard key must be at least 32 bytes")
        self._key = key
        self.idle = idle
        self.max_age = max_age

    def _mac(self, purpose: str, payload: str) -> bytes:
        return hmac.new(self._key, f"{purpose}\n{payload}".encode(), hashlib.sha256).digest()

    def token(self, session: Session) -> str:
        payload = f"{session.admin}|{session.began:.3f}|{session.seen:.3f}"
        return f"{_b64(payload.encode())}.{_b64(self._mac('session', payload))}"

    def read(self, token: str, now: float) -> Session | None:
        """The session the token holds while it is live (signature good, neither idle
        nor too old), else None. Whether the admin still exists is the caller's check."""
        try:
            encoded, mac = token.split(".")
            payload = _unb64(encoded).decode()
            good = hmac.compare_digest(_unb64(mac), self._mac("session", payload))
            admin, began, seen = payload.split("|")
            session = Session(admin, float(began), float(seen))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        if not good:
            return None
        if now - session.seen >= self.idle or now - session.began >= self.max_age:
            return None
        return session

    def csrf(self, session: Session) -> str:
        return _b64(self._mac("csrf", f"{session.admin}|{session.began:.3f}"))

    def csrf_ok(self, session: Session, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.csrf(session).encode())
