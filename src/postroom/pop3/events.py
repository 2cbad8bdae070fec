"""What the POP3 core asks of the application: the events ``Pop3Connection`` returns.

Everything else (CAPA, STAT, LIST, UIDL, DELE, RSET, NOOP, errors) the core answers
itself from the maildrop listing it was given at login.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "NEED_DATA",
    "Authenticate",
    "ConnectionClosed",
    "Event",
    "NeedData",
    "Retrieve",
    "StartTls",
    "Update",
]


class NeedData:
    """No complete command: feed more bytes."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


@dataclass(frozen=True, slots=True)
class Authenticate:
    """USER/PASS or AUTH PLAIN gave credentials: verify them, then call
    ``accept_login(maildrop)`` or ``refuse_login()``."""

    mechanism: str  # "USER" for USER/PASS, else the SASL mechanism
    authzid: str
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class StartTls:
    """``+OK`` for STLS is queued: write it, run the handshake, then ``start_tls()``."""


@dataclass(frozen=True, slots=True)
class Retrieve:
    """RETR (``top`` None) or TOP: open the message with ``uid`` and stream it through
    ``message_start()``, ``MessageBody.feed`` and ``MessageBody.end``, or call
    ``message_gone()`` when it cannot be read."""

    number: int
    uid: int
    top: int | None


@dataclass(frozen=True, slots=True)
class Update:
    """QUIT in the TRANSACTION state (RFC 1939 6): remove ``uids`` then call
    ``update_done(ok)``, which queues the last reply and closes the connection."""

    uids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The conversation is over (QUIT answered, or too many errors): close."""


Event = Authenticate | StartTls | Retrieve | Update | ConnectionClosed | NeedData
