"""One outbound SMTP transaction: a pooled session or a new one, and outcomes from events.

``SmtpClient.deliver(peer, message, recipients)`` takes a pooled connection or opens one
(``connect``), hands the message to the client core (``ClientConnection``), and
turns what the core concludes into one ``Outcome`` per recipient. The core decides what
to send (MAIL FROM with SIZE, BODY, SMTPUTF8 and the DSN parameters the peer supports,
one RCPT per recipient, DATA, pipelined when offered, RSET first on a reused session) and
what each reply means, with the table in ``postroom.smtp.trouble`` (re-exported here).

A reused connection that turns out closed before its first reply (or answers RSET with
anything but 250) is dropped and the message tried on another: nothing was sent that
could have been delivered. Recipients settled by a fault that another host may not share
are listed in ``Transaction.retry``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
)
from postroom.delivery.mailers.mta.pool import ConnectionPool
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Disposition, Outcome, RemoteInfo
from postroom.delivery.slots import SharedSlots
from postroom.smtp.client import mail_parameters, rcpt_parameters, reply_from_lines
from postroom.smtp.clientconnection import Failed, MessageDone, RecipientRefused, Stale
from postroom.smtp.replies import Reply
from postroom.smtp.trouble import CLASSIFICATION, Rule, Scope, classify

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
    "disposition",
    "mail_parameters",
    "parse_reply",
    "pooled_client",
    "rcpt_parameters",
]

_DELIVERED: Final = Disposition.DELIVERED


def disposition(rule: Rule) -> Disposition:
    return Disposition.BOUNCED if rule.bounce else Disposition.DEFERRED


def parse_reply(code: int, message: str) -> Reply:
    """(code, text with lines joined by LF) -> Reply, as the reply parser makes it."""
    return reply_from_lines(code, message.split("\n") if message else [""])


@dataclass(frozen=True, slots=True)
class Transaction:
    outcomes: tuple[Outcome, ...]  # one per recipient, in the order given
    retry: frozenset[str] = frozenset()  # deferred, but another host may take them now


class _Stale(Exception):
    """A pooled connection that was closed, or refused RSET, before any reply mattered."""


class _Ledger:
    """The outcomes of one ``deliver`` call, as they are settled."""

    def __init__(self, clock: Clock, remote: RemoteInfo) -> None:
        self.clock, self.remote, self.started = clock, remote, clock.monotonic()
        self.settled: dict[str, Outcome] = {}
        self.retry: set[str] = set()

    def settle(
        self,
        recipients: Sequence[OutboundRecipient],
        outcome: Disposition,
        failover: bool,
        reply: Reply,
    ) -> None:
        duration = self.clock.monotonic() - self.started
        for r in recipients:
            self.settled[r.address] = Outcome(
                r.address, outcome, reply, self.remote, failover, duration
            )

    def fail(self, recipients: Sequence[OutboundRecipient], failure: Failure) -> None:
        rule = failure.rule
        self.settle(recipients, disposition(rule), rule.failover, failure.reply)

    def transaction(self, recipients: Sequence[OutboundRecipient]) -> Transaction:
        outcomes = tuple(self.settled[r.address] for r in recipients)
        return Transaction(outcomes, frozenset(self.retry))


def pooled_client(
    settings: MxMailerSettings | SmtpMailerSettings,
    *,
    hostname: str,
    clock: Clock,
    max_per_destination: int,
    slots: SharedSlots | None = None,
) -> tuple[ConnectionPool[Connection], SmtpClient]:
    """A mailer's connection pool and the client that uses it, from its settings;
    ``slots``: the destinations' limits hold for every node on the store."""
    pool: ConnectionPool[Connection] = ConnectionPool(
        clock=clock,
        slots=slots,
        mailer=settings.name,
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
        chunking=settings.chunking,
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
        chunking: bool,
    ) -> None:
        self._mailer, self._clock, self._pool = mailer, clock, pool
        self._connector = Connector(
            mailer=mailer,
            hostname=hostname,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            chunking=chunking,
        )

    async def deliver(
        self,
        peer: Peer,
        message: OutboundMessage,
        recipients: Sequence[OutboundRecipient],
        destination: str | None = None,
    ) -> Transaction:
        """Never raises for delivery trouble: every recipient gets an ``Outcome``.
        ``destination``: what the connection counts against (the domain; the peer when
        not given)."""
        ledger = _Ledger(self._clock, RemoteInfo(self._mailer, peer.host, peer.address, peer.port))
        pool, where = self._pool, destination or peer.where
        key = pool.key(where, peer.key)
        connection: Connection | None = None
        try:
            while True:
                connection = pool.take(key)
                if connection is None:
                    connection = await pool.connect(where, lambda: self._connector.open(peer), key)
                ledger.remote = connection.remote
                try:
                    await self._transact(connection, message, recipients, ledger)
                    break
                except _Stale:
                    pool.drop(connection)
                    connection = None
        except Failure as failure:
            left = [r for r in recipients if r.address not in ledger.settled]
            ledger.fail(left, failure)
            if failure.rule.next_host:
                ledger.retry.update(r.address for r in left)
            if connection is not None and not connection.core.usable:
                pool.drop(connection)
                connection = None
        except BaseException:
            if connection is not None:
                pool.drop(connection)  # cancelled mid-transaction: the session is unusable
            raise
        if connection is not None:
            pool.give(key, connection)
        return ledger.transaction(recipients)

    # -- one transaction -----------------------------------------------------------------
    async def _transact(
        self,
        connection: Connection,
        message: OutboundMessage,
        recipients: Sequence[OutboundRecipient],
        ledger: _Ledger,
    ) -> None:
        connection.uses += 1
        connection.core.send_message(message, recipients)
        while True:
            event = await connection.next_event()
            if isinstance(event, RecipientRefused):
                ledger.fail([recipients[event.index]], event.failure)
            elif isinstance(event, MessageDone):
                if event.reply is not None:
                    delivered = [recipients[i] for i in event.delivered]
                    ledger.settle(delivered, _DELIVERED, False, event.reply)
                return  # with nobody accepted, the next user of the session sends RSET first
            elif isinstance(event, Failed):
                raise event.failure
            elif isinstance(event, Stale):
                raise _Stale
            else:  # Closed: the core reports a failure before that, but never hang on it
                where = connection.peer.where
                text = f"lost connection with {where} while {Stage.DATA}"
                raise Failure(Stage.DATA, Fault.LOST, text)
