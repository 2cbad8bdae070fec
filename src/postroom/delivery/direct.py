"""Mail delivered by the process that accepted it: local mail into Maildir (Postfix's
virtual(8) without the trip through the queue manager) and, with
``delivery.relay_at_once``, mail for a relay or smarthost (an ``smtp`` mailer);
implements ``intake.handoff.Handoff``.

    intake: plan (route each recipient) -> enqueue, those recipients stored leased
            -> 250 -> start: mailers -> OutcomeRules (the scheduler's: state, backoff,
            DSNs) -> record_outcomes (next group commit) -> DeliveryAttempt events

The accepting process has the body in memory and the route in hand, so the message
needs no claim, no body read and no wake-up of the scheduler: one more transaction (the
outcome, batched with the commits of other sessions). Only what the mailers given here
can deliver is taken: recipients whose route names nothing but them, while fewer than
``delivery.max_concurrency`` such deliveries are in flight here. Anything else is the
scheduler's, as before.

Every outcome is settled by the scheduler's own rules (``delivery.settle``): a
delivery, a bounce with its DSN and its suppression, a deferral to the backoff's next
try, recorded with its attempt, so the email log shows the first attempt wherever it
was made and the scheduler makes the next one.

The guarantee: the recipients are stored leased (``delivery.lease``) in the commit that
makes the message durable, so the scheduler leaves them alone while this process works,
and takes them when the lease ends unsettled (the process died, or the outcome could not
be recorded). ``keep_leases()`` renews the leases of the deliveries in flight, as the
scheduler does for its own (a relay may take minutes to answer). A delivery starts only
with at least half the lease left. The window for a duplicate is the scheduler's own: a
message handed on whose outcome was not committed before the process died is delivered
again after the lease (Postfix has the same window between its delivery agents and the
queue file's removal).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from postroom.clock import Clock
from postroom.config.settings import DeliverySettings
from postroom.delivery.leases import keep_renewing, renew
from postroom.delivery.mailers import Mailer
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Outcome
from postroom.delivery.records import attempt_row, log_routes
from postroom.delivery.router import Route, Router, RouteTable
from postroom.delivery.rules import MessageView
from postroom.delivery.settle import OutcomeRules, Settled, first_attempt
from postroom.errors import StoreError
from postroom.events import Bus
from postroom.mail.events import MailEvent
from postroom.store import QueueStore
from postroom.store.models import Attempt, NewMessage, RecipientStatus, RecipientUpdate
from postroom.store.rows import notify_text

__all__ = ["DirectDelivery"]

_log = logging.getLogger("postroom.delivery")
_FIRST_PAUSE = 0.5  # after a store error recording an outcome; doubles while it lasts
_MAX_PAUSE = 8.0


@dataclass(slots=True)
class _Planned:
    """Implements ``intake.handoff.Planned``; ``lease_until`` moves as it is renewed."""

    owner: DirectDelivery
    message: OutboundMessage
    routes: Mapping[Route, Sequence[OutboundRecipient]]
    reasons: Mapping[str, str]  # why each recipient (by address) is on its route
    addresses: frozenset[str]
    lease_until: float

    def start(self) -> None:
        self.owner.start(self)


class _UntilLeaseEnds:
    """Store steps tried again after a pause (doubling) while the lease has room: past
    that the scheduler makes the attempt again (at least once), so give up rather than
    record an outcome beside its attempt. The first error is told to the scheduler: its
    own store calls then fail too, and it names the store's trouble on ``/readyz`` (an
    idle scheduler, all mail delivered at once, would not have looked)."""

    def __init__(
        self,
        message_id: str,
        clock: Clock,
        lease_until: Callable[[], float],
        pause: float,
        store_trouble: Callable[[], object],
    ) -> None:
        """``lease_until``: when the lease ends as last renewed."""
        self._message_id = message_id
        self._clock = clock
        self._lease_until = lease_until
        self._pause = pause
        self._store_trouble: Callable[[], object] | None = store_trouble

    async def wait(self, error: StoreError) -> None:
        """Pause before the next try, or raise ``error`` when the lease would end."""
        if self._store_trouble is not None:
            self._store_trouble()
            self._store_trouble = None
        pause = self._pause
        if self._clock.time() + pause >= self._lease_until():
            raise error
        _log.warning("delivering %s at once: %s (again in %g s)", self._message_id, error, pause)
        await asyncio.sleep(pause)
        self._pause = min(pause * 2, _MAX_PAUSE)


class DirectDelivery:
    def __init__(
        self,
        *,
        store: QueueStore,
        routes: Sequence[Route],
        mailers: Mapping[str, Mailer],
        rules: OutcomeRules,
        settings: DeliverySettings,
        clock: Clock,
        bus: Bus,
        wake: Callable[[], object],
        return_path: Callable[[str, str, bool | None], str] | None = None,
        store_pause: float = _FIRST_PAUSE,
        local_only: bool = False,
        store_trouble: Callable[[], object] | None = None,
    ) -> None:
        """``mailers``: the mailers this process delivers through (a route naming any
        other is left to the scheduler); ``rules``: the scheduler's rules for outcomes;
        ``wake``: tell the scheduler that recipients are due or have a new next try;
        ``store_pause``: the first wait after a store error recording an outcome;
        ``local_only``: the mailers deliver to local users alone (intake offers mail
        for no local user only when this is false); ``store_trouble``: told of a store
        error, as intake tells it (``Intake.store_trouble``; ``wake`` when None)."""
        self._store = store
        self._routes = tuple(routes)
        self._router = Router(mailers)
        self._mailers = frozenset(mailers)
        self._rules = rules
        self._settings = settings
        self._clock = clock
        self._bus = bus
        self._wake = wake
        self._store_trouble = store_trouble or wake
        self._return_path = return_path or (lambda sender, queue_id, verp: sender)
        self._store_pause = store_pause
        self.local_only = local_only
        self._in_flight: dict[asyncio.Task[None], _Planned] = {}
        self._stopping = False
        self._stopped = asyncio.Event()

    # -- intake's side ---------------------------------------------------------------
    def plan(
        self, message: NewMessage, data: bytes, local_domains: frozenset[str]
    ) -> _Planned | None:
        settings = self._settings
        if self._stopping or settings.paused or len(self._in_flight) >= settings.max_concurrency:
            return None
        outbound = _outbound(message, data)
        rejected = {address for address, _ in message.rejected}
        table = RouteTable(self._routes, local_domains.__contains__)
        view: MessageView | None = None
        routes: dict[Route, list[OutboundRecipient]] = defaultdict(list)
        reasons: dict[str, str] = {}
        for rcpt in message.envelope.recipients:
            address = str(rcpt.address)
            if address in rejected:
                continue
            view = MessageView(outbound, address) if view is None else view.for_recipient(address)
            choice = table.decide(view)
            if self._mailers.issuperset(choice.route.mailers):
                notify = notify_text(rcpt.notify)
                routes[choice.route].append(OutboundRecipient(address, notify, rcpt.orcpt))
                reasons[address] = choice.reason
        if not routes:
            return None
        addresses = frozenset(r.address for rcpts in routes.values() for r in rcpts)
        until = self._clock.time() + settings.lease
        return _Planned(self, outbound, dict(routes), reasons, addresses, until)

    def start(self, planned: _Planned) -> None:
        task = asyncio.create_task(self._deliver(planned))
        self._in_flight[task] = planned
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)

    @property
    def in_flight(self) -> int:
        """Messages being delivered here now."""
        return len(self._in_flight)

    async def keep_leases(self) -> None:
        """Until ``stop()``: renew the leases of the deliveries in flight, every third
        of ``delivery.lease`` (``renew_leases()`` is one round)."""
        await keep_renewing(self._settings.lease, self._stopped, self.renew_leases)

    async def renew_leases(self) -> int:
        """Extend the lease of every recipient still being delivered here; the number
        renewed. A store error is logged: the next round tries again."""
        leases = {p.message.id: p.addresses for p in list(self._in_flight.values())}
        until = self._clock.time() + self._settings.lease
        try:
            renewed = await renew(self._store, leases, self._clock, self._settings.lease)
        except StoreError:
            self._store_trouble()  # the scheduler looks, and names the store's trouble
            return 0
        for planned in self._in_flight.values():  # those not finished meanwhile
            if planned.message.id in leases:
                planned.lease_until = until
        return renewed

    async def stop(self, grace: float) -> None:
        """Take no more; let deliveries in flight finish within ``grace`` seconds. What
        is cut off keeps its lease: the scheduler takes it when the lease ends."""
        self._stopping = True
        self._stopped.set()
        tasks = list(self._in_flight)
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- one message -----------------------------------------------------------------
    async def _deliver(self, planned: _Planned) -> None:
        message = planned.message
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("delivering %s at once: %d recipient(s)", message.id, len(planned.addresses))
            routes = {r: [a.address for a in rcpts] for r, rcpts in planned.routes.items()}
            log_routes(_log, message.id, routes)
        try:
            if self._clock.time() > planned.lease_until - self._settings.lease / 2:
                # Started late (an overloaded host): the lease might end mid-delivery.
                await self._release(message.id, planned.addresses)
                return
            started = self._clock.time()
            settled: list[Settled] = []
            tried: list[Outcome] = []
            for route, recipients in planned.routes.items():
                sender = self._return_path(message.sender, message.id, route.verp)
                result = await self._router.deliver(
                    route, replace(message, sender=sender), recipients, planned.reasons
                )
                tried.extend(result.attempts)
                finals = {o.recipient: o for o in result.final}
                settled.extend(
                    self._rules.settle(
                        message.received_at,
                        first_attempt(r.address, r.notify, r.orcpt),
                        finals[r.address],
                    )
                    for r in recipients
                )
            await self._settle(planned, started, settled, tried)
        except asyncio.CancelledError:
            raise
        except StoreError as exc:  # the lease stays: the scheduler tries them when it ends
            _log.error("could not record the delivery of %s: %s", message.id, exc)
        except Exception:  # the lease stays, as above
            _log.exception("delivery of %s at once failed", message.id)

    async def _settle(
        self,
        planned: _Planned,
        started: float,
        settled: Sequence[Settled],
        tried: Sequence[Outcome],
    ) -> None:
        """As the scheduler concludes an attempt (``OutcomeRules.conclude``). A store
        error is tried again while the lease has room, and raised after."""
        message = planned.message
        retry = _UntilLeaseEnds(
            message.id,
            self._clock,
            lambda: planned.lease_until,
            self._store_pause,
            self._store_trouble,
        )
        attempts = [attempt_row(message.id, started, o) for o in tried]

        async def record(
            updates: Sequence[RecipientUpdate],
            rows: Sequence[Attempt],
            events: Sequence[MailEvent],
        ) -> None:
            while True:
                try:
                    return await self._store.record_outcomes(message.id, updates, rows, events)
                except StoreError as exc:
                    await retry.wait(exc)

        await self._rules.conclude(
            message, started, settled, attempts, wait=retry.wait, record=record
        )
        if any(s.update.status is RecipientStatus.DEFERRED for s in settled):
            self._wake()  # the scheduler makes the next try: it may be due before it looks

    async def _release(self, message_id: str, addresses: frozenset[str]) -> None:
        """Hand recipients back to the scheduler now (else when their lease ends)."""
        with contextlib.suppress(StoreError):
            await self._store.release(message_id, sorted(addresses))
        self._wake()


def _outbound(message: NewMessage, data: bytes) -> OutboundMessage:
    """The message as a mailer gets it, as the scheduler would read it from the store."""
    envelope, source = message.envelope, message.source
    return OutboundMessage(
        id=message.id,
        sender=str(envelope.sender) if envelope.sender is not None else "",
        data=data,
        smtputf8=envelope.smtputf8,
        body_type=envelope.body,
        ret=None if envelope.dsn.ret is None else envelope.dsn.ret.value,
        envid=envelope.dsn.envid,
        principal=source.principal,
        source_kind=source.kind.value,
        received_at=message.received_at,
    )
