"""ClientConnection: the sans-IO SMTP client (RFC 5321), replies in, commands and conclusions out.

The counterpart of ``ServerConnection``. The driver moves bytes and nothing else::

    conn = ClientConnection(ClientConfig("client.example", where, TlsMode.OPPORTUNISTIC))
    while True:
        event = conn.next_event()
        write(conn.data_to_send())       # what the core decided to send, b"" for nothing
        if event is NEED_DATA:
            conn.receive_data(read())    # b"" when the peer closed; conn.fail(...) on trouble
            continue
        ...                              # StartTls: handshake, then tls_started()/tls_failed()
                                         # Ready: conn.send_message(message, recipients)

Opening: the greeting, EHLO (HELO when EHLO gets a 5xx: RFC 5321 3.2), STARTTLS when
offered or required (RFC 3207; EHLO again after it, 4.2), and AUTH when the config has a
username (RFC 4954: PLAIN, else LOGIN), then ``Ready``. A message: RSET first on a session
that has carried one before (its reply also proves a pooled session alive), MAIL FROM
with the parameters the peer announced, one RCPT per recipient, DATA, the dot-stuffed
message. When the peer offers CHUNKING (RFC 3030) and the config allows it, ``BDAT <size>
LAST`` and the message as it is take the place of DATA and the stuffed message: one chunk,
one reply, the end-of-data reply. With PIPELINING (RFC 2920) the whole envelope goes out
at once, DATA (or BDAT with its octets: RFC 3030 4.2) last, and the replies are matched
to it in order; without it, one command per reply, and no DATA or BDAT when no recipient
was accepted.

What each reply means is decided here, with ``trouble``'s table: ``RecipientRefused`` for
one recipient, ``MessageDone`` with those delivered, ``Failed`` for all that are left,
``Stale`` for a reused session that was gone before anything mattered. A pipelined batch
is read to its end before its outcome is reported, so the session is in a known state
(or closed) whenever the driver hears of it. A 421 ends the session at any point
(RFC 5321 3.8). Nothing here raises for anything the peer sends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Final

from postroom.smtp import client as smtp
from postroom.smtp.client import (
    HELO_CAPABILITIES,
    Capabilities,
    Message,
    Recipient,
    ReplyError,
    ReplyParser,
)
from postroom.smtp.events import NEED_DATA, NeedData
from postroom.smtp.replies import Reply
from postroom.smtp.trouble import Failure, Fault, Stage, reply_failure

__all__ = [
    "ClientConfig",
    "ClientConnection",
    "ClientEvent",
    "Closed",
    "Failed",
    "MessageDone",
    "Ready",
    "RecipientRefused",
    "Stale",
    "StartTls",
    "TlsMode",
]


class TlsMode(StrEnum):
    NONE = "none"  # never
    OPPORTUNISTIC = "opportunistic"  # STARTTLS when offered, no certificate check (RFC 7435)
    STARTTLS = "starttls"  # STARTTLS or nothing is sent
    IMPLICIT = "implicit"  # TLS from the first byte (RFC 8314): the driver's business


@dataclass(frozen=True, slots=True)
class ClientConfig:
    hostname: str  # ours, for EHLO/HELO
    where: str = "the server"  # the peer as the failure texts name it
    tls: TlsMode = TlsMode.NONE
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    chunking: bool = True  # BDAT instead of DATA when the peer offers CHUNKING (RFC 3030)


# -- events ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StartTls:
    """220 to STARTTLS: hand-shake now, then ``tls_started()`` or ``tls_failed()``."""


@dataclass(frozen=True, slots=True)
class Ready:
    """The session is open: ``send_message()`` may be called."""

    capabilities: Capabilities


@dataclass(frozen=True, slots=True)
class RecipientRefused:
    index: int  # into the recipients given to ``send_message``
    failure: Failure


@dataclass(frozen=True, slots=True)
class MessageDone:
    """The transaction is over and the session ready for another."""

    delivered: tuple[int, ...]  # indexes of the recipients the final reply accepted
    reply: Reply | None  # the final reply; None when no recipient was accepted


@dataclass(frozen=True, slots=True)
class Failed:
    """The session could not be opened, or the transaction failed for every recipient not
    settled yet. ``ClientConnection.usable`` says whether the session can go on."""

    failure: Failure


@dataclass(frozen=True, slots=True)
class Stale:
    """A reused session was closed, or refused RSET, before any reply mattered: nothing
    was sent that could have been delivered; try the message on another."""


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over (QUIT answered, or the connection gone)."""


ClientEvent = StartTls | Ready | RecipientRefused | MessageDone | Failed | Stale | Closed

_ACCEPTED: Final = frozenset({250, 251})  # RFC 5321 4.2.2: 251 "will forward"


class _Phase(Enum):
    OPENING = "opening"  # greeting, EHLO, STARTTLS, AUTH
    TLS_PENDING = "tls_pending"  # StartTls reported; nothing is read until tls_started()
    IDLE = "idle"  # open, no transaction
    TRANSACTION = "transaction"
    QUITTING = "quitting"
    CLOSED = "closed"


class _Transaction:
    __slots__ = (
        "accepted",
        "chunking",
        "cursor",
        "mail",
        "message",
        "pipelined",
        "rcpts",
        "result",
    )

    def __init__(
        self,
        message: Message,
        mail: bytes,
        rcpts: list[tuple[int, bytes]],
        pipelined: bool,
        chunking: bool,
    ) -> None:
        self.message, self.mail, self.rcpts, self.pipelined = message, mail, rcpts, pipelined
        self.chunking = chunking
        self.accepted: list[int] = []
        self.cursor = 0  # one command at a time: the next RCPT to send
        # Decided; reported once every reply of the batch has been read.
        self.result: MessageDone | Failed | None = None


class ClientConnection:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.capabilities: Capabilities | None = None  # from the last EHLO/HELO
        self.tls = config.tls is TlsMode.IMPLICIT
        self.authenticated = False
        self._parser = ReplyParser()
        self._out: list[bytes] = []
        self._events: deque[ClientEvent] = deque()
        # The replies owed to us, in order: (what it answers, stage, argument).
        self._awaiting: deque[tuple[str, Stage, int]] = deque([("GREETING", Stage.GREETING, 0)])
        self._phase = _Phase.OPENING
        self._stage = Stage.GREETING  # of the last reply read
        self._fault: tuple[Fault, str] | None = None
        self._tx: _Transaction | None = None
        self._used = False  # a message was sent on this session: RSET before the next
        self._refused_ehlo: Reply | None = None
        self._login: list[tuple[bytes, int]] = []  # AUTH steps left: (line, code hoped for)

    # -- the driver's interface ------------------------------------------------------------
    @property
    def usable(self) -> bool:
        """Open and between transactions: another message may be sent."""
        return self._phase is _Phase.IDLE and self._fault is None

    @property
    def closed(self) -> bool:
        return self._phase is _Phase.CLOSED

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` when it closed the connection."""
        if self._phase is _Phase.CLOSED or self._fault is not None:
            return
        if data:
            self._parser.feed(data)
        else:
            self._fault = (Fault.LOST, "")

    def fail(self, fault: Fault, detail: str = "") -> None:
        """The connection failed under the driver: ``TIMEOUT``, ``LOST`` or ``TLS`` (with
        the reason in ``detail``). The replies received before still count."""
        if self._phase is not _Phase.CLOSED and self._fault is None:
            self._fault = (fault, detail)

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def next_event(self) -> ClientEvent | NeedData:
        events = self._events
        while not events:
            if self._phase is _Phase.CLOSED:
                return Closed()
            if not self._awaiting:
                if self._fault is None:
                    return NEED_DATA
                self._broken(*self._fault)  # gone while idle
                continue
            try:
                reply = self._parser.next_reply()
            except ReplyError as exc:
                where, stage = self.config.where, self._awaiting[0][1]
                text = f"protocol error: malformed reply from {where} while {stage}: {exc}"
                self._broken(Fault.LOST, text)
                continue
            if reply is None:
                if self._fault is None:
                    return NEED_DATA
                self._broken(*self._fault)
                continue
            self._dispatch(reply)
        return events.popleft()

    def tls_started(self) -> None:
        """The handshake after StartTls succeeded: EHLO again (RFC 3207 4.2)."""
        if self._phase is not _Phase.TLS_PENDING:
            raise RuntimeError("no TLS handshake was asked for")
        self.tls, self.capabilities = True, None
        self._parser = ReplyParser()  # nothing said in the clear is kept
        self._phase = _Phase.OPENING
        self._hello()

    def tls_failed(self, reason: str) -> None:
        if self._phase is not _Phase.TLS_PENDING:
            raise RuntimeError("no TLS handshake was asked for")
        text = f"TLS handshake with {self.config.where} failed: {reason}"
        self._close(Failed(Failure(Stage.STARTTLS, Fault.TLS, text)))

    def send_message(self, message: Message, recipients: Sequence[Recipient]) -> None:
        """Start a transaction; its events follow from ``next_event()``."""
        if not self.usable or self.capabilities is None:
            raise RuntimeError("the session is not ready for a message")
        pipelined = self.capabilities.pipelining
        chunking = self.config.chunking and self.capabilities.chunking
        envelope = self._envelope(message, recipients, self.capabilities.extensions)
        if envelope is None:
            return
        mail, rcpts = envelope
        self._tx = tx = _Transaction(message, mail, rcpts, pipelined, chunking)
        self._phase = _Phase.TRANSACTION
        reused, self._used = self._used, True
        if reused:
            self._send(smtp.RSET, "RSET", Stage.MAIL)
        if pipelined:  # RFC 2920 3.1: DATA last in the batch
            self._send(mail, "MAIL", Stage.MAIL)
            for index, line in rcpts:
                self._send(line, "RCPT", Stage.RCPT, index)
            self._send_content(tx)
        elif not reused:
            self._send(mail, "MAIL", Stage.MAIL)

    def _envelope(
        self, message: Message, recipients: Sequence[Recipient], extensions: Mapping[str, str]
    ) -> tuple[bytes, list[tuple[int, bytes]]] | None:
        """The MAIL line and the RCPT lines by recipient index; None when nothing is to
        be sent, and the events say why."""
        if (refusal := smtp.local_refusal(message, extensions, self.config.where)) is not None:
            self._events.append(Failed(Failure(Stage.MAIL, Fault.LOCAL, str(refusal), refusal)))
            return None
        try:
            mail = smtp.mail_from(message.sender, smtp.mail_parameters(message, extensions))
        except ValueError:
            text = "Bad sender address syntax"
            failure = Failure(Stage.MAIL, Fault.LOCAL, text, Reply(553, "5.1.7", text))
            self._events.append(Failed(failure))
            return None
        rcpts = []
        for index, recipient in enumerate(recipients):
            try:
                parameters = smtp.rcpt_parameters(recipient, extensions)
                rcpts.append((index, smtp.rcpt_to(recipient.address, parameters)))
            except ValueError:
                text = "Bad recipient address syntax"
                reply = Reply(553, "5.1.3", text)
                failure = Failure(Stage.RCPT, Fault.PERMANENT, text, reply)
                self._events.append(RecipientRefused(index, failure))
        if not rcpts:
            self._events.append(MessageDone((), None))
            return None
        return mail, rcpts

    def quit(self) -> None:
        """QUIT (RFC 5321 4.1.1.10) when idle; ``Closed`` follows its reply. At any other
        time the session is just closed."""
        if self.usable:
            self._phase = _Phase.QUITTING
            self._send(smtp.QUIT, "QUIT", Stage.MAIL)
        elif self._phase is not _Phase.CLOSED:
            self._close(Closed())

    # -- sending and ending ----------------------------------------------------------------
    def _send(self, line: bytes, answers: str, stage: Stage, argument: int = 0) -> None:
        self._out.append(line)
        self._awaiting.append((answers, stage, argument))

    def _send_content(self, tx: _Transaction) -> None:
        """DATA, or the whole message as one BDAT chunk: the server reads a chunk's octets
        even when it refuses the command (RFC 3030 2), so they may follow it at once."""
        if tx.chunking:
            data = tx.message.data
            self._send(smtp.bdat_last(len(data)), "BDAT", Stage.DATA)
            self._out.append(data)
        else:
            self._send(smtp.DATA, "DATA", Stage.DATA)

    def _close(self, event: ClientEvent | None) -> None:
        # What was decided before is still sent: it would have been, had the replies
        # come in separate reads.
        self._phase, self._tx = _Phase.CLOSED, None
        self._awaiting.clear()
        if event is not None:
            self._events.append(event)

    def _broken(self, fault: Fault, detail: str) -> None:
        """No more replies will come: what that means depends on what was awaited."""
        answers, stage, _ = self._awaiting[0] if self._awaiting else ("", self._stage, 0)
        tx, where = self._tx, self.config.where
        if self._phase in (_Phase.IDLE, _Phase.QUITTING):
            self._close(Closed() if self._phase is _Phase.QUITTING else None)
        elif answers == "RSET":
            self._close(Stale())
        elif tx is not None and tx.result is not None:
            self._close(tx.result)  # decided before: the rest of the batch did not matter
        elif answers == "HELO" and self._refused_ehlo is not None:
            self._close(Failed(reply_failure(Stage.HELO, self._refused_ehlo, where)))
        else:
            if fault is Fault.TIMEOUT:
                text = f"conversation with {where} timed out while {stage}"
            elif fault is Fault.TLS:
                text = f"TLS failure with {where}: {detail}"
            else:
                text = detail or f"lost connection with {where} while {stage}"
            self._close(Failed(Failure(stage, fault, text)))

    def _dispatch(self, reply: Reply) -> None:
        answers, stage, argument = self._awaiting.popleft()
        self._stage = stage
        if reply.code == 421 and answers not in ("RSET", "QUIT"):
            # RFC 5321 3.8: the server is closing; nothing more will be answered.
            tx = self._tx
            decided = tx.result if tx is not None else None
            self._close(decided or Failed(reply_failure(stage, reply, self.config.where)))
            return
        _ON_REPLY[answers](self, reply, argument)
        tx = self._tx
        if tx is not None and tx.result is not None and not self._awaiting:
            self._tx, self._phase = None, _Phase.IDLE
            self._events.append(tx.result)

    # -- opening ---------------------------------------------------------------------------
    def _hello(self) -> None:
        self._send(smtp.command("EHLO", self.config.hostname), "EHLO", Stage.HELO)

    def _on_greeting(self, reply: Reply, _: int) -> None:
        if reply.code != 220:
            self._close(Failed(reply_failure(Stage.GREETING, reply, self.config.where)))
        else:
            self._hello()

    def _on_ehlo(self, reply: Reply, _: int) -> None:
        if reply.code == 250:
            self._greeted(Capabilities.from_ehlo(reply))
        elif reply.is_permanent:
            # RFC 5321 3.2: an old server that knows no EHLO (500, 502) may know HELO.
            self._refused_ehlo = reply
            self._send(smtp.command("HELO", self.config.hostname), "HELO", Stage.HELO)
        else:
            self._close(Failed(reply_failure(Stage.HELO, reply, self.config.where)))

    def _on_helo(self, reply: Reply, _: int) -> None:
        if reply.code == 250:
            self._greeted(HELO_CAPABILITIES)
        else:
            self._close(Failed(reply_failure(Stage.HELO, reply, self.config.where)))

    def _greeted(self, capabilities: Capabilities) -> None:
        self.capabilities, self._refused_ehlo = capabilities, None
        mode, where = self.config.tls, self.config.where
        if not self.tls and mode in (TlsMode.OPPORTUNISTIC, TlsMode.STARTTLS):
            if capabilities.starttls:
                self._send(smtp.STARTTLS, "STARTTLS", Stage.STARTTLS)
                return
            if mode is TlsMode.STARTTLS:
                text = f"TLS is required, but was not offered by {where}"
                self._close(Failed(Failure(Stage.STARTTLS, Fault.TLS, text)))
                return
        self._log_in()

    def _on_starttls(self, reply: Reply, _: int) -> None:
        where = self.config.where
        if reply.code == 220:
            if self._parser.pending:
                # Anything after the 220 came in the clear and may have been injected by a
                # man in the middle; it must not be read as the TLS server's (RFC 3207 6).
                reason = "the server sent more than its 220 reply to STARTTLS"
                text = f"TLS handshake with {where} failed: {reason}"
                self._close(Failed(Failure(Stage.STARTTLS, Fault.TLS, text)))
            else:
                self._phase = _Phase.TLS_PENDING
                self._events.append(StartTls())
        elif self.config.tls is TlsMode.STARTTLS:
            text = f"STARTTLS refused by {where}: {reply}"
            self._close(Failed(Failure(Stage.STARTTLS, Fault.TLS, text)))
        else:
            self._log_in()  # RFC 3207 4: the client may go on in the clear

    def _log_in(self) -> None:
        config = self.config
        if config.username is None:
            self._ready()
            return
        assert self.capabilities is not None
        offered = self.capabilities.auth
        username, password = config.username, config.password or ""
        if "PLAIN" in offered:
            self._login = [(smtp.auth_plain(username, password), 235)]
        elif "LOGIN" in offered:
            self._login = [
                (smtp.command("AUTH", "LOGIN"), 334),
                (smtp.base64_line(username), 334),
                (smtp.base64_line(password), 235),
            ]
        else:
            names = " ".join(sorted(offered)) or "none"
            text = (
                f"cannot authenticate at {config.where}: no common AUTH mechanism"
                f" (offered: {names})"
            )
            self._close(Failed(Failure(Stage.AUTH, Fault.PERMANENT, text)))
            return
        self._login_step()

    def _login_step(self) -> None:
        line, hoped_for = self._login.pop(0)
        self._send(line, "AUTH", Stage.AUTH, hoped_for)

    def _on_auth(self, reply: Reply, hoped_for: int) -> None:
        if reply.code == hoped_for:
            if self._login:
                self._login_step()
            else:
                self.authenticated = True
                self._ready()
            return
        self._login = []
        where = self.config.where
        if reply.is_transient or reply.is_permanent:
            fault = Fault.TRANSIENT if reply.is_transient else Fault.PERMANENT
            text = f"authentication failed at {where}: {reply}"
            self._close(Failed(Failure(Stage.AUTH, fault, text, reply)))
        else:
            self._close(Failed(reply_failure(Stage.AUTH, reply, where)))  # a protocol error

    def _ready(self) -> None:
        assert self.capabilities is not None
        self._phase = _Phase.IDLE
        self._events.append(Ready(self.capabilities))

    # -- a transaction ---------------------------------------------------------------------
    def _transaction(self) -> _Transaction:
        tx = self._tx
        assert tx is not None
        return tx

    def _on_rset(self, reply: Reply, _: int) -> None:
        if reply.code != 250:
            self._close(Stale())
            return
        tx = self._transaction()
        if not tx.pipelined:
            self._send(tx.mail, "MAIL", Stage.MAIL)

    def _on_mail(self, reply: Reply, _: int) -> None:
        tx = self._transaction()
        if reply.code != 250:
            tx.result = Failed(reply_failure(Stage.MAIL, reply, self.config.where))
        elif not tx.pipelined:
            self._next_rcpt(tx)

    def _on_rcpt(self, reply: Reply, index: int) -> None:
        tx = self._transaction()
        if tx.result is not None:
            return  # the rest of a failed batch
        if reply.code in _ACCEPTED:
            tx.accepted.append(index)
        else:
            failure = reply_failure(Stage.RCPT, reply, self.config.where)
            self._events.append(RecipientRefused(index, failure))
        if not tx.pipelined:
            self._next_rcpt(tx)

    def _next_rcpt(self, tx: _Transaction) -> None:
        if tx.cursor < len(tx.rcpts):
            index, line = tx.rcpts[tx.cursor]
            tx.cursor += 1
            self._send(line, "RCPT", Stage.RCPT, index)
        elif tx.accepted:
            self._send_content(tx)
        else:
            tx.result = MessageDone((), None)  # the next transaction starts with RSET

    def _on_data(self, reply: Reply, _: int) -> None:
        tx = self._transaction()
        if tx.result is not None or not tx.accepted:
            if reply.code == 354:
                # RFC 2920 3.1: DATA was accepted, but there is nobody to send the message
                # to: end the data at once; the server refuses or ignores it.
                self._send(smtp.END_OF_DATA, "END_OF_NOTHING", Stage.DATA)
            tx.result = tx.result or MessageDone((), None)
        elif reply.code == 354:
            self._send(smtp.message_data(tx.message.data), "END", Stage.DATA)
        else:
            tx.result = Failed(reply_failure(Stage.DATA, reply, self.config.where))

    def _on_end(self, reply: Reply, _: int) -> None:
        tx = self._transaction()
        if reply.code == 250:
            tx.result = MessageDone(tuple(tx.accepted), reply)
        else:
            tx.result = Failed(reply_failure(Stage.DATA, reply, self.config.where))

    def _on_bdat(self, reply: Reply, _: int) -> None:
        tx = self._transaction()
        if tx.result is not None or not tx.accepted:
            # A pipelined chunk after a refused MAIL or refused recipients: the server
            # refuses it too (or drops it); the outcome was decided before.
            tx.result = tx.result or MessageDone((), None)
        else:
            self._on_end(reply, _)

    def _on_end_of_nothing(self, reply: Reply, _: int) -> None:
        pass  # whatever it says, the outcome was decided before

    def _on_quit(self, reply: Reply, _: int) -> None:
        self._close(Closed())


# What each reply answers -> what it means.
_ON_REPLY: Final[Mapping[str, Callable[[ClientConnection, Reply, int], None]]] = {
    "GREETING": ClientConnection._on_greeting,
    "EHLO": ClientConnection._on_ehlo,
    "HELO": ClientConnection._on_helo,
    "STARTTLS": ClientConnection._on_starttls,
    "AUTH": ClientConnection._on_auth,
    "RSET": ClientConnection._on_rset,
    "MAIL": ClientConnection._on_mail,
    "RCPT": ClientConnection._on_rcpt,
    "DATA": ClientConnection._on_data,
    "END": ClientConnection._on_end,
    "BDAT": ClientConnection._on_bdat,
    "END_OF_NOTHING": ClientConnection._on_end_of_nothing,
    "QUIT": ClientConnection._on_quit,
}
