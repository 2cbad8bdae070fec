"""One outbound SMTP transaction, and the one table that judges its results.

``SmtpClient.deliver(peer, message, recipients)`` takes a pooled connection or opens one
(``connect``: connect, greeting, EHLO, STARTTLS, AUTH), then sends MAIL FROM with
SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531) and the DSN parameters (RFC 3461)
the peer supports, one RCPT per recipient, DATA, and the dot-stuffed message. It returns
one ``Outcome`` per recipient.

When the peer offers PIPELINING (RFC 2920), MAIL, every RCPT and DATA go out in one
write, with RSET in front on a reused connection, and the replies are read in order:
two round trips per message. Without it, one command at a time, and a reused connection
is first probed with RSET. A reused connection that turns out closed before its first
reply (or answers RSET with anything but 250) is dropped and the message tried on
another: nothing was sent that could have been delivered.

Every failure becomes a (stage, fault) pair and ``CLASSIFICATION`` below says what it
means, as Postfix's smtp_trouble.c does: deliver, defer or bounce; one recipient or all
that are left; whether another mailer may do better (``failover``); whether the ``mx``
mailer should try the next host (``next_host``). Recipients settled by such a fault are
listed in ``Transaction.retry`` when another host may still take them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from postroom.clock import Clock
from postroom.config.mailers import MxMailerSettings, SmtpMailerSettings
from postroom.delivery.mailers.mta.connect import (
    Connection,
    Connector,
    Failure,
    Fault,
    Peer,
    Stage,
    TlsMode,
    guard,
    reply_failure,
)
from postroom.delivery.mailers.mta.params import local_refusal, mail_parameters, rcpt_parameters
from postroom.delivery.mailers.mta.pool import ConnectionPool
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Disposition, Outcome, RemoteInfo
from postroom.smtp import client as smtp
from postroom.smtp.client import ReplyError, reply_from_lines
from postroom.smtp.replies import Reply

__all__ = [
    "CLASSIFICATION",
    "Connection",
    "Fault",
    "Peer",
    "Rule",
    "Scope",
    "SmtpClient",
    "Stage",
    "TlsMode",
    "Transaction",
    "classify",
    "mail_parameters",
    "parse_reply",
    "pooled_client",
    "rcpt_parameters",
]

DELIVERED, DEFERRED, BOUNCED = Disposition.DELIVERED, Disposition.DEFERRED, Disposition.BOUNCED


class Scope(StrEnum):
    RECIPIENT = "recipient"  # the one recipient the reply was about
    ALL = "all"  # every recipient not settled yet


@dataclass(frozen=True, slots=True)
class Rule:
    disposition: Disposition
    scope: Scope
    failover: bool  # another mailer in the chain could succeed
    next_host: bool  # mx: another address or MX host could succeed
    ours: tuple[int, str] | None = None  # (code, enhanced) of our own reply; None: the remote's


ONE, ALL = Scope.RECIPIENT, Scope.ALL
# (stage, fault) first, then (None, fault) for any stage. Columns: disposition, scope,
# failover, next_host, our own (code, enhanced) or None for the remote's reply.
CLASSIFICATION: Final[Mapping[tuple[Stage | None, Fault], Rule]] = MappingProxyType(
    {
        (Stage.RCPT, Fault.PERMANENT): Rule(BOUNCED, ONE, False, False),
        (Stage.RCPT, Fault.TRANSIENT): Rule(DEFERRED, ONE, True, False),
        (Stage.MAIL, Fault.PERMANENT): Rule(BOUNCED, ALL, False, False),
        (Stage.DATA, Fault.PERMANENT): Rule(BOUNCED, ALL, False, False),
        # A 5xx greeting or EHLO says "not from you", not "no such mailbox": skip the host
        # (Postfix smtp_skip_5xx_greeting) and defer when it was the last one.
        (Stage.GREETING, Fault.PERMANENT): Rule(DEFERRED, ALL, True, True, (451, "4.4.0")),
        (Stage.HELO, Fault.PERMANENT): Rule(DEFERRED, ALL, True, True, (451, "4.4.0")),
        # A refused login at a relay is the operator's problem: defer, never bounce.
        (Stage.AUTH, Fault.PERMANENT): Rule(DEFERRED, ALL, True, True, (454, "4.7.0")),
        (Stage.CONNECT, Fault.TIMEOUT): Rule(DEFERRED, ALL, True, True, (451, "4.4.1")),
        (None, Fault.PERMANENT): Rule(BOUNCED, ALL, False, False),
        (None, Fault.TRANSIENT): Rule(DEFERRED, ALL, True, True),
        (None, Fault.NO_CONNECTION): Rule(DEFERRED, ALL, True, True, (451, "4.4.1")),
        (None, Fault.TIMEOUT): Rule(DEFERRED, ALL, True, True, (451, "4.4.2")),
        (None, Fault.LOST): Rule(DEFERRED, ALL, True, True, (451, "4.4.2")),
        (None, Fault.TLS): Rule(DEFERRED, ALL, True, True, (454, "4.7.5")),
        (None, Fault.LOCAL): Rule(BOUNCED, ALL, False, False),
    }
)


# After these the session can carry another transaction (after RSET).
_SESSION_INTACT: Final = frozenset({Fault.TRANSIENT, Fault.PERMANENT, Fault.LOCAL})


def classify(stage: Stage, fault: Fault) -> Rule:
    return CLASSIFICATION.get((stage, fault)) or CLASSIFICATION[(None, fault)]


def parse_reply(code: int, message: str) -> Reply:
    """(code, text with lines joined by LF) -> Reply, as the reply parser makes it."""
    return reply_from_lines(code, message.split("\n") if message else [""])


@dataclass(frozen=True, slots=True)
class Transaction:
    outcomes: tuple[Outcome, ...]  # one per recipient, in the order given
    retry: frozenset[str] = frozenset()  # deferred, but another host may take them now


_DELIVERED: Final = Rule(DELIVERED, ALL, False, False)
_ACCEPTED: Final = frozenset({250, 251})  # RFC 5321 4.2.2: 251 "will forward"


class _Stale(Exception):
    """A pooled connection that was closed, or refused RSET, before any reply mattered."""


class _Ledger:
    """The outcomes of one ``deliver`` call, as they are settled."""

    def __init__(self, clock: Clock, remote: RemoteInfo) -> None:
        self.clock, self.remote, self.started = clock, remote, clock.monotonic()
        self.settled: dict[str, Outcome] = {}
        self.retry: set[str] = set()

    def settle(self, recipients: Sequence[OutboundRecipient], rule: Rule, reply: Reply) -> None:
        duration = self.clock.monotonic() - self.started
        for r in recipients:
            self.settled[r.address] = Outcome(
                r.address, rule.disposition, reply, self.remote, rule.failover, duration
            )

    def refuse(self, recipient: OutboundRecipient, reply: Reply, where: str) -> None:
        """A RCPT reply other than 250/251: this recipient alone is settled."""
        failure = reply_failure(Stage.RCPT, reply, where)
        assert failure.remote is not None
        self.settle([recipient], classify(Stage.RCPT, failure.fault), failure.remote)

    def transaction(self, recipients: Sequence[OutboundRecipient]) -> Transaction:
        outcomes = tuple(self.settled[r.address] for r in recipients)
        return Transaction(outcomes, frozenset(self.retry))


@dataclass(slots=True)
class _Envelope:
    """The command lines of one transaction, and who each RCPT is for."""

    mail: bytes
    rcpts: list[tuple[OutboundRecipient, bytes]]


def pooled_client(
    settings: MxMailerSettings | SmtpMailerSettings,
    *,
    hostname: str,
    clock: Clock,
    max_per_destination: int,
) -> tuple[ConnectionPool[Connection], SmtpClient]:
    """A mailer's connection pool and the client that uses it, from its settings."""
    pool: ConnectionPool[Connection] = ConnectionPool(
        clock=clock,
        max_per_destination=max_per_destination,
        max_total=settings.max_connections,
        max_uses=settings.max_messages_per_connection,
        idle_timeout=settings.idle_timeout,
    )
    client = SmtpClient(
        mailer=settings.name,
        hostname=hostname,
        clock=clock,
        pool=pool,
        connect_timeout=settings.connect_timeout,
        command_timeout=settings.timeout,
    )
    return pool, client


class SmtpClient:
    def __init__(
        self,
        *,
        mailer: str,
        hostname: str,
        clock: Clock,
        pool: ConnectionPool[Connection],
        connect_timeout: float,
        command_timeout: float,
    ) -> None:
        self._mailer, self._clock, self._pool = mailer, clock, pool
        self._connector = Connector(
            mailer=mailer,
            hostname=hostname,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
        )

    async def deliver(
        self, peer: Peer, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> Transaction:
        """Never raises for delivery trouble: every recipient gets an ``Outcome``."""
        ledger = _Ledger(self._clock, RemoteInfo(self._mailer, peer.host, peer.address, peer.port))
        connection: Connection | None = None
        try:
            while True:
                connection = self._pool.take(peer.key)
                reused = connection is not None
                if connection is None:
                    connection = await self._connector.open(peer)
                ledger.remote = connection.remote
                try:
                    await self._transact(connection, message, recipients, ledger, reused)
                    break
                except _Stale:
                    connection.wire.abort()
                    connection = None
        except Failure as failure:
            rule = classify(failure.stage, failure.fault)
            reply = failure.remote if rule.ours is None else Reply(*rule.ours, failure.text)
            assert reply is not None
            left = [r for r in recipients if r.address not in ledger.settled]
            ledger.settle(left, rule, reply)
            if rule.next_host:
                ledger.retry.update(r.address for r in left)
            if connection is not None and failure.fault not in _SESSION_INTACT:
                connection.wire.abort()
        except BaseException:
            if connection is not None:
                connection.wire.abort()  # cancelled mid-transaction: the session is unusable
            raise
        if connection is not None:
            self._pool.give(peer.key, connection)
        return ledger.transaction(recipients)

    # -- one transaction -----------------------------------------------------------------
    async def _transact(
        self,
        connection: Connection,
        message: OutboundMessage,
        recipients: Sequence[OutboundRecipient],
        ledger: _Ledger,
        reused: bool,
    ) -> None:
        where, extensions = connection.peer.where, connection.capabilities.extensions
        if (refusal := local_refusal(message, extensions, where)) is not None:
            raise Failure(Stage.MAIL, Fault.LOCAL, str(refusal), refusal)
        envelope = self._envelope(message, recipients, extensions, ledger)
        connection.uses += 1
        if connection.capabilities.pipelining:
            accepted = await self._pipelined(connection, envelope, ledger, reused)
        else:
            accepted = await self._lockstep(connection, envelope, ledger, reused)
        if not accepted:
            return  # the next user of this connection sends RSET first
        with guard(Stage.DATA, where):
            await connection.wire.send(smtp.message_data(message.data))
        final = await self._read(connection, Stage.DATA)
        if final.code != 250:
            raise reply_failure(Stage.DATA, final, where)
        ledger.settle(accepted, _DELIVERED, final)

    def _envelope(
        self,
        message: OutboundMessage,
        recipients: Sequence[OutboundRecipient],
        extensions: Mapping[str, str],
        ledger: _Ledger,
    ) -> _Envelope:
        try:
            mail = smtp.mail_from(message.sender, mail_parameters(message, extensions))
        except ValueError:
            text = "Bad sender address syntax"
            raise Failure(Stage.MAIL, Fault.LOCAL, text, Reply(553, "5.1.7", text)) from None
        rcpts = []
        for recipient in recipients:
            try:
                line = smtp.rcpt_to(recipient.address, rcpt_parameters(recipient, extensions))
            except ValueError:
                reply = Reply(553, "5.1.3", "Bad recipient address syntax")
                ledger.settle([recipient], classify(Stage.RCPT, Fault.PERMANENT), reply)
                continue
            rcpts.append((recipient, line))
        return _Envelope(mail, rcpts)

    async def _pipelined(
        self, connection: Connection, envelope: _Envelope, ledger: _Ledger, reused: bool
    ) -> list[OutboundRecipient]:
        """RFC 2920 3.1: [RSET] MAIL RCPT... DATA in one write, DATA last; then every
        reply in order, each one checked."""
        wire, where = connection.wire, connection.peer.where
        batch = [envelope.mail, *(line for _, line in envelope.rcpts), smtp.DATA]
        if reused:
            try:
                wire.write(b"".join([smtp.RSET, *batch]))
            except OSError:
                raise _Stale from None
            await self._probed(connection)
        else:
            with guard(Stage.MAIL, where):
                wire.write(b"".join(batch))
        mail = await self._read(connection, Stage.MAIL)
        if mail.code != 250:
            await self._skip(connection, len(envelope.rcpts) + 1)
            raise reply_failure(Stage.MAIL, mail, where)
        accepted = []
        for recipient, _ in envelope.rcpts:
            reply = await self._read(connection, Stage.RCPT)
            if reply.code in _ACCEPTED:
                accepted.append(recipient)
            else:
                ledger.refuse(recipient, reply, where)
        data = await self._read(connection, Stage.DATA)
        if not accepted:
            if data.code == 354:
                await self._empty_data(connection)
            return []
        if data.code != 354:
            raise reply_failure(Stage.DATA, data, where)
        return accepted

    async def _lockstep(
        self, connection: Connection, envelope: _Envelope, ledger: _Ledger, reused: bool
    ) -> list[OutboundRecipient]:
        """No PIPELINING: one command, one reply."""
        where = connection.peer.where
        if reused:
            try:
                connection.wire.write(smtp.RSET)
            except OSError:
                raise _Stale from None
            await self._probed(connection)
        mail = await self._command(connection, Stage.MAIL, envelope.mail)
        if mail.code != 250:
            raise reply_failure(Stage.MAIL, mail, where)
        accepted = []
        for recipient, line in envelope.rcpts:
            reply = await self._command(connection, Stage.RCPT, line)
            if reply.code in _ACCEPTED:
                accepted.append(recipient)
            else:
                ledger.refuse(recipient, reply, where)
        if not accepted:
            return []
        data = await self._command(connection, Stage.DATA, smtp.DATA)
        if data.code != 354:
            raise reply_failure(Stage.DATA, data, where)
        return accepted

    async def _probed(self, connection: Connection) -> None:
        """The reply to the RSET sent first on a reused connection: 250, or it is stale."""
        try:
            reply = await connection.wire.read_reply()
        except (OSError, ReplyError):
            raise _Stale from None
        if reply.code != 250:
            raise _Stale

    async def _read(self, connection: Connection, stage: Stage) -> Reply:
        with guard(stage, connection.peer.where):
            return await connection.wire.read_reply()

    async def _command(self, connection: Connection, stage: Stage, line: bytes) -> Reply:
        with guard(stage, connection.peer.where):
            connection.wire.write(line)
            return await connection.wire.read_reply()

    async def _skip(self, connection: Connection, count: int) -> None:
        """Read and forget the replies to the rest of a failed batch (the last is DATA's);
        a session that cannot be brought back to a known state is closed."""
        try:
            for _ in range(count - 1):
                await connection.wire.read_reply()
            if (await connection.wire.read_reply()).code == 354:
                await self._empty_data(connection)
        except (OSError, ReplyError, Failure):
            connection.wire.abort()

    async def _empty_data(self, connection: Connection) -> None:
        """RFC 2920 3.1: DATA was accepted, but there is nobody to send the message to:
        end the data at once ("a single dot"); the server refuses or ignores it."""
        await self._command(connection, Stage.DATA, smtp.END_OF_DATA)
