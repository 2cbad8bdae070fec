"""The POP3 server's protocol core, without I/O: bytes in, events and bytes out.

RFC 1939 with CAPA (RFC 2449, with its response codes), STLS (RFC 2595) and AUTH
(RFC 5034, the PLAIN mechanism of ``smtp.sasl``). The application feeds what it reads
(``receive_data``), takes events (``next_event``) and writes ``data_to_send()`` after
each; see ``events`` for what each event asks of it. Commands are handled one at a
time in order, so pipelined commands (RFC 2449 PIPELINING) are answered in order.

Rules kept here, so every session keeps them:

- USER, PASS and AUTH only over TLS, unless ``plaintext_login`` (a listener marked so
  on loopback); CAPA offers them only where they are allowed (RFC 2595 2.2).
- After STLS, whatever the client sent behind it in plaintext is thrown away (the
  CVE-2011-0411 class); the session's stream drops what it buffered too.
- A command line is at most ``max_line_length`` octets with its CRLF: a longer one is
  discarded as it arrives (never held whole) and answered ``-ERR``.
- After ``max_errors`` refused commands the connection is closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, auto
from typing import Final

from postroom.pop3.events import (
    NEED_DATA,
    Authenticate,
    ConnectionClosed,
    Event,
    Retrieve,
    StartTls,
    Update,
)
from postroom.smtp import sasl
from postroom.smtp.events import AuthChallenge, AuthCredentials

__all__ = ["MaildropEntry", "Pop3Config", "Pop3Connection", "State", "unique_id"]

_MAX_ARG: Final = 40  # RFC 1939 3: arguments up to 40 characters


class State(Enum):
    AUTHORIZATION = auto()
    TRANSACTION = auto()
    CLOSED = auto()


@dataclass(frozen=True, slots=True)
class Pop3Config:
    hostname: str
    tls_available: bool  # STLS can be offered (a certificate exists)
    plaintext_login: bool = False  # logins allowed without TLS
    max_line_length: int = 2048
    max_errors: int = 10


@dataclass(frozen=True, slots=True)
class MaildropEntry:
    uid: int  # the store's UID
    unique_id: str  # what UIDL says: stable across sessions (``unique_id``)
    size: int  # octets as RETR sends them before dot-stuffing


def unique_id(uidvalidity: int, uid: int) -> str:
    """UIDL's unique-id: UIDVALIDITY and UID, so a folder made afresh (new UIDVALIDITY)
    never makes a client take a new message for one it already has."""
    return f"{uidvalidity}.{uid}"


def _ok(text: str) -> bytes:
    return f"+OK {text}\r\n".encode()


def _err(text: str) -> bytes:
    return f"-ERR {text}\r\n".encode()


def _multiline(first: str, lines: Sequence[str]) -> bytes:
    return _ok(first) + "".join(f"{line}\r\n" for line in lines).encode() + b".\r\n"


_UNKNOWN: Final = _err("Unknown command")
_LINE_TOO_LONG: Final = _err("Line too long")
_TLS_FIRST: Final = _err("[AUTH] Plaintext login is not allowed here: use STLS first")
_NO_SUCH: Final = _err("No such message")
_DELETED: Final = _err("Message is deleted")
_SYNTAX: Final = _err("Syntax error")
_TOO_MANY: Final = _err("Too many errors, closing connection")


class Pop3Connection:
    def __init__(self, config: Pop3Config, *, tls: bool = False) -> None:
        self._config = config
        self.tls = tls
        self.state = State.AUTHORIZATION
        self._buffer = bytearray()
        self._discarding = False  # inside a line that is too long
        self._out = bytearray()
        self._errors = 0
        self._user: str | None = None  # USER given, PASS awaited
        self._sasl: sasl.Exchange | None = None  # an AUTH exchange awaiting a response
        self._waiting: Event | None = None  # an event the application has not answered
        self._maildrop: list[MaildropEntry] = []
        self._deleted: set[int] = set()  # message numbers marked by DELE
        self.username: str | None = None  # who logged in

    # -- the application's side ------------------------------------------------------
    def greeting(self) -> bytes:
        return _ok(f"{self._config.hostname} POP3 server ready")

    def receive_data(self, data: bytes) -> None:
        if self.state is not State.CLOSED:
            self._buffer += data

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def login_allowed(self) -> bool:
        return self.tls or self._config.plaintext_login

    def next_event(self) -> Event:
        """The next event; NEED_DATA when more bytes are needed (or the last event is
        not answered yet)."""
        if self._waiting is not None:
            return NEED_DATA
        while self.state is not State.CLOSED:
            line = self._next_line()
            if line is None:
                return NEED_DATA
            event = self._command(line)
            if event is not None:
                if not isinstance(event, ConnectionClosed):
                    self._waiting = event
                return event
        return ConnectionClosed()

    def accept_login(self, username: str, maildrop: Sequence[MaildropEntry]) -> None:
        self._answered(Authenticate)
        self.username = username
        self._maildrop = list(maildrop)
        self._deleted.clear()
        self.state = State.TRANSACTION
        count = len(self._maildrop)
        self._out += _ok(f"Logged in, {count} message{'' if count == 1 else 's'}")

    def refuse_login(self, text: str = "[AUTH] Authentication failed") -> None:
        self._answered(Authenticate)
        self._count_error()
        self._out += _err(text)

    def start_tls(self) -> None:
        """The handshake succeeded: the session starts afresh over TLS."""
        self._answered(StartTls)
        self.tls = True
        self._buffer.clear()
        self._discarding = False
        self._user = None

    def message_start(self, size: int) -> bytes:
        self._answered(Retrieve)
        return _ok(f"{size} octets")

    def message_gone(self) -> None:
        self._answered(Retrieve)
        self._out += _err("[SYS/TEMP] The message cannot be read now")

    def update_done(self, ok: bool) -> None:
        self._answered(Update)
        if ok:
            self._out += _ok("Logging out")
        else:
            self._out += _err("[SYS/TEMP] Some deleted messages were not removed")
        self.state = State.CLOSED

    def shutdown(self, text: str) -> bytes:
        """Close from our side (timeout, server stopping): the last reply."""
        self.state = State.CLOSED
        return _err(text)

    def _answered(self, kind: type) -> None:
        if not isinstance(self._waiting, kind):
            raise RuntimeError(f"no {kind.__name__} event is waiting for an answer")
        self._waiting = None

    # -- framing ---------------------------------------------------------------------
    def _next_line(self) -> str | None:
        while True:
            end = self._buffer.find(b"\n")
            limit = self._config.max_line_length
            if end < 0:
                if len(self._buffer) >= limit:
                    self._buffer.clear()  # too long already: drop it as it arrives
                    self._discarding = True
                return None
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._discarding or end + 1 > limit:
                self._discarding = False
                self._refuse(_LINE_TOO_LONG)
                if self.state is State.CLOSED:
                    return None
                continue
            return raw.removesuffix(b"\r").decode("utf-8", errors="surrogateescape")

    # -- commands --------------------------------------------------------------------
    def _refuse(self, reply: bytes) -> None:
        self._out += reply
        self._count_error()

    def _count_error(self) -> None:
        self._errors += 1
        if self._errors >= self._config.max_errors:
            self._out += _TOO_MANY
            self.state = State.CLOSED

    def _command(self, line: str) -> Event | None:
        if self._sasl is not None:
            return self._sasl_step(self._sasl.respond(line))
        verb, _, rest = line.partition(" ")
        verb = verb.upper()
        args = rest.split(" ") if rest else []
        if verb == "QUIT" and not args:
            return self._quit()
        if verb == "CAPA" and not args:
            self._out += _multiline("Capability list follows", self._capabilities())
            return None
        if self.state is State.AUTHORIZATION:
            return self._authorization(verb, args, rest)
        return self._transaction(verb, args)

    def _capabilities(self) -> list[str]:
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state is State.AUTHORIZATION:
            if self.login_allowed:
                caps += ["USER", "SASL PLAIN"]
            if self._config.tls_available and not self.tls:
                caps.append("STLS")
        caps.append("IMPLEMENTATION postroom")
        return caps

    def _quit(self) -> Event:
        if self.state is State.TRANSACTION:
            uids = tuple(self._maildrop[n - 1].uid for n in sorted(self._deleted))
            return Update(uids)
        self._out += _ok("Bye")
        self.state = State.CLOSED
        return ConnectionClosed()

    def _authorization(self, verb: str, args: list[str], rest: str) -> Event | None:
        match verb:
            case "STLS" if not args:
                if self.tls or not self._config.tls_available:
                    self._refuse(_err("STLS is not available"))
                    return None
                self._out += _ok("Begin TLS negotiation")
                self._buffer.clear()  # plaintext behind STLS is never read (CVE-2011-0411)
                return StartTls()
            case "USER" if rest:
                if not self.login_allowed:
                    self._refuse(_TLS_FIRST)
                    return None
                self._user = rest
                self._out += _ok("Send your password")
                return None
            case "PASS" if rest:
                user, self._user = self._user, None
                if user is None:
                    self._refuse(_err("USER first"))
                    return None
                return Authenticate("USER", "", user, rest)
            case "AUTH":
                return self._auth(args)
        self._user = None
        self._refuse(_LOG_IN_FIRST if verb in _TRANSACTION_VERBS else _wrong(verb))
        return None

    def _auth(self, args: list[str]) -> Event | None:
        if not args:  # the mechanisms, as many servers answer a bare AUTH
            self._out += _multiline("Mechanisms follow", ["PLAIN"] if self.login_allowed else [])
            return None
        if not self.login_allowed:
            self._refuse(_TLS_FIRST)
            return None
        if len(args) > 2 or args[0].upper() != "PLAIN":
            self._refuse(_err("Unsupported mechanism"))
            return None
        exchange = sasl.PlainExchange()
        self._sasl = exchange
        return self._sasl_step(exchange.first(args[1] if len(args) == 2 else None))

    def _sasl_step(self, step: sasl.AuthStep) -> Event | None:
        match step:
            case AuthChallenge():
                self._out += b"+ \r\n"  # RFC 5034 4: an empty challenge
                return None
            case AuthCredentials(mechanism=mechanism, authzid=authzid):
                self._sasl = None
                return Authenticate(mechanism, authzid, step.username, step.password)
        self._sasl = None
        self._refuse(_err(f"[AUTH] {step.reply.text}"))
        return None

    def _transaction(self, verb: str, args: list[str]) -> Event | None:
        match verb, len(args):
            case "STAT", 0:
                live = self._live()
                self._out += _ok(f"{len(live)} {sum(e.size for _, e in live)}")
            case "LIST", 0:
                self._out += _multiline(
                    f"{len(self._live())} messages", [f"{n} {e.size}" for n, e in self._live()]
                )
            case "UIDL", 0:
                self._out += _multiline(
                    "Unique-ID listing follows", [f"{n} {e.unique_id}" for n, e in self._live()]
                )
            case (("LIST" | "UIDL" | "DELE" | "RETR"), 1):
                return self._one(verb, args[0])
            case "TOP", 2:
                lines = _number(args[1], minimum=0)
                if lines is None:
                    self._refuse(_SYNTAX)
                    return None
                found = self._message(args[0])
                if found is not None:
                    return Retrieve(found[0], found[1].uid, lines)
            case "NOOP", 0:
                self._out += _ok("")
            case "RSET", 0:
                self._deleted.clear()
                self._out += _ok(f"{len(self._maildrop)} messages")
            case _:
                self._refuse(_LOGGED_IN if verb in _AUTHORIZATION_VERBS else _wrong(verb))
        return None

    def _live(self) -> list[tuple[int, MaildropEntry]]:
        return [(n, e) for n, e in enumerate(self._maildrop, 1) if n not in self._deleted]

    def _message(self, arg: str) -> tuple[int, MaildropEntry] | None:
        number = _number(arg, minimum=1)
        if number is None or number > len(self._maildrop):
            self._refuse(_NO_SUCH if number is not None else _SYNTAX)
            return None
        if number in self._deleted:
            self._refuse(_DELETED)
            return None
        return number, self._maildrop[number - 1]

    def _one(self, verb: str, arg: str) -> Event | None:
        found = self._message(arg)
        if found is None:
            return None
        number, entry = found
        match verb:
            case "LIST":
                self._out += _ok(f"{number} {entry.size}")
            case "UIDL":
                self._out += _ok(f"{number} {entry.unique_id}")
            case "DELE":
                self._deleted.add(number)
                self._out += _ok(f"Message {number} deleted")
            case _:
                return Retrieve(number, entry.uid, None)
        return None


_AUTHORIZATION_VERBS: Final = frozenset({"USER", "PASS", "AUTH", "STLS"})
_TRANSACTION_VERBS: Final = frozenset(
    {"STAT", "LIST", "UIDL", "RETR", "DELE", "TOP", "NOOP", "RSET"}
)
_LOG_IN_FIRST: Final = _err("Log in first")
_LOGGED_IN: Final = _err("Already logged in")


def _wrong(verb: str) -> bytes:
    known = verb in _AUTHORIZATION_VERBS or verb in _TRANSACTION_VERBS or verb in ("CAPA", "QUIT")
    return _SYNTAX if known else _UNKNOWN


def _number(text: str, *, minimum: int) -> int | None:
    if not text.isascii() or not text.isdigit() or len(text) > _MAX_ARG:
        return None
    value = int(text)
    return value if value >= minimum else None
