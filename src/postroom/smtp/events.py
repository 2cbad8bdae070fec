"""Events that ``ServerConnection.next_event()`` returns, and the ``NEED_DATA`` sentinel.

Two rules for the driver:
- An event with a ``reply`` attribute that is not ``None`` needs no decision: send it
  with ``conn.send(event.reply)`` (or a different reply, when policy says so).
- Every other command event (MailFrom, RcptTo, Data, MessageEnd, BdatChunkEnd,
  AuthCredentials, StartTls) waits for the application to ``conn.send()`` its reply.
``MessageChunk`` and ``ConnectionClosed`` get no reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from postroom.mail.address import Address
from postroom.mail.envelope import DsnRequest, Notify
from postroom.smtp.replies import Reply

__all__ = [
    "NEED_DATA",
    "AuthChallenge",
    "AuthCredentials",
    "BdatChunkEnd",
    "ConnectionClosed",
    "Data",
    "Ehlo",
    "Event",
    "Helo",
    "Help",
    "InvalidCommand",
    "MailFrom",
    "MessageChunk",
    "MessageEnd",
    "NeedData",
    "Noop",
    "Quit",
    "RcptTo",
    "Rset",
    "StartTls",
    "Vrfy",
]


class NeedData(Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class Helo:
    hostname: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class Ehlo:
    hostname: str
    reply: Reply  # the capability list for this connection's state


@dataclass(frozen=True, slots=True)
class MailFrom:
    sender: Address | None  # None: the null reverse-path <>
    size: int | None  # SIZE= (RFC 1870), declared
    body: str | None  # BODY= 7BIT | 8BITMIME
    smtputf8: bool
    dsn: DsnRequest  # RET=, ENVID=
    auth: str | None  # AUTH= (RFC 4954 5), xtext-decoded; "<>" when empty


@dataclass(frozen=True, slots=True)
class RcptTo:
    recipient: Address
    notify: frozenset[Notify] | None
    orcpt: str | None


@dataclass(frozen=True, slots=True)
class Data:
    """The DATA command: answer 354 to receive the message, or refuse."""


@dataclass(frozen=True, slots=True)
class MessageChunk:
    """Part of the message body: dot-unstuffed, CRLF line endings, no reply."""

    data: bytes


@dataclass(frozen=True, slots=True)
class MessageEnd:
    """End of the message (DATA's <CRLF>.<CRLF> or BDAT LAST).

    ``problem`` is set when the core already knows the message must be refused
    (too big: 552 5.3.4; bare CR/LF or NUL: 554 5.6.0); the driver aborts and sends it.
    """

    size: int
    problem: Reply | None


@dataclass(frozen=True, slots=True)
class BdatChunkEnd:
    """A non-LAST BDAT chunk was read whole (RFC 3030); answer 250 or an error."""

    size: int  # this chunk's octets
    total: int  # octets so far in this message
    problem: Reply | None


@dataclass(frozen=True, slots=True)
class StartTls:
    """STARTTLS: send 220 (the core then drops any bytes pipelined after it), handshake,
    then call ``conn.start_tls()``."""


@dataclass(frozen=True, slots=True)
class AuthChallenge:
    """A 334 continuation within an AUTH exchange; send ``reply``."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class AuthCredentials:
    """An AUTH exchange completed; verify and answer 235 2.7.0 or 535 5.7.8."""

    mechanism: str
    authzid: str
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class Rset:
    reply: Reply


@dataclass(frozen=True, slots=True)
class Noop:
    reply: Reply


@dataclass(frozen=True, slots=True)
class Vrfy:
    argument: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class Help:
    argument: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class Quit:
    reply: Reply


@dataclass(frozen=True, slots=True)
class InvalidCommand:
    """A command the core refused itself (syntax, sequence, limits); send ``reply``.

    ``close`` is True when the connection must be closed after the reply (421).
    """

    reply: Reply
    close: bool = False


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection."""


Event = (
    Helo
    | Ehlo
    | MailFrom
    | RcptTo
    | Data
    | MessageChunk
    | MessageEnd
    | BdatChunkEnd
    | StartTls
    | AuthChallenge
    | AuthCredentials
    | Rset
    | Noop
    | Vrfy
    | Help
    | Quit
    | InvalidCommand
    | ConnectionClosed
)
