"""The scheduler (Postfix's qmgr): claim due recipients, route, deliver, record, retry, bounce.

One attempt of one message:
  claim (lease) -> body -> route per recipient -> router walks each chain
  -> DSNs enqueued through intake (before the outcome is recorded, so a crash in between
     repeats a DSN rather than losing it) -> record_outcomes (one transaction)
  -> DeliveryAttempt events.
While an attempt runs, ``keep_leases()`` renews its lease every third of
``delivery.lease``, so the lease can be short: after a crash the recipients that were in
flight are claimed again within one lease (delivery is at least once).
A store error in a claim, a renewal or an outcome write is logged, named on
``Readiness`` and retried after a pause; it never ends the scheduler. The pause doubles
while the errors go on, but a sign that the store works again (a wake-up: mail
committed here, or heard of from another node) ends it early, so delivery resumes as
soon as a lost database is back, however long it was gone.
On a database shared by several nodes, ``listen()`` hears of mail the other nodes
commit, and listens again after a loss, every few seconds at most.
With ``delivery.paused`` it claims nothing (Postfix's hold queue for all mail): intake
still queues, and the next start without the setting delivers what waited.
The clock and the random source are passed in; tests drive ``run_once()`` with a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Protocol, TypeVar

from postroom.clock import Clock
from postroom.config.settings import DeliverySettings
from postroom.delivery.leases import keep_renewing, renew
from postroom.delivery.localdomains import LocalDomains
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.records import attempt_row, log_routes
from postroom.delivery.router import Route, Router, RouteTable
from postroom.delivery.rules import MessageView
from postroom.delivery.settle import OutcomeRules, Settled
from postroom.errors import StoreError
from postroom.events import Bus, MessageQueued
from postroom.intake import Intake
from postroom.mail.events import MailEvent
from postroom.readiness import Readiness
from postroom.store import DirectoryStore, QueueStore
from postroom.store.base import QueueWatch, SuppressionStore
from postroom.store.models import (
    Attempt,
    Claim,
    RecipientState,
    RecipientUpdate,
    StoredMessage,
)

__all__ = ["DeliveryStore", "Scheduler"]


class DeliveryStore(QueueStore, DirectoryStore, SuppressionStore, Protocol):
    """What delivery uses: the queue's claims and outcomes, the local domains
    (refreshed before each batch, for routing), and the suppression list that hard
    bounces go on."""


T = TypeVar("T")
_log = logging.getLogger("postroom.delivery")
_IDLE_WAIT = 60.0  # re-check the queue at least this often when nothing is due
# After a store error (full, locked, damaged): wait, doubling up to the longest pause.
_FIRST_STORE_PAUSE = 0.5
_MAX_STORE_PAUSE = 30.0
_CLAIM_STEPS = 10  # with a backlog, claim when a tenth of max_concurrency is free
# Listening for other nodes' mail: after a loss, try again after a pause that doubles up
# to this (one connection attempt, one log line each time while the database is away).
_MAX_LISTEN_PAUSE = 5.0
PART = "scheduler"  # its name on Readiness
LISTEN_PART = "queue-watch"  # listening for other nodes' mail, on Readiness


class _ByteBudget:
    """Bytes of message held in memory by attempts in flight, at most ``limit``.

    A message larger than the whole budget waits until it can have all of it."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        size = min(size, self._limit)
        async with self._changed:
            await self._changed.wait_for(lambda: self._used + size <= self._limit)
            self._used += size
        try:
            yield
        finally:
            async with self._changed:
                self._used -= size
                self._changed.notify_all()


class Scheduler:
    def __init__(
        self,
        *,
        store: DeliveryStore,
        router: Router,
        routes: RouteTable,
        intake: Intake,
        local_domains: LocalDomains,
        settings: DeliverySettings,
        hostname: str,
        clock: Clock,
        bus: Bus,
        rng: random.Random | None = None,
        readiness: Readiness | None = None,
        return_path: Callable[[str, str, bool | None], str] | None = None,
        relays: frozenset[str] = frozenset(),
    ) -> None:
        """``relays``: the mailers that hand mail on to another server (smarthosts,
        provider APIs): a delivery through one is the event ``sent``, not ``delivered``."""
        self._store = store
        # (sender, queue id, the route's verp) -> the envelope sender sent: VERP's when
        # the route or ``[bounces] verp`` asks.
        self._return_path = return_path or (lambda sender, queue_id, verp: sender)
        self._router = router
        self._routes = routes
        self._local_domains = local_domains
        self._settings = settings
        self._clock = clock
        self._bus = bus
        self._rules = OutcomeRules(
            suppressions=store,
            intake=intake,
            settings=settings,
            hostname=hostname,
            clock=clock,
            rng=rng or random.Random(),
            bus=bus,
            relays=relays,
        )
        self._readiness = readiness or Readiness(clock)
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._store_pause = _FIRST_STORE_PAUSE
        self._budget = _ByteBudget(settings.max_inflight_bytes)
        # each attempt in flight -> the claim whose lease it holds (and renews)
        self._in_flight: dict[asyncio.Task[None], Claim] = {}
        # While due mail is left over (the last claim got all it asked for), claim only
        # once this many attempts have finished, not at each: a claim is a transaction
        # of several round trips, and one for ten messages costs what one for one does.
        self._claim_step = max(1, settings.max_concurrency // _CLAIM_STEPS)
        self._backlog = False
        self._stopping = False
        bus.subscribe(self._on_event)

    # -- running ---------------------------------------------------------------------
    def _on_event(self, event: object) -> None:
        if isinstance(event, MessageQueued) and not event.handed_off:
            self._wake.set()

    def wake(self) -> None:
        """Look for due work now: another process committed mail into the store."""
        self._wake.set()

    def look_at_store(self) -> None:
        """Another part met a store error: look now (an idle scheduler would not), so
        its own calls fail and ``/readyz`` names the trouble. Once it knows, its own
        pauses pace it: a wake-up would end them as if the store worked again."""
        if self._store_pause == _FIRST_STORE_PAUSE:
            self._wake.set()

    @property
    def rules(self) -> OutcomeRules:
        """Its rules for outcomes, for the deliveries made at once beside it."""
        return self._rules

    @property
    def in_flight(self) -> int:
        """Messages being attempted now."""
        return len(self._in_flight)

    async def run(self) -> None:
        """Deliver until ``stop()``: claim what is due, then wait for a wake-up or the
        next due time. Paused (``delivery.paused``): claim nothing until stopped."""
        if self._settings.paused:
            _log.warning(
                "delivery is paused (delivery.paused = true): mail is accepted and queued,"
                " none is delivered"
            )
            await self._stopped.wait()
            return
        while not self._stopping:
            self._wake.clear()
            free = self._settings.max_concurrency - len(self._in_flight)
            if free <= 0 or (self._backlog and free < self._claim_step):
                await self._wake.wait()  # a finishing attempt wakes us
                continue
            try:
                claimed = await self._claim_and_start()
                next_due = None if claimed else await self._store.next_due()
            except StoreError as exc:
                await self._store_failed("claiming due mail", exc)
                continue
            self._store_worked()
            if claimed:
                continue
            wait = _IDLE_WAIT
            if next_due is not None:
                wait = min(wait, max(0.0, next_due - self._clock.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def keep_leases(self) -> None:
        """Until ``stop()``: renew the leases of the attempts in flight, every third of
        ``delivery.lease`` (wall time; ``renew_leases()`` is one round)."""
        await keep_renewing(self._settings.lease, self._stopped, self.renew_leases)

    async def renew_leases(self) -> int:
        """Extend the lease of every recipient whose attempt is still running; the number
        renewed. A store error is logged: the next round tries again."""
        leases: dict[str, list[str]] = defaultdict(list)
        for claim in list(self._in_flight.values()):
            leases[claim.message.id].extend(state.address for state in claim.recipients)
        try:
            return await renew(self._store, leases, self._clock, self._settings.lease)
        except StoreError as exc:
            self._readiness.fail(PART, f"renewing leases: {exc}")
            return 0

    async def listen(self, watch: QueueWatch) -> None:
        """Until ``stop()``: look for due work whenever ``watch`` hears that any node
        committed mail. A lost connection is named on Readiness (``queue-watch``) and
        made again after a pause (0.5 s, doubling up to 5 s) until the database is back;
        then the scheduler looks at once for what was committed meanwhile."""
        pause = _FIRST_STORE_PAUSE

        def heard() -> None:  # also called once each time it starts to listen
            nonlocal pause
            if pause != _FIRST_STORE_PAUSE:
                _log.info("listening for other nodes' mail again")
                pause = _FIRST_STORE_PAUSE
            self._readiness.ok(LISTEN_PART)
            self._wake.set()

        while not self._stopping:
            try:
                await watch.watch_queue(heard)
            except StoreError as exc:
                _log.error(
                    "not listening for other nodes' mail: %s (trying again in %g s)", exc, pause
                )
                self._readiness.fail(LISTEN_PART, str(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._stopped.wait()
            pause = min(pause * 2, _MAX_LISTEN_PAUSE)

    async def _store_failed(self, doing: str, exc: StoreError) -> None:
        """Log and report a store error, then pause. A stop ends the pause early, and so
        does a wake-up after the first pause's length: a sign that the store works."""
        pause = self._store_pause
        _log.error("store error while %s: %s (trying again in %g s)", doing, exc, pause)
        self._readiness.fail(PART, f"{doing}: {exc}")
        self._store_pause = min(pause * 2, _MAX_STORE_PAUSE)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(pause, _FIRST_STORE_PAUSE)):
                await self._stopped.wait()
        if pause <= _FIRST_STORE_PAUSE or self._stopping:
            return
        stopped = asyncio.ensure_future(self._stopped.wait())
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait(
                (stopped, woken), timeout=pause - _FIRST_STORE_PAUSE,
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
        finally:
            stopped.cancel()
            woken.cancel()

    def _store_worked(self) -> None:
        if self._store_pause != _FIRST_STORE_PAUSE:
            _log.info("the store works again: delivery goes on")
        self._store_pause = _FIRST_STORE_PAUSE
        self._readiness.ok(PART)

    async def run_once(self) -> int:
        """Claim everything due now and finish those attempts; the number of messages."""
        count = await self._claim_and_start()
        await self.drain()
        return count

    async def drain(self) -> None:
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)

    async def stop(self, grace: float) -> None:
        """Stop claiming; let attempts in flight finish within ``grace`` seconds. Whatever
        is cut off keeps its lease and is tried again when the lease ends."""
        self._stopping = True
        self._wake.set()
        self._stopped.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.drain()
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*list(self._in_flight), return_exceptions=True)

    async def _claim_and_start(self) -> int:
        free = self._settings.max_concurrency - len(self._in_flight)
        if free <= 0 or self._settings.paused:
            return 0
        claims = await self._store.claim_due(
            self._clock.time(), limit=free, lease=self._settings.lease
        )
        self._backlog = len(claims) == free
        if not claims:
            return 0
        # In flight (their leases renewed) before anything else can fail: the attempts
        # wait for the local domains, read again for routing, together.
        domains = asyncio.ensure_future(
            self._until_stored(
                "reading the local domains", lambda: self._local_domains.refresh(self._store)
            )
        )
        domains.add_done_callback(_retrieved)  # stopped with every attempt cancelled
        for claim in claims:
            task = asyncio.create_task(self._attempt_guarded(claim, domains))
            self._in_flight[task] = claim
            task.add_done_callback(self._finished)
        return len(claims)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        if not self._stopping:
            self._wake.set()  # a slot is free: look for more due work

    async def _attempt_guarded(self, claim: Claim, domains: asyncio.Future[None]) -> None:
        async with self._budget.hold(claim.message.size):
            try:
                await asyncio.shield(domains)  # one cancelled attempt leaves it to others
                await self._attempt(claim)
            except asyncio.CancelledError:
                raise
            except StoreError as exc:
                # Stopped while the store is away: the lease stays, as below.
                _log.error("attempt of %s cut off: %s", claim.message.id, exc)
            except Exception:
                # The lease stays: the recipients are tried again when it ends.
                _log.exception("delivery attempt of %s failed", claim.message.id)

    # -- one attempt -------------------------------------------------------------------
    async def _attempt(self, claim: Claim) -> None:
        stored = claim.message
        data = claim.body
        if data is None:
            data = await self._until_stored(
                f"reading {stored.id}", lambda: self._store.read_body(stored.id)
            )
        if data is None:  # deleted meanwhile
            return
        message = _outbound(stored, data)
        started = self._clock.time()
        by_route: dict[Route, list[RecipientState]] = defaultdict(list)
        reasons: dict[str, str] = {}
        view = MessageView(message, claim.recipients[0].address)
        for state in claim.recipients:
            choice = self._routes.decide(view.for_recipient(state.address))
            by_route[choice.route].append(state)
            reasons[state.address] = choice.reason
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("claimed %s: %d recipient(s)", stored.id, len(claim.recipients))
            log_routes(_log, stored.id, {r: [s.address for s in st] for r, st in by_route.items()})
        attempts: list[Attempt] = []
        settled: list[Settled] = []
        rules = self._rules
        for route, states in by_route.items():
            sender = self._return_path(stored.sender, stored.id, route.verp)
            result = await self._router.deliver(
                route,
                replace(message, sender=sender),
                [OutboundRecipient(s.address, s.notify, s.orcpt) for s in states],
                reasons,
            )
            attempts.extend(attempt_row(stored.id, started, o) for o in result.attempts)
            finals = {o.recipient: o for o in result.final}
            settled.extend(rules.settle(stored.received_at, s, finals[s.address]) for s in states)
        await rules.conclude(
            message,
            started,
            settled,
            attempts,
            wait=self._dsn_wait,
            record=functools.partial(self._record, stored.id),
        )

    async def _dsn_wait(self, failure: StoreError) -> None:
        """The store is away while a DSN is queued: a stop leaves the lease (the attempt
        is made again), else wait for the store."""
        if self._stopping:
            raise failure
        await self._store_failed("queueing a DSN", failure)

    async def _record(
        self,
        message_id: str,
        updates: Sequence[RecipientUpdate],
        attempts: Sequence[Attempt],
        events: Sequence[MailEvent],
    ) -> None:
        """The outcomes and their events, in one transaction (see ``_until_stored``)."""
        await self._until_stored(
            f"recording the outcome of {message_id}",
            lambda: self._store.record_outcomes(message_id, updates, attempts, events),
        )

    async def _until_stored(self, doing: str, step: Callable[[], Awaitable[T]]) -> T:
        """One store step of an attempt in flight, tried again after a store error until
        it works or the scheduler stops (then the error is raised: the lease stays, and
        the recipients are tried again when it ends). The lease is renewed meanwhile."""
        while True:
            try:
                done = await step()
            except StoreError as exc:
                if self._stopping:
                    raise
                await self._store_failed(doing, exc)
                continue
            self._store_worked()
            return done


def _retrieved(future: asyncio.Future[None]) -> None:
    """Mark a shared future's exception as seen: each awaiter has its own copy of it."""
    if not future.cancelled():
        future.exception()


def _outbound(stored: StoredMessage, data: bytes) -> OutboundMessage:
    return OutboundMessage(
        id=stored.id,
        sender=stored.sender,
        data=data,
        smtputf8=stored.smtputf8,
        body_type=stored.body_type,
        ret=stored.ret,
        envid=stored.envid,
        principal=stored.principal,
        source_kind=stored.source_kind,
        received_at=stored.received_at,
    )
