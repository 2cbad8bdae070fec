"""SMTP: the sans-IO server core and its asyncio driver (session, server), and the
sans-IO client core (``clientconnection`` with ``client`` and ``trouble``), whose asyncio
driver is ``postroom.delivery.mailers.mta``.

The server core (``connection``, ``events``, ``replies``, ``grammar``, ``params``,
``state``, ``receiver``, ``sasl``) takes bytes and returns events; takes replies and
returns bytes. It never awaits, logs or touches a socket. Invariants: every command gets
exactly one reply through ``ServerConnection.send()``; the core reads at most one command
ahead of its pending reply; only ``<CRLF>.<CRLF>`` ends DATA; no exception escapes the
core for anything the peer sends. The client core keeps the same rules the other way
round: replies in, commands and conclusions out, every reply matched to the command it
answers, nothing raised for anything the server sends.
"""

from postroom.smtp.connection import ServerConfig, ServerConnection, TlsInfo
from postroom.smtp.events import (
    NEED_DATA,
    AuthChallenge,
    AuthCredentials,
    BdatChunkEnd,
    ConnectionClosed,
    Data,
    Ehlo,
    Event,
    Helo,
    Help,
    InvalidCommand,
    MailFrom,
    MessageChunk,
    MessageEnd,
    NeedData,
    Noop,
    Quit,
    RcptTo,
    Rset,
    StartTls,
    Vrfy,
)
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
    "Reply",
    "Rset",
    "ServerConfig",
    "ServerConnection",
    "StartTls",
    "TlsInfo",
    "Vrfy",
]
