"""ServerConnection: the sans-IO SMTP server (RFC 5321), bytes in, events out, replies in.

The driver contract is in ``events``; in short::

    conn = ServerConnection(config, tls=None)
    write(conn.greeting())
    conn.receive_data(data)              # b"" when the peer closed
    while (event := conn.next_event()) is not NEED_DATA:
        ...                              # MessageChunk and ConnectionClosed need no reply
        write(conn.send(reply))          # every other event: exactly one reply

The core parses at most one command ahead of its pending reply, so replies keep the
order of pipelined commands (RFC 2920 3). It decides everything that needs no
application knowledge (syntax, sequence, limits, smuggling) and emits those refusals as
``InvalidCommand`` with the reply already built. ``send()`` advances the state from the
reply's class, through the tables in ``state``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

from postroom.smtp import events as ev
from postroom.smtp import replies, sasl
from postroom.smtp.events import NEED_DATA, Event, NeedData
from postroom.smtp.grammar import (
    decode_line,
    parse_bdat_argument,
    parse_helo_argument,
    split_command,
)
from postroom.smtp.params import Offered, mail_from, rcpt_to
from postroom.smtp.receiver import TOO_LONG, BdatReader, DataReader, MessageBody, ReceiveBuffer
from postroom.smtp.replies import Reply
from postroom.smtp.state import TRANSACTION, State, after, refusal

__all__ = ["ServerConfig", "ServerConnection", "TlsInfo"]

MIB: Final = 1024 * 1024
_MIN_LINE: Final = 512  # RFC 5321 4.5.3.1.4: a command line of 512 octets must fit
_SASL_LINE: Final = 12288  # RFC 4954 4: room for a SASL response line
# Commands we know and refuse, without counting an error: 502, not "unknown".
_DECLINED: Final[Mapping[str, Reply]] = {
    "EXPN": replies.EXPN_NOT_AVAILABLE,  # RFC 5321 3.5.2: never expand lists
    **dict.fromkeys(
        ("TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML", "VERB"), replies.NOT_IMPLEMENTED
    ),
}


@dataclass(frozen=True, slots=True)
class TlsInfo:
    version: str  # e.g. "TLSv1.3"
    cipher: str


@dataclass(frozen=True, slots=True)
class ServerConfig:
    hostname: str
    max_message_size: int = 25 * MIB
    max_recipients: int = 100
    max_line_length: int = 2048  # command lines, CRLF included
    max_errors: int = 10
    starttls_available: bool = False
    auth_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")  # offered only under TLS
    auth_required: bool = False  # submission: MAIL before AUTH gets 530 5.7.0
    chunking: bool = True
    smtputf8: bool = True
    dsn: bool = True

    def __post_init__(self) -> None:
        if self.max_line_length < _MIN_LINE:
            raise ValueError(f"max_line_length must be at least {_MIN_LINE}")
        if self.max_message_size < 1 or self.max_recipients < 1 or self.max_errors < 1:
            raise ValueError("limits must be positive")
        unknown = {m.upper() for m in self.auth_mechanisms} - set(sasl.MECHANISMS)
        if unknown:
            raise ValueError(f"unsupported SASL mechanisms: {sorted(unknown)}")


class _Mode(Enum):
    COMMAND = "command"
    DATA = "data"  # after 354: message content up to <CRLF>.<CRLF>
    BDAT = "bdat"  # inside a BDAT chunk's octets
    AUTH = "auth"  # after a 334: the next line is a SASL response
    TLS_PENDING = "tls_pending"  # after 220 to STARTTLS: nothing is read until start_tls()


class ServerConnection:
    def __init__(self, config: ServerConfig, tls: TlsInfo | None = None) -> None:
        self.config = config
        self.tls = tls
        self.state = State.INITIAL
        self.helo_name: str | None = None
        self.esmtp = False
        self.authenticated = False
        self.closed = False
        self._buffer = ReceiveBuffer()
        self._mode = _Mode.COMMAND
        self._pending: str | None = None  # what the awaited reply answers
        self._close_after = False
        self._errors = 0
        self._greeted_as: tuple[str, bool] | None = None
        self._mail_smtputf8 = False
        self._smtputf8 = False  # this transaction's MAIL said SMTPUTF8
        self._recipients = 0
        self._message: MessageBody | None = None  # the BDAT message, across its chunks
        self._data: DataReader | None = None
        self._bdat: BdatReader | None = None
        self._bdat_refusal: Reply | None = None
        self._sasl: sasl.Exchange | None = None
        self._mechanisms = _mechanism_names(config.auth_mechanisms)

    # -- the driver's interface --------------------------------------------------------------
    @property
    def in_transaction(self) -> bool:
        """MAIL accepted and the transaction not finished (RSET, end of message, HELO)."""
        return self.state in TRANSACTION

    @property
    def receiving_content(self) -> bool:
        """Reading message content: after 354 to DATA, or inside a BDAT chunk's octets."""
        return self._mode is _Mode.DATA or self._mode is _Mode.BDAT

    @property
    def awaiting_reply(self) -> bool:
        """An event was handed out and its command waits for ``send()``."""
        return self._pending is not None

    def greeting(self) -> bytes:
        """RFC 5321 4.3.1: ``220 <domain> ESMTP ...`` (no enhanced code: RFC 2034 3)."""
        return _greeting(self.config.hostname)

    def receive_data(self, data: bytes) -> None:
        if self.closed:
            return
        if self._mode is _Mode.TLS_PENDING and data:
            return  # plaintext after STARTTLS never counts (CVE-2011-0411)
        self._buffer.feed(data)

    def next_event(self) -> Event | NeedData:
        if self.closed:
            return ev.ConnectionClosed()
        if self._pending is not None:
            raise RuntimeError(f"send() the reply to {self._pending} first")
        match self._mode:
            case _Mode.COMMAND:
                return self._next_command()
            case _Mode.DATA:
                return self._next_data()
            case _Mode.BDAT:
                return self._next_bdat()
            case _Mode.AUTH:
                return self._next_auth_line()
            case _Mode.TLS_PENDING:
                return self._starved()

    def send(self, reply: Reply) -> bytes:
        """Answer the pending command; returns the bytes to write."""
        if self.closed:
            raise RuntimeError("the connection is closed")
        pending, self._pending = self._pending, None
        if pending is None:
            raise RuntimeError("no command is waiting for a reply")
        self.state = after(self.state, pending, reply)
        if self.state not in TRANSACTION:
            self._reset_transaction()
        hook = _AFTER.get(pending)
        if hook is not None:
            hook(self, reply)
        # RFC 5321 3.8: 421 closes the channel; 221 answers QUIT.
        if reply.code == 421 or self._close_after or (pending == "QUIT" and reply.is_positive):
            self.closed = True
        return reply.to_bytes()

    def start_tls(self, tls: TlsInfo) -> None:
        """The handshake is done: RFC 3207 4.2, forget everything learnt before it."""
        if self._mode is not _Mode.TLS_PENDING:
            raise RuntimeError("start_tls() without an accepted STARTTLS")
        self.tls = tls
        self.state = State.INITIAL
        self.helo_name = None
        self.esmtp = False
        self.authenticated = False
        self._reset_transaction()
        self._buffer.clear()
        self._mode = _Mode.COMMAND

    def shutdown(self, reply: Reply) -> bytes:
        """An unsolicited reply (421: timeout, server stopping); the connection is closed."""
        self.closed = True
        self._pending = None
        return reply.to_bytes()

    # -- helpers -------------------------------------------------------------------------------
    def _expect(self, pending: str, event: Event) -> Event:
        self._pending = pending
        return event

    def _invalid(self, reply: Reply, *, counts: bool = True, close: bool = False) -> Event:
        if counts:
            self._errors += 1
            if self._errors >= self.config.max_errors:
                reply, close = replies.TOO_MANY_ERRORS, True
        self._close_after = close
        return self._expect("INVALID", ev.InvalidCommand(reply, close=close))

    def _starved(self) -> NeedData | ev.ConnectionClosed:
        if self._buffer.eof:
            self.closed = True
            return ev.ConnectionClosed()
        return NEED_DATA

    def _reset_transaction(self) -> None:
        self._recipients = 0
        self._smtputf8 = False
        self._message = None

    @property
    def _auth_offered(self) -> bool:
        return self.tls is not None and bool(self._mechanisms)

    def _offered(self) -> Offered:
        return _offered(self.config, self._auth_offered)

    def _capabilities(self) -> Reply:
        return _capabilities(
            self.config, self.tls is None, self._mechanisms if self._auth_offered else ()
        )

    # -- reading -------------------------------------------------------------------------------
    def _next_command(self) -> Event | NeedData:
        line = self._buffer.read_line(self.config.max_line_length)
        if line is None:
            return self._starved()
        if line is TOO_LONG:
            return self._invalid(replies.LINE_TOO_LONG)
        text = decode_line(line)
        if text is None:
            return self._invalid(replies.INVALID_CHARACTERS)
        command = split_command(text)
        if command is None:
            return self._invalid(replies.UNKNOWN_COMMAND)
        verb, argument = command
        if verb in _DECLINED:
            return self._invalid(_DECLINED[verb], counts=False)
        simple, handler = _SIMPLE.get(verb), _COMMANDS.get(verb)
        if simple is None and handler is None:
            return self._invalid(replies.UNKNOWN_COMMAND)
        refused = refusal(self.state, verb)
        if refused is not None and verb != "BDAT":  # a BDAT's octets are read even so
            return self._invalid(refused)
        if handler is not None:
            return handler(self, argument)
        assert simple is not None
        build, with_argument, without = simple
        wrong = with_argument if argument else without
        return self._invalid(wrong) if wrong else self._expect(verb, build(argument))

    def _next_data(self) -> Event | NeedData:
        reader = self._data
        assert reader is not None
        chunk = reader.read(self._buffer)
        if chunk:
            return ev.MessageChunk(chunk)
        if not reader.ended:
            return self._starved()
        self._mode, self._data = _Mode.COMMAND, None
        body = reader.body
        return self._expect("MESSAGE_END", ev.MessageEnd(body.size, body.problem))

    def _next_bdat(self) -> Event | NeedData:
        reader = self._bdat
        assert reader is not None
        chunk = reader.read(self._buffer)
        if chunk:
            return ev.MessageChunk(chunk)
        if not reader.done:
            return self._starved()
        self._mode, self._bdat = _Mode.COMMAND, None
        body = reader.body
        if self._bdat_refusal is not None or body is None:
            return self._invalid(self._bdat_refusal or replies.BAD_SEQUENCE)
        if reader.last:
            return self._expect("MESSAGE_END", ev.MessageEnd(body.size, body.finish()))
        return self._expect("BDAT", ev.BdatChunkEnd(reader.size, body.size, body.problem))

    def _next_auth_line(self) -> Event | NeedData:
        exchange = self._sasl
        assert exchange is not None
        line = self._buffer.read_line(max(self.config.max_line_length, _SASL_LINE))
        if line is None:
            return self._starved()
        self._mode, self._sasl = _Mode.COMMAND, None
        if line is TOO_LONG:
            return self._invalid(replies.LINE_TOO_LONG)
        text = decode_line(line)
        if text is None:
            return self._invalid(replies.BAD_BASE64)
        return self._auth_step(exchange, exchange.respond(text))

    def _auth_step(self, exchange: sasl.Exchange, step: sasl.AuthStep) -> Event:
        if isinstance(step, ev.InvalidCommand):
            return self._invalid(step.reply)
        self._sasl = exchange
        return self._expect(
            "AUTH_CHALLENGE" if isinstance(step, ev.AuthChallenge) else "AUTH", step
        )

    # -- commands (RFC 5321 4.1.1) ------------------------------------------------------------
    def _helo(self, argument: str, *, esmtp: bool) -> Event:
        if parse_helo_argument(argument) is None:
            return self._invalid(replies.HELO_SYNTAX)
        self._greeted_as = (argument, esmtp)
        if esmtp:
            return self._expect("EHLO", ev.Ehlo(argument, self._capabilities()))
        return self._expect("HELO", ev.Helo(argument, Reply(250, None, self.config.hostname)))

    def _mail(self, argument: str) -> Event:
        config = self.config
        if config.auth_required and not self.authenticated:
            first_tls = self.tls is None and config.starttls_available
            return self._invalid(replies.STARTTLS_FIRST if first_tls else replies.AUTH_REQUIRED)
        event = mail_from(argument, self._offered())
        if isinstance(event, Reply):
            return self._invalid(event)
        self._mail_smtputf8 = event.smtputf8
        return self._expect("MAIL", event)

    def _rcpt(self, argument: str) -> Event:
        if self._recipients >= self.config.max_recipients:  # RFC 5321 4.5.3.1.10
            return self._invalid(replies.TOO_MANY_RECIPIENTS, counts=False)
        event = rcpt_to(
            argument, self._offered(), hostname=self.config.hostname, smtputf8=self._smtputf8
        )
        if isinstance(event, Reply):
            return self._invalid(event)
        return self._expect("RCPT", event)

    def _bdat_command(self, argument: str) -> Event | NeedData:
        parsed = parse_bdat_argument(argument)
        if parsed is None:
            # Without a count the chunk's octets cannot be skipped: whatever follows would
            # be read as commands (an injection vector), so the connection ends here.
            return self._invalid(replies.BDAT_SYNTAX, counts=False, close=True)
        size, last = parsed
        refused = refusal(self.state, "BDAT")
        if not self.config.chunking:
            refused = replies.NOT_IMPLEMENTED
        body = None
        if refused is None:
            if self._message is None:
                self._message = MessageBody(self.config.max_message_size)
            body = self._message
        self._bdat = BdatReader(size, last=last, body=body)
        self._bdat_refusal = refused
        self._mode = _Mode.BDAT
        return self._next_bdat()

    def _starttls(self, argument: str) -> Event:
        if self.tls is not None:
            return self._invalid(replies.ALREADY_TLS)
        if not self.config.starttls_available:
            return self._invalid(replies.NOT_IMPLEMENTED)
        if argument:
            return self._invalid(replies.STARTTLS_SYNTAX)
        return self._expect("STARTTLS", ev.StartTls())

    def _auth(self, argument: str) -> Event:
        if self.authenticated:  # RFC 4954 4: one successful AUTH per session
            return self._invalid(replies.ALREADY_AUTHENTICATED)
        words = argument.split()
        if not 1 <= len(words) <= 2:
            return self._invalid(replies.AUTH_SYNTAX)
        if self.tls is None:  # passwords only under TLS
            return self._invalid(replies.ENCRYPTION_REQUIRED)
        mechanism = words[0].upper()
        started = sasl.start(mechanism, words[1] if len(words) == 2 else None)
        if mechanism not in self._mechanisms or started is None:
            return self._invalid(replies.UNKNOWN_AUTH_MECHANISM)
        return self._auth_step(*started)

    # -- what a reply changes beyond the state table ---------------------------------------
    def _after_helo(self, reply: Reply) -> None:
        if reply.is_positive and self._greeted_as is not None:
            self.helo_name, self.esmtp = self._greeted_as

    def _after_mail(self, reply: Reply) -> None:
        if reply.is_positive:
            self._smtputf8 = self._mail_smtputf8

    def _after_rcpt(self, reply: Reply) -> None:
        if reply.is_positive:
            self._recipients += 1

    def _after_data(self, reply: Reply) -> None:
        if reply.code == 354:
            self._data = DataReader(self.config.max_message_size)
            self._mode = _Mode.DATA

    def _after_starttls(self, reply: Reply) -> None:
        if reply.code == 220:
            self._buffer.clear()  # RFC 2920 3.1, RFC 3207 4.2: drop what followed STARTTLS
            self._mode = _Mode.TLS_PENDING

    def _after_challenge(self, reply: Reply) -> None:
        if reply.code == 334:
            self._mode = _Mode.AUTH
        else:
            self._sasl = None

    def _after_credentials(self, reply: Reply) -> None:
        self._sasl = None
        if reply.code == 235:
            self.authenticated = True


# A listener's sessions all get the same greeting and one of at most four EHLO replies:
# made once (with their wire bytes, see Reply.to_bytes), not per connection.
@functools.lru_cache(maxsize=64)
def _mechanism_names(mechanisms: tuple[str, ...]) -> tuple[str, ...]:
    """Upper-cased once per listener config: a tuple per connection is memory every
    idle session holds."""
    return tuple(m.upper() for m in mechanisms)


@functools.lru_cache(maxsize=64)
def _greeting(hostname: str) -> bytes:
    return Reply(220, None, f"{hostname} ESMTP postroom").to_bytes()


@functools.lru_cache(maxsize=64)
def _capabilities(config: ServerConfig, plaintext: bool, mechanisms: tuple[str, ...]) -> Reply:
    """RFC 5321 4.1.1.1: the EHLO reply, one extension per line; ``mechanisms``: the
    SASL mechanisms offered (none: no AUTH line)."""
    lines = [config.hostname, "PIPELINING", f"SIZE {config.max_message_size}", "8BITMIME"]
    lines += ["SMTPUTF8"] if config.smtputf8 else []
    lines += ["ENHANCEDSTATUSCODES"]
    lines += ["CHUNKING"] if config.chunking else []
    lines += ["DSN"] if config.dsn else []
    lines += ["STARTTLS"] if config.starttls_available and plaintext else []
    lines += [f"AUTH {' '.join(mechanisms)}"] if mechanisms else []
    return Reply(250, None, tuple(lines))


@functools.lru_cache(maxsize=64)
def _offered(config: ServerConfig, auth_offered: bool) -> Offered:
    return Offered(config.max_message_size, config.smtputf8, config.dsn, auth_offered)


_COMMANDS: Final[Mapping[str, Callable[[ServerConnection, str], Event | NeedData]]] = {
    "HELO": lambda conn, argument: conn._helo(argument, esmtp=False),
    "EHLO": lambda conn, argument: conn._helo(argument, esmtp=True),
    "MAIL": ServerConnection._mail,
    "RCPT": ServerConnection._rcpt,
    "BDAT": ServerConnection._bdat_command,
    "STARTTLS": ServerConnection._starttls,
    "AUTH": ServerConnection._auth,
}

# Commands whose event carries no decision of the core. verb -> (event, reply when an
# argument is given, reply when none is); None: that is fine.
_SIMPLE: Final[Mapping[str, tuple[Callable[[str], Event], Reply | None, Reply | None]]] = {
    "DATA": (lambda _: ev.Data(), replies.DATA_SYNTAX, None),  # RFC 5321 4.1.1.4
    "RSET": (lambda _: ev.Rset(replies.OK), replies.PARAMETER_SYNTAX, None),  # 4.1.1.5
    "NOOP": (lambda _: ev.Noop(replies.OK), None, None),  # 4.1.1.9: an argument is ignored
    "QUIT": (lambda _: ev.Quit(replies.CLOSING), replies.PARAMETER_SYNTAX, None),  # 4.1.1.10
    "VRFY": (lambda arg: ev.Vrfy(arg, replies.VRFY_CANNOT), None, replies.VRFY_SYNTAX),
    "HELP": (lambda arg: ev.Help(arg, replies.HELP), None, None),  # 4.1.1.8
}

_AFTER: Final[Mapping[str, Callable[[ServerConnection, Reply], None]]] = {
    "HELO": ServerConnection._after_helo,
    "EHLO": ServerConnection._after_helo,
    "MAIL": ServerConnection._after_mail,
    "RCPT": ServerConnection._after_rcpt,
    "DATA": ServerConnection._after_data,
    "STARTTLS": ServerConnection._after_starttls,
    "AUTH_CHALLENGE": ServerConnection._after_challenge,
    "AUTH": ServerConnection._after_credentials,
}
