"""ImapConnection: the sans-IO IMAP server (RFC 3501), bytes in, events out.

The driver contract::

    conn = ImapConnection(config, tls=False)
    write(conn.greeting())
    conn.receive_data(data)                  # b"" when the peer closed
    while (event := conn.next_event()) is not None:
        match event:
            case Write(data): write(data)    # the core answered alone (BAD, NO, "+")
            case Request(tag, command): ...  # the application answers, then
                                             # conn.authenticated() / selected() / ...
            case Credentials(...): ...       # AUTHENTICATE PLAIN decoded
            case StartTls(tag): ...          # write OK, conn.start_tls(), upgrade
            case IdleDone(tag, ok): ...      # DONE (or anything else) ended IDLE
            case Closed(): ...

The core decides everything that needs no mailbox: framing and its limits, syntax,
which commands each state allows (RFC 3501 3), that no password crosses the wire before
TLS (unless the listener allows it), the SASL PLAIN exchange, and what is dropped at
STARTTLS. It frames at most one command ahead: the application answers each event
before asking for the next, so a state change applies to the command after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

from postroom.imap import commands as cmd
from postroom.imap import responses as rs
from postroom.imap.receiver import CommandReader, Continue, Framed, Line, TooBig
from postroom.imap.tokens import TokenError, tokenize

__all__ = [
    "Closed",
    "Credentials",
    "IdleDone",
    "ImapConfig",
    "ImapConnection",
    "Request",
    "StartTls",
    "State",
    "Write",
]

MIB: Final = 1024 * 1024


class State(Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


_ANY: Final = frozenset(State) - {State.LOGOUT}
_AUTHED: Final = frozenset((State.AUTHENTICATED, State.SELECTED))
_ALLOWED: Final[Mapping[str, frozenset[State]]] = {
    **dict.fromkeys(("CAPABILITY", "NOOP", "LOGOUT", "ID"), _ANY),
    **dict.fromkeys(("STARTTLS", "LOGIN", "AUTHENTICATE"), frozenset({State.NOT_AUTHENTICATED})),
    "ENABLE": frozenset({State.AUTHENTICATED}),
    **dict.fromkeys(
        (
            "SELECT",
            "EXAMINE",
            "CREATE",
            "DELETE",
            "RENAME",
            "SUBSCRIBE",
            "UNSUBSCRIBE",
            "LIST",
            "LSUB",
            "STATUS",
            "APPEND",
            "NAMESPACE",
            "IDLE",
            "GETQUOTA",
            "GETQUOTAROOT",
        ),
        _AUTHED,
    ),
    **dict.fromkeys(
        (
            "CHECK",
            "CLOSE",
            "UNSELECT",
            "EXPUNGE",
            "UID EXPUNGE",
            "SEARCH",
            "UID SEARCH",
            "FETCH",
            "UID FETCH",
            "STORE",
            "UID STORE",
            "COPY",
            "UID COPY",
            "MOVE",
            "UID MOVE",
        ),
        frozenset({State.SELECTED}),
    ),
}
_TAG_CHARS: Final = frozenset(
    chr(c) for c in range(0x21, 0x7F) if chr(c) not in '(){%*"\\+'
)  # astring chars without "+" (RFC 3501 9: tag)
BASE_CAPABILITIES: Final = (
    "IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UIDPLUS",
    "MOVE", "UNSELECT", "CHILDREN", "LIST-EXTENDED", "LIST-STATUS", "SPECIAL-USE",
    "ESEARCH", "QUOTA", "QUOTA=RES-STORAGE", "CONDSTORE",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ImapConfig:
    hostname: str
    max_line: int = 64 * 1024  # one line of a command, CRLF included (RFC 7162 4: 8192+)
    max_literal: int = 64 * 1024  # a literal of any command but APPEND
    max_message_size: int = 25 * MIB  # APPEND's literal
    max_command: int = 256 * 1024  # a whole command, APPEND's message aside
    max_errors: int = 20  # BAD answers before the connection is closed
    starttls_available: bool = False
    plaintext_login: bool = False  # LOGIN without TLS (a loopback listener marked so)


@dataclass(frozen=True, slots=True)
class Write:
    data: bytes


@dataclass(frozen=True, slots=True)
class Request:
    tag: str
    command: cmd.Command


@dataclass(frozen=True, slots=True)
class Credentials:
    tag: str
    authzid: str
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class StartTls:
    tag: str


@dataclass(frozen=True, slots=True)
class IdleDone:
    tag: str
    ok: bool  # False: something other than DONE came


@dataclass(frozen=True, slots=True)
class Closed:
    pass


Event = Write | Request | Credentials | StartTls | IdleDone | Closed


class ImapConnection:
    def __init__(self, config: ImapConfig, *, tls: bool) -> None:
        self.config = config
        self.tls = tls
        self.state = State.NOT_AUTHENTICATED
        self.utf8 = False  # mailbox names in UTF-8 (RFC 6855; not offered yet)
        self.condstore = False  # ENABLE CONDSTORE, or a CONDSTORE-using command
        self.read_only = False
        self._reader = CommandReader(
            max_line=config.max_line,
            max_literal=config.max_literal,
            max_append=config.max_message_size,
            max_command=config.max_command,
        )
        self._eof = False
        self._errors = 0
        self._idle_tag: str | None = None
        self._auth_tag: str | None = None

    # -- what the application asks -------------------------------------------------
    def greeting(self) -> bytes:
        return rs.status("OK", "postroom IMAP ready", code=self._capability_code())

    def capabilities(self) -> tuple[str, ...]:
        caps = [*BASE_CAPABILITIES, f"APPENDLIMIT={self.config.max_message_size}"]
        if self.state is State.NOT_AUTHENTICATED:
            if not self.tls and self.config.starttls_available:
                caps.append("STARTTLS")
            if self._login_allowed:
                caps.append("AUTH=PLAIN")
            else:
                caps.append("LOGINDISABLED")
        return tuple(caps)

    def _capability_code(self) -> str:
        return "CAPABILITY " + " ".join(self.capabilities())

    @property
    def _login_allowed(self) -> bool:
        return self.tls or self.config.plaintext_login

    @property
    def in_command(self) -> bool:
        """Part of a command has come: the client is expected to send the rest soon."""
        return self._reader.in_command

    @property
    def closed(self) -> bool:
        return self.state is State.LOGOUT

    # -- state changes the application makes ----------------------------------------
    def authenticated(self) -> None:
        self.state = State.AUTHENTICATED

    def selected(self, *, read_only: bool) -> None:
        self.state = State.SELECTED
        self.read_only = read_only

    def unselected(self) -> None:
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED

    def logout(self) -> None:
        self.state = State.LOGOUT

    def start_tls(self) -> None:
        """The handshake is about to start: what was received behind STARTTLS goes."""
        self._reader.discard_buffered()
        self.tls = True

    def idle(self, tag: str) -> None:
        """IDLE was answered with "+": the next line should be DONE."""
        self._idle_tag = tag
        self._reader.line_mode = True

    # -- bytes in, events out --------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        self._reader.feed(data)

    def next_event(self) -> Event | None:
        if self.closed:
            return None
        framing = self._reader.next()
        if framing is None:
            if self._eof:
                self.state = State.LOGOUT
                return Closed()
            return None
        match framing:
            case Continue(tag=tag, name=name):
                return self._continue(tag, name)
            case Line(data=data):
                return self._line(data)
            case TooBig(tag=tag, what=what):
                code = "TOOBIG" if what == "literal" else None
                return self._bad(tag, f"{what} too long", status="NO" if code else "BAD", code=code)
            case Framed():
                return self._command(framing)
        raise AssertionError(framing)  # pragma: no cover

    def _continue(self, tag: str | None, name: str) -> Event:
        """ "+" for a literal, unless its command is refused anyway: a password must not
        be asked for where it may not be sent, nor a message where it cannot go."""
        allowed = _ALLOWED.get(name)
        refusal = None
        if tag is None or allowed is None or self.state not in allowed:
            refusal = self._bad(tag, "command refused before its literal")
        elif name in ("LOGIN", "AUTHENTICATE") and not self._login_allowed:
            refusal = Write(rs.tagged(tag, "NO", "log in over TLS", code="PRIVACYREQUIRED"))
        if refusal is None:
            return Write(rs.continuation("Ready for literal data"))
        self._reader.abandon()
        return refusal

    def _bad(
        self, tag: str | None, message: str, *, status: str = "BAD", code: str | None = None
    ) -> Event:
        self._errors += 1
        data = rs.tagged(tag, status, message, code=code) if tag else rs.status("BAD", message)
        if self._errors >= self.config.max_errors:
            self.state = State.LOGOUT
            data += rs.status("BYE", "too many errors")
        return Write(data)

    def _command(self, framed: Framed) -> Event:
        tag, name = framed.tag, framed.name
        if tag is None or not set(tag) <= _TAG_CHARS:
            return self._bad(None, "missing or bad tag")
        allowed = _ALLOWED.get(name)
        if allowed is None:
            return self._bad(tag, "unknown command")
        if self.state not in allowed:
            return self._bad(tag, f"{name} is not allowed in the {self.state.value} state")
        try:
            tokens = tokenize(framed.pieces)
            skip = 3 if name.startswith("UID ") else 2
            command = cmd.parse(name, tokens[skip:], utf8=self.utf8)
        except (TokenError, cmd.CommandError) as error:
            return self._bad(tag, str(error) or "syntax error")
        return self._gate(tag, command)

    def _gate(self, tag: str, command: cmd.Command) -> Event:
        """What the core answers itself (TLS and SASL); else the application's turn."""
        match command:
            case cmd.Simple(name="STARTTLS"):
                if self.tls or not self.config.starttls_available:
                    return self._bad(tag, "TLS is not available here")
                return StartTls(tag)
            case cmd.Login():
                if not self._login_allowed:
                    return Write(rs.tagged(tag, "NO", "log in over TLS", code="PRIVACYREQUIRED"))
            case cmd.Authenticate(mechanism=mechanism, initial=initial):
                if not self._login_allowed:
                    return Write(rs.tagged(tag, "NO", "log in over TLS", code="PRIVACYREQUIRED"))
                if mechanism != "PLAIN":
                    return Write(rs.tagged(tag, "NO", "mechanism not supported", code="CANNOT"))
                if initial is None:
                    self._auth_tag = tag
                    self._reader.line_mode = True
                    return Write(rs.continuation())
                return self._plain(tag, initial)
        self._errors = 0
        return Request(tag, command)

    def _line(self, data: bytes) -> Event:
        self._reader.line_mode = False
        if self._idle_tag is not None:
            idle_tag, self._idle_tag = self._idle_tag, None
            return IdleDone(idle_tag, data.strip().upper() == b"DONE")
        tag, self._auth_tag = self._auth_tag, None
        assert tag is not None
        if data.strip() == b"*":
            return Write(rs.tagged(tag, "BAD", "authentication cancelled"))
        try:
            response = cmd.decode_base64(data.strip())
        except cmd.CommandError:
            return self._bad(tag, "bad base64")
        return self._plain(tag, response)

    def _plain(self, tag: str, response: bytes) -> Event:
        """RFC 4616: authzid NUL authcid NUL password, UTF-8."""
        parts = response.split(b"\0")
        if len(parts) != 3 or not parts[1]:
            return self._bad(tag, "malformed PLAIN response")
        try:
            authzid, username, password = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            return self._bad(tag, "PLAIN response is not UTF-8")
        return Credentials(tag, authzid, username, password)
