"""Local mail delivered by the process that accepted it (Postfix's virtual(8) without
the trip through the queue manager); implements ``intake.handoff.Handoff``.

    intake: plan (route each recipient) -> enqueue, those recipients stored leased
            -> 250 -> start: local mailer -> record_outcomes (next group commit)
                                                     -> DeliveryAttempt events

The accepting process has the body in memory and the route in hand, so a message for
our own domains needs no claim, no body read and no wake-up of the scheduler: one more
transaction (the outcome, batched with the commits of other sessions) and the file in
``new/``. Only what the local mailers alone can deliver is taken: recipients whose route
names nothing but ``local`` mailers, that asked for no success DSN, while fewer than
``delivery.max_concurrency`` such deliveries are in flight here. Anything else is the
scheduler's, as before.

Only a delivery is settled here. A recipient the mailers did not deliver (a full
mailbox, a disk error) is released at once, so the scheduler makes its attempt with its
retries, bounces and DSNs: one set of rules for every outcome but success.

The guarantee: the recipients are stored leased (``delivery.lease``) in the commit that
makes the message durable, so the scheduler leaves them alone while this process works,
and takes them when the lease ends unsettled (the process died, or the outcome could not
be recorded). A delivery starts only with at least half the lease left. The window for
a duplicate is the scheduler's own: a file renamed into ``new/`` whose outcome was not
committed before the process died is delivered again after the lease (Postfix has the
same window between local(8) and the queue file's removal).
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
from postroom.delivery.dsn import wants_dsn
from postroom.delivery.mailers import Mailer
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Disposition, Outcome
from postroom.delivery.outcome_events import outcome_event
from postroom.delivery.records import attempt_row, log_routes, publish_attempts
from postroom.delivery.router import Route, Router, RouteTable
from postroom.delivery.rules import MessageView
from postroom.errors import StoreError
from postroom.events import Bus
from postroom.mailauth.dkimsummary import signature_summary
from postroom.store import QueueStore
from postroom.store.models import NewMessage, RecipientStatus, RecipientUpdate
from postroom.store.rows import notify_text

__all__ = ["DirectDelivery"]

_log = logging.getLogger("postroom.delivery")
_FIRST_PAUSE = 0.5  # after a store error recording an outcome; doubles while it lasts
_MAX_PAUSE = 8.0


@dataclass(frozen=True, slots=True)
class _Planned:
    """Implements ``intake.handoff.Planned``."""

    owner: DirectDelivery
    message: OutboundMessage
    routes: Mapping[Route, Sequence[OutboundRecipient]]
    reasons: Mapping[str, str]  # why each recipient (by address) is on its route
    addresses: frozenset[str]
    lease_until: float

    def start(self) -> None:
        self.owner.start(self)


class DirectDelivery:
    def __init__(
        self,
        *,
        store: QueueStore,
        routes: Sequence[Route],
        mailers: Mapping[str, Mailer],
        settings: DeliverySettings,
        clock: Clock,
        bus: Bus,
        wake: Callable[[], object],
        return_path: Callable[[str, str, bool | None], str] | None = None,
        store_pause: float = _FIRST_PAUSE,
    ) -> None:
        """``mailers``: the ``local`` mailers (a route naming any other is left to the
        scheduler); ``wake``: tell the scheduler that released recipients are due;
        ``store_pause``: the first wait after a store error recording an outcome."""
        self._store = store
        self._routes = tuple(routes)
        self._router = Router(mailers)
        self._mailers = frozenset(mailers)
        self._settings = settings
        self._clock = clock
        self._bus = bus
        self._wake = wake
        self._return_path = return_path or (lambda sender, queue_id, verp: sender)
        self._store_pause = store_pause
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    # -- intake's side ---------------------------------------------------------------
    def plan(
        self, message: NewMessage, data: bytes, local_domains: frozenset[str]
    ) -> _Planned | None:
        settings = self._settings
        if self._stopping or settings.paused or len(self._tasks) >= settings.max_concurrency:
            return None
        outbound = _outbound(message, data)
        rejected = {address for address, _ in message.rejected}
        table = RouteTable(self._routes, local_domains.__contains__)
        view: MessageView | None = None
        routes: dict[Route, list[OutboundRecipient]] = defaultdict(list)
        reasons: dict[str, str] = {}
        for rcpt in message.envelope.recipients:
            address = str(rcpt.address)
            notify = notify_text(rcpt.notify)
            if address in rejected or wants_dsn("success", notify, outbound.sender):
                continue
            view = MessageView(outbound, address) if view is None else view.for_recipient(address)
            choice = table.decide(view)
            if self._mailers.issuperset(choice.route.mailers):
                routes[choice.route].append(OutboundRecipient(address, notify, rcpt.orcpt))
                reasons[address] = choice.reason
        if not routes:
            return None
        addresses = frozenset(r.address for rcpts in routes.values() for r in rcpts)
        until = self._clock.time() + settings.lease
        return _Planned(self, outbound, dict(routes), reasons, addresses, until)

    def start(self, planned: _Planned) -> None:
        task = asyncio.create_task(self._deliver(planned))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, grace: float) -> None:
        """Take no more; let deliveries in flight finish within ``grace`` seconds. What
        is cut off keeps its lease: the scheduler takes it when the lease ends."""
        self._stopping = True
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

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
            delivered: list[Outcome] = []
            tried: list[Outcome] = []
            for route, recipients in planned.routes.items():
                sender = self._return_path(message.sender, message.id, route.verp)
                result = await self._router.deliver(
                    route, replace(message, sender=sender), recipients, planned.reasons
                )
                delivered.extend(o for o in result.final if o.disposition is Disposition.DELIVERED)
                tried.extend(result.attempts)
            await self._settle(planned, started, delivered, tried)
            left = planned.addresses - {o.recipient for o in delivered}
            if left:
                await self._release(message.id, left)
        except asyncio.CancelledError:
            raise
        except Exception:  # the lease stays: the scheduler tries them when it ends
            _log.exception("local delivery of %s at once failed", message.id)

    async def _settle(
        self,
        planned: _Planned,
        started: float,
        delivered: Sequence[Outcome],
        tried: Sequence[Outcome],
    ) -> None:
        """Record the delivered recipients (with every attempt that led there and their
        events, one transaction), then publish the attempts."""
        if not delivered:
            return
        message = planned.message
        done = {o.recipient for o in delivered}
        status = RecipientStatus.DELIVERED
        updates = [RecipientUpdate(o.recipient, status, None, str(o.reply)) for o in delivered]
        attempts = [attempt_row(message.id, started, o) for o in tried if o.recipient in done]
        events = [outcome_event(message.id, status, o, started, ()) for o in delivered]
        pause = self._store_pause
        while True:
            try:
                await self._store.record_outcomes(message.id, updates, attempts, events)
                break
            except StoreError as exc:
                # Until the lease ends: then the scheduler delivers them again (at least
                # once), so give up rather than record an outcome for its attempt.
                if self._clock.time() + pause >= planned.lease_until:
                    _log.error("could not record the delivery of %s: %s", message.id, exc)
                    return
                _log.warning(
                    "recording the delivery of %s: %s (again in %g s)", message.id, exc, pause
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, _MAX_PAUSE)
        states = {address: status.value for address in done}
        publish_attempts(self._bus, message.id, states, attempts, signature_summary(message.data))

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
