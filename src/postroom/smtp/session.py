"""The asyncio driver for one SMTP connection: read -> core -> await policy/intake -> write.

The only await points are reads, writes, and the application calls made for
MAIL, RCPT, end of data and AUTH. Replies for a pipelined batch go out in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass

from postroom.events import Bus, SmtpTransaction
from postroom.events.authlog import auth_account, log_auth
from postroom.intake import Intake, Principal, PrincipalKind, Submission
from postroom.intake.principals import RelayNetworks
from postroom.mail.envelope import Recipient, Source, SourceKind
from postroom.net.deadlines import Deadline, Deadlines
from postroom.net.logins import LoginGate
from postroom.net.stream import Stream
from postroom.smtp import events as ev
from postroom.smtp import replies
from postroom.smtp.connection import ServerConfig, ServerConnection, TlsInfo
from postroom.smtp.replies import Reply

__all__ = ["Session", "SessionContext"]

_log = logging.getLogger("postroom.smtp")
# One read takes a small message with its pipelined commands whole; larger reads cost
# memory per connection when many large messages arrive at once (tests/e2e/test_memory.py).
_READ_SIZE = 64 * 1024
# The verb of each command event, for the debug log.
_VERBS: dict[type, str] = {
    ev.Helo: "HELO",
    ev.Ehlo: "EHLO",
    ev.MailFrom: "MAIL",
    ev.RcptTo: "RCPT",
    ev.Data: "DATA",
    ev.MessageEnd: "end of data",
    ev.BdatChunkEnd: "BDAT",
    ev.AuthChallenge: "AUTH",
    ev.AuthCredentials: "AUTH",
    ev.Rset: "RSET",
    ev.Noop: "NOOP",
    ev.Vrfy: "VRFY",
    ev.Help: "HELP",
    ev.Quit: "QUIT",
    ev.InvalidCommand: "invalid command",
}


@dataclass(frozen=True, slots=True)
class SessionContext:
    """What every session of one listener shares."""

    role: str
    config: ServerConfig
    intake: Intake
    logins: LoginGate[Principal]  # the one way passwords are checked, by every door
    ssl_context: ssl.SSLContext | None
    command_timeout: float  # a deadline for each whole command line
    data_timeout: float  # the longest wait for one read of message content
    bus: Bus
    deadlines: Deadlines  # the one timer for every session's read deadline
    min_data_rate: int = 0  # bytes per second of message content; 0: not enforced
    data_grace: float = 60.0  # seconds message content gets on top of its size / rate
    relay_networks: RelayNetworks | None = None  # clients that may relay without AUTH


def tls_info_of(stream: Stream) -> TlsInfo | None:
    ssl_object = stream.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    return TlsInfo(version=str(ssl_object.version()), cipher=str(cipher[0]) if cipher else "")


class Session:
    def __init__(self, context: SessionContext, stream: Stream) -> None:
        self._ctx = context
        self._stream = stream
        peer = stream.get_extra_info("peername")
        self._ip: str | None = str(peer[0]) if peer else None
        self._port: int | None = int(peer[1]) if peer else None
        self.conn = ServerConnection(context.config, tls=tls_info_of(stream))
        networks = context.relay_networks
        # A client in relay_networks is that network's principal until it logs in.
        self._network = networks.principal(self._ip) if networks is not None else None
        self._principal: Principal | None = self._network
        self._submission: Submission | None = None
        self._refused: list[tuple[str, str]] = []  # this transaction's refused RCPTs
        self._stopping = False
        self._reading = False
        self._task: asyncio.Task[None] | None = None
        # Deadlines (loop time): a command line must be whole by _line_started +
        # command_timeout; message content must keep up with min_data_rate from
        # _content_started (the first DATA or BDAT octet of the transaction).
        self._loop_time = asyncio.get_running_loop().time
        self._line_started = self._loop_time()
        self._answered = False  # a reply went out: the next command line's clock starts
        self._content_started: float | None = None
        self._content_bytes = 0
        # One entry per session in the listeners' shared Deadlines, moved only when a
        # deadline comes earlier than the one it is set for: asyncio.timeout_at per read
        # (a timer made and cancelled for every command) cost more than parsing the
        # command, and a timer per session is memory every idle connection holds.
        self._read_deadline = 0.0
        self._timer: Deadline | None = None
        self._expired = False  # the timer cancelled the read: a timeout, not a stop
        # Checked once per session: at the default level the debug lines cost nothing.
        self._debug = _log.isEnabledFor(logging.DEBUG)

    # -- lifecycle -----------------------------------------------------------------
    def request_stop(self) -> None:
        """Server is stopping: an idle session is told 421 4.3.2 at once; a session in a
        transaction finishes it and is told 421 4.3.2 at its next command."""
        self._stopping = True
        if self._reading and not self.conn.in_transaction and self._task is not None:
            self._task.cancel()

    async def run(self) -> None:
        """The session to its end. Nothing raised below escapes: the peer going away ends
        it quietly, anything else is a fault of ours (see ``_fail``)."""
        self._task = asyncio.current_task()
        if self._debug:
            self._log_connect()
        # The loop of reads and replies is here, not in a coroutine of its own: an idle
        # session waits in it, and each coroutine on its stack is memory it holds.
        try:
            self._stream.write(self.conn.greeting())
            stream = self._stream
            while not self.conn.closed:
                awaited = self._set_deadline()
                self._reading = True
                try:
                    while (data := stream.take(_READ_SIZE)) is None:
                        await stream.readable()
                except asyncio.CancelledError:
                    if not self._read_cut_short(awaited):
                        raise
                    await self._flush()
                    return
                finally:
                    self._reading = False
                self._received(data)
                if not await self._handle_events():
                    await self._flush()
                    return
                await self._flush()
                if self._said_goodbye_if_stopping():
                    await self._flush()
                    return
        except Exception as exc:
            if self._peer_gone(exc):
                _log.debug("connection from %s ended: %s", self._ip, exc)
            else:
                await self._fail()
        finally:
            self._end()

    def _end(self) -> None:
        if self._timer is not None:
            self._ctx.deadlines.drop(self._timer)
            self._timer = None
        self._abort_transaction()

    def _log_connect(self) -> None:
        _log.debug(
            "connect from %s port %s listener=%s%s",
            self._ip,
            self._port,
            self._ctx.role,
            f" tls={self.conn.tls.version}" if self.conn.tls else "",
        )

    def _said_goodbye_if_stopping(self) -> bool:
        """Between two commands of no transaction, a stopping server says 421 4.3.2."""
        if self._stopping and not self.conn.in_transaction:
            self._say_goodbye(replies.SHUTTING_DOWN)
            return True
        return False

    def _received(self, data: bytes) -> None:
        if self._content_started is not None:
            self._content_bytes += len(data)
        self.conn.receive_data(data)

    def _peer_gone(self, exc: Exception) -> bool:
        """A failure of the connection itself (reset, broken pipe, TLS alert), not ours:
        asyncio closes the transport on every socket or TLS error. An OSError from below
        (the spool's disk, a store, a lookup's timeout) leaves it open: a fault of ours."""
        return isinstance(exc, OSError) and self._stream.is_closing()

    async def _fail(self) -> None:
        """An unforeseen exception: the traceback goes to the log, never to the client.
        The command in progress gets 451 4.3.0, the transaction is dropped (its spool
        closed), and the session ends with 421 4.3.0: after a fault nothing more of it is
        trusted, as with a Postfix smtpd that dies (RFC 5321 3.8 allows 421 at any time)."""
        submission = self._submission
        _log.error(
            "session failed: client=%s listener=%s queue_id=%s",
            self._ip or "unknown",
            self._ctx.role,
            submission.queue_id if submission is not None else "-",
            exc_info=True,
        )
        if submission is not None:
            self._finish(replies.LOCAL_ERROR, "rejected")
        if self.conn.closed or self._stream.is_closing():
            return
        try:
            answer = self.conn.send(replies.LOCAL_ERROR) if self.conn.awaiting_reply else b""
        except Exception:  # the core itself failed: only the closing reply is safe
            answer = b""
        self._stream.write(answer + self.conn.shutdown(replies.INTERNAL_ERROR))
        await self._flush()

    def _deadline(self) -> tuple[float, str]:
        """When the read about to start must have returned, and what it waits for."""
        ctx, conn = self._ctx, self.conn
        now = self._loop_time()
        if not conn.in_transaction:
            self._content_started = None
        elif conn.receiving_content and self._content_started is None:
            self._content_started, self._content_bytes = now, 0
        content = self._content_started
        if content is not None and ctx.min_data_rate:
            # Between BDAT chunks too: many small chunks sent slowly must not get past.
            by_rate = content + ctx.data_grace + self._content_bytes / ctx.min_data_rate
        else:
            by_rate = float("inf")
        if conn.receiving_content:
            return min(now + ctx.data_timeout, by_rate), "message data"
        if self._answered:
            self._line_started, self._answered = now, False
        return min(self._line_started + ctx.command_timeout, by_rate), "a command line"

    def _set_deadline(self) -> str:
        """Set the deadline of the read about to start; what it waits for."""
        deadline, awaited = self._deadline()
        self._read_deadline = deadline
        timer = self._timer
        if timer is None or timer.when > deadline:
            deadlines = self._ctx.deadlines
            if timer is not None:
                deadlines.drop(timer)
            self._timer = deadlines.set(deadline, self)
        return awaited

    def _read_cut_short(self, awaited: str) -> bool:
        """The read was cancelled: by its deadline, or by the server's stop (the client
        is told so: True), or from outside (False: the cancellation goes on)."""
        task = asyncio.current_task()
        expired, self._expired = self._expired, False
        if not (expired or self._stopping) or task is None or task.uncancel() > 0:
            return False
        if expired:
            _log.info("timeout waiting for %s from %s; closing", awaited, self._ip)
            self._say_goodbye(replies.TIMEOUT)
        else:
            self._say_goodbye(replies.SHUTTING_DOWN)
        return True

    def on_deadline(self) -> None:
        """The deadline's moment came: cut the read if its deadline has passed, else wait
        on for the deadline it has now (later: commands came meanwhile). Outside a read
        it does nothing: the next read sets it again."""
        self._timer = None
        if not self._reading or self._task is None:
            return
        if self._loop_time() < self._read_deadline:
            self._timer = self._ctx.deadlines.set(self._read_deadline, self)
            return
        self._expired = True
        self._task.cancel()

    def _say_goodbye(self, reply: Reply) -> None:
        self._abort_transaction()
        with contextlib.suppress(Exception):
            self._stream.write(self.conn.shutdown(reply))

    async def _flush(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self._stream.drain()

    # -- events ----------------------------------------------------------------------
    async def _handle_events(self) -> bool:
        """Handle every complete event; False when the connection must end."""
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is ev.NEED_DATA:
                return True
            match event:
                case ev.MessageChunk(data=data):
                    self._content(data)
                    continue
                case ev.ConnectionClosed():
                    return False
                case ev.StartTls():
                    if not await self._start_tls():
                        return False
                    self._answered = True  # the next command's deadline starts now
                    continue
                case _:
                    reply = await self._reply_for(event)
                    if self._debug:
                        self._log_command(event, reply)
            self._stream.write(conn.send(reply))
            self._answered = True
            if conn.closed:
                return False

    def _content(self, data: bytes) -> None:
        if self._content_started is None:  # a chunk that came in one read
            self._content_started, self._content_bytes = self._loop_time(), 0
        if self._submission is not None:
            self._submission.write(data)

    def _log_command(self, event: ev.Event, reply: Reply) -> None:
        verb = _VERBS.get(type(event), type(event).__name__)
        if isinstance(event, ev.AuthCredentials):
            verb = f"AUTH {event.mechanism}"
        code = f"{reply.code} {reply.enhanced}" if reply.enhanced else str(reply.code)
        _log.debug("%s %s: %s -> %s", self._ip, self._ctx.role, verb, code)

    async def _reply_for(self, event: ev.Event) -> Reply:
        match event:
            case ev.MailFrom():
                return await self._mail(event)
            case ev.RcptTo():
                return await self._rcpt(event)
            case ev.Data():
                return replies.START_DATA
            case ev.MessageEnd():
                return await self._message_end(event)
            case ev.BdatChunkEnd():
                return self._chunk_end(event)
            case ev.AuthCredentials():
                return await self._auth(event)
            case ev.Rset() | ev.Helo() | ev.Ehlo():
                self._abort_transaction()
                return event.reply
            case (
                ev.InvalidCommand(reply=reply) | ev.AuthChallenge(reply=reply)
                | ev.Noop(reply=reply) | ev.Vrfy(reply=reply) | ev.Help(reply=reply)
                | ev.Quit(reply=reply)
            ):  # fmt: skip
                return reply
        raise AssertionError(f"unhandled event {event!r}")  # pragma: no cover

    def _chunk_end(self, event: ev.BdatChunkEnd) -> Reply:
        if event.problem is not None:
            self._finish(event.problem, "rejected")
            return event.problem
        return replies.OK.with_text(f"{event.size} octets received")

    @property
    def _auth_user(self) -> str | None:
        principal = self._principal
        return principal.name if principal and principal.kind is PrincipalKind.USER else None

    @property
    def _relay_network(self) -> str | None:
        network = self._network
        return network.name if network is not None and self._principal is network else None

    def _source(self) -> Source:
        conn = self.conn
        protocol = "ESMTP" if conn.esmtp else "SMTP"
        if conn.tls is not None:
            protocol += "S"
        if self._auth_user is not None:
            protocol += "A"
        tls = f"{conn.tls.version} with cipher {conn.tls.cipher}" if conn.tls else None
        return Source(
            kind=SourceKind.SMTP,
            principal=self._principal.name if self._principal else None,
            client_ip=self._ip,
            client_port=self._port,
            helo=conn.helo_name,
            protocol=protocol,
            tls=tls,
            listener=self._ctx.role,
        )

    async def _mail(self, event: ev.MailFrom) -> Reply:
        result = await self._ctx.intake.begin(
            self._source(),
            event.sender,
            principal=self._principal,
            dsn=event.dsn,
            body_type=event.body or "7BIT",
            smtputf8=event.smtputf8,
            declared_size=event.size,
        )
        if isinstance(result, Reply):
            if not result.is_positive:
                self._publish(str(event.sender or ""), (), 0, "rejected", result)
            return result
        self._submission = result
        return replies.SENDER_OK

    async def _rcpt(self, event: ev.RcptTo) -> Reply:
        if self._submission is None:  # the core's state table makes this unreachable
            return replies.BAD_SEQUENCE
        recipient = Recipient(event.recipient, event.notify, event.orcpt)
        reply = await self._submission.add_recipient(recipient)
        if not reply.is_positive:
            self._refused.append((str(event.recipient), str(reply)))
        return reply

    async def _message_end(self, event: ev.MessageEnd) -> Reply:
        if event.problem is not None:
            self._finish(event.problem, "rejected")
            return event.problem
        submission = self._submission
        if submission is None:
            return replies.BAD_SEQUENCE
        reply = await submission.commit()
        self._finish(reply, "queued" if reply.is_positive else "rejected")
        return reply

    def _finish(self, reply: Reply | None, result: str) -> None:
        """The transaction ended with ``reply`` (None: aborted before its end of data)."""
        submission, self._submission = self._submission, None
        if submission is None:
            return
        submission.abort()
        self._publish(
            str(submission.sender or ""),
            tuple(str(r.address) for r in submission.recipients),
            submission.size,
            result,
            reply,
            queue_id=submission.queue_id if result == "queued" else None,
        )

    def _publish(
        self,
        sender: str,
        recipients: tuple[str, ...],
        size: int,
        result: str,
        reply: Reply | None,
        *,
        queue_id: str | None = None,
    ) -> None:
        refused, self._refused = tuple(self._refused), []
        conn_tls = self.conn.tls
        self._ctx.bus.publish(
            SmtpTransaction(
                queue_id=queue_id,
                client_ip=self._ip,
                listener=self._ctx.role,
                auth_user=self._auth_user,
                relay_network=self._relay_network,
                sender=sender,
                recipients=recipients,
                size=size,
                tls=conn_tls.version if conn_tls else None,
                result=result,
                reply=None if reply is None else str(reply),
                refused=refused,
            )
        )

    def _abort_transaction(self) -> None:
        if self._submission is not None:
            self._finish(None, "aborted")

    async def _auth(self, event: ev.AuthCredentials) -> Reply:
        login = await self._ctx.logins.login(
            self._ip or "unknown",
            auth_account(event.username),
            event.username,
            event.password,
            authzid=event.authzid,
        )
        match login.verdict:
            case "unavailable":
                return replies.AUTH_TEMPORARY_FAILURE
            case "throttled":
                self._log_auth("throttled", event.username)
                return replies.AUTH_THROTTLED
            case "failed":
                self._log_auth("failed", event.username)
                return replies.AUTH_FAILED
        self._principal = login.who  # the core marks the connection authenticated on 235
        return replies.AUTH_OK

    def _log_auth(self, outcome: str, account: str) -> None:
        """One line per failure or refusal, for fail2ban (docs/configuration.md)."""
        log_auth(_log, outcome, self._ip, account, self._ctx.role)

    async def _start_tls(self) -> bool:
        context = self._ctx.ssl_context
        if context is None:  # the core offers STARTTLS only when a context exists
            self._stream.write(self.conn.send(replies.TLS_NOT_AVAILABLE))
            return True
        self._abort_transaction()
        self._stream.write(self.conn.send(replies.TLS_READY))
        # Plaintext that arrived after STARTTLS must never be read as if it came over TLS
        # (CVE-2011-0411 class): the core dropped what it had, the stream drops the rest.
        try:
            await self._stream.start_tls(context, handshake_timeout=self._ctx.command_timeout)
        except (ssl.SSLError, OSError) as exc:
            _log.info("TLS handshake with %s failed: %s", self._ip, exc)
            return False
        info = tls_info_of(self._stream)
        assert info is not None
        if self._debug:
            _log.debug(
                "%s %s: STARTTLS -> %s %s", self._ip, self._ctx.role, info.version, info.cipher
            )
        self._principal = self._network
        self.conn.start_tls(info)
        return True
