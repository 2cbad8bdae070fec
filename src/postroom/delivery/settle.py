"""What an attempt's outcomes become, the same whoever made the attempt (the scheduler,
or the accepting process delivering at once): one set of rules for every outcome.

  final outcome per recipient -> settle: delivered | bounced | expired | deferred to
  the backoff's next try (or the mailer's retry hint), with a delay warning when due
  -> DSNs the sender asked for, queued through intake (before the outcome is recorded,
     so a crash in between repeats a DSN rather than losing it)
  -> the outcome events, recorded with the outcomes (the caller's store step)
  -> (after the commit) DeliveryAttempt published, hard bounces on the suppression list.
``conclude`` runs these steps in that order for both paths.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass

from postroom.clock import Clock
from postroom.config.settings import DeliverySettings
from postroom.delivery import backoff
from postroom.delivery.dsn import ACTIONS, DsnKind, DsnRecipient, build_dsn, wants_dsn
from postroom.delivery.message import OutboundMessage
from postroom.delivery.outcome import Disposition, Outcome
from postroom.delivery.outcome_events import is_hard_bounce, outcome_event, suppression_of
from postroom.delivery.records import publish_attempts
from postroom.errors import StoreError, StoreUnavailable
from postroom.events import Bus
from postroom.intake import Intake, Queued
from postroom.intake.principals import POSTROOM
from postroom.mail.address import parse_address
from postroom.mail.envelope import Recipient, Source, SourceKind
from postroom.mail.events import MailEvent
from postroom.mailauth.dkimsummary import signature_summary
from postroom.store.base import SuppressionStore
from postroom.store.models import Attempt, RecipientState, RecipientStatus, RecipientUpdate

__all__ = ["OutcomeRules", "Record", "Settled", "StoreWait", "first_attempt"]

_log = logging.getLogger("postroom.delivery")
_DSN_PRINCIPAL = POSTROOM  # DSNs may go to any domain, from postroom itself

# The store is away while a DSN is queued: wait before trying again, or raise the error
# to give up (the lease stays, and the attempt is made again when it ends).
StoreWait = Callable[[StoreError], Awaitable[None]]
# The outcomes, their attempts and their events, in one durable transaction (with the
# caller's way of waiting out a store error).
Record = Callable[
    [Sequence[RecipientUpdate], Sequence[Attempt], Sequence[MailEvent]], Awaitable[None]
]


@dataclass(frozen=True, slots=True)
class Settled:
    """The outcome of one recipient after a whole attempt (all mailers of its chain)."""

    state: RecipientState
    final: Outcome
    update: RecipientUpdate


def first_attempt(address: str, notify: str | None, orcpt: str | None) -> RecipientState:
    """A recipient as it stands before its first attempt."""
    return RecipientState(address, RecipientStatus.QUEUED, notify, orcpt, 0, None, None)


class OutcomeRules:
    def __init__(
        self,
        *,
        suppressions: SuppressionStore,
        intake: Intake,
        settings: DeliverySettings,
        hostname: str,
        clock: Clock,
        rng: random.Random,
        bus: Bus,
        relays: Collection[str] = frozenset(),
    ) -> None:
        """``relays``: the mailers that hand mail on to another server (smarthosts,
        provider APIs): a delivery through one is the event ``sent``, not ``delivered``."""
        self._bus = bus
        self._suppressions = suppressions
        self._intake = intake
        self._settings = settings
        self._hostname = hostname
        self._clock = clock
        self._rng = rng
        self._relays = relays

    def settle(self, received_at: float, state: RecipientState, final: Outcome) -> Settled:
        now = self._clock.time()
        status: RecipientStatus
        next_at: float | None = None
        warned = state.delay_warned
        if final.disposition is Disposition.DELIVERED:
            status = RecipientStatus.DELIVERED
        elif final.disposition is Disposition.BOUNCED:
            status = RecipientStatus.BOUNCED
        elif backoff.is_expired(received_at, now, self._settings):
            status = RecipientStatus.EXPIRED
        else:
            status = RecipientStatus.DEFERRED
            next_at = backoff.next_attempt(state.attempts + 1, now, self._settings, self._rng)
            if final.retry_at is not None:  # the mailer knows better: a limit's window, a 429 hint
                next_at = max(now, final.retry_at)
            if backoff.delay_warning_due(received_at, now, warned, self._settings):
                warned = True
        update = RecipientUpdate(state.address, status, next_at, str(final.reply), warned)
        return Settled(state, final, update)

    async def conclude(
        self,
        message: OutboundMessage,
        started: float,
        settled: Sequence[Settled],
        attempts: Sequence[Attempt],
        *,
        wait: StoreWait,
        record: Record,
    ) -> None:
        """After an attempt (begun at ``started``): its DSNs, then ``record`` of the
        outcomes with every attempt and their events, then the attempts' events and
        the hard bounces on the suppression list."""
        await self.send_dsns(message, settled, wait)
        events = [
            outcome_event(message.id, s.update.status, s.final, started, self._relays)
            for s in settled
        ]
        await record([s.update for s in settled], attempts, events)
        status = {s.state.address: s.update.status.value for s in settled}
        dkim = signature_summary(message.data)
        publish_attempts(self._bus, message.id, status, attempts, dkim)
        await self.suppress_hard_bounces(message.id, settled)

    async def send_dsns(
        self, original: OutboundMessage, settled: Sequence[Settled], wait: StoreWait
    ) -> None:
        """The DSNs the recipients' NOTIFY asks for (RFC 3461), one per kind."""
        kinds: dict[DsnKind, list[Settled]] = {
            "failure": [
                s
                for s in settled
                if s.update.status in (RecipientStatus.BOUNCED, RecipientStatus.EXPIRED)
            ],
            "delay": [s for s in settled if s.update.delay_warned and not s.state.delay_warned],
            "success": [s for s in settled if s.update.status is RecipientStatus.DELIVERED],
        }
        for kind, group in kinds.items():
            wanted = [s for s in group if wants_dsn(kind, s.state.notify, original.sender)]
            if wanted:
                await self._send_dsn(kind, original, wanted, wait)

    async def _send_dsn(
        self,
        kind: DsnKind,
        original: OutboundMessage,
        settled: Sequence[Settled],
        wait: StoreWait,
    ) -> None:
        now = self._clock.time()
        retry_until = original.received_at + self._settings.lifetime
        recipients = [_dsn_recipient(kind, s, now, retry_until) for s in settled]
        report = build_dsn(
            kind=kind,
            original=original,
            original_data=original.data,
            recipients=recipients,
            reporting_mta=self._hostname,
            now=now,
            postmaster=f"postmaster@{self._hostname}",
        )
        while True:
            result = await self._intake.submit(
                Source(kind=SourceKind.DSN, protocol="local", dsn_of=original.id),
                None,
                [Recipient(parse_address(original.sender))],
                report,
                principal=_DSN_PRINCIPAL,
                body_type="7BIT" if report.isascii() else "8BITMIME",
                smtputf8=original.smtputf8 or not original.sender.isascii(),
            )
            if isinstance(result, Queued):
                return
            if not 400 <= result.code < 500:
                break
            # The store is away. The outcome is recorded only after the DSN is queued.
            await wait(StoreUnavailable(f"queueing a DSN for {original.id}: {result}"))
        _log.warning("could not queue a %s DSN for %s: %s", kind, original.id, result)

    async def suppress_hard_bounces(self, message_id: str, settled: Sequence[Settled]) -> None:
        """Hard bounces go on the suppression list (after the outcome's commit: should
        this fail, the bounce and its event are recorded all the same)."""
        now = self._clock.time()
        for s in settled:
            if not is_hard_bounce(s.update.status, s.final):
                continue
            try:
                await self._suppressions.add_suppression(suppression_of(message_id, s.final, now))
            except StoreError as exc:
                _log.warning("could not suppress %s after its bounce: %s", s.state.address, exc)


def _dsn_recipient(kind: DsnKind, settled: Settled, now: float, retry_until: float) -> DsnRecipient:
    reply = settled.final.reply
    status = reply.enhanced or ("2.0.0" if reply.is_positive else "5.0.0")
    if settled.update.status is RecipientStatus.EXPIRED and status.startswith("4"):
        status = "4.4.7"  # RFC 3463: delivery time expired
    remote = settled.final.remote
    return DsnRecipient(
        address=settled.state.address,
        action=ACTIONS[kind],
        status=status,
        diagnostic=reply,
        remote_mta=remote.host if remote is not None else None,
        last_attempt=now,
        orcpt=settled.state.orcpt,
        will_retry_until=retry_until if kind == "delay" else None,
    )
