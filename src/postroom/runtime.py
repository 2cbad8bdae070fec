"""The composition root: Settings -> store, bus, directory, intake, listeners; signals; shutdown.

Nothing else in postroom builds long-lived objects; everything is passed in from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import os
import random
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from postroom.clock import Clock, SystemClock
from postroom.config.mailers import LocalMailerSettings, SmtpMailerSettings
from postroom.config.providers import ProviderMailerSettings
from postroom.config.settings import (
    IMAP_ROLES,
    IMPLICIT_TLS_ROLES,
    POP3_ROLES,
    ListenerRole,
    ListenerSettings,
    Settings,
)
from postroom.directory.logincache import LoginCache
from postroom.directory.users import Users
from postroom.errors import PostroomError
from postroom.events import Bus, DeliveryAttempt, MessageQueued
from postroom.events.counts import ProcessCounts
from postroom.events.logfile import BatchedLogHandler
from postroom.events.logformat import formatter as log_formatter
from postroom.events.logline import LogLineWriter
from postroom.feedback import ReturnDesk, links_for
from postroom.intake import Intake, Principal, Queued
from postroom.intake.principals import POSTROOM, RelayNetworks, user_principal
from postroom.mail.address import parse_address, to_ascii_domain
from postroom.mail.envelope import Recipient, Source, SourceKind
from postroom.mailbox import Maildir
from postroom.net.listener import Listener
from postroom.net.logins import LoginGate
from postroom.net.shares import SharedSockets
from postroom.net.throttle import FailureThrottle
from postroom.net.tls import CheckedCertificate, ServerTls, checked_in_child
from postroom.net.wakeup import Notifier, WakeupListener
from postroom.readiness import Check, Readiness
from postroom.smtp.server import SmtpServer
from postroom.store import Store
from postroom.store.base import LimitStore, QueueWatch
from postroom.store.instance import open_instance_store
from postroom.store.open import sqlite_path
from postroom.supervise import TaskSupervisor
from postroom.workerprocs import WorkerExited, WorkerProcesses, WorkerSetup, accept_shares
from postroom.workers import Supervisor, bind_listeners, report_start, watch_primary

# What only the primary runs (delivery, the API and dashboard, POP3 and IMAP, alerts and
# reports, the control socket) is imported where it is built, not here: an accept
# worker imports this module too, and each of its modules costs every worker memory
# (tests/e2e/test_worker_imports.py lists what a worker must not load).
if TYPE_CHECKING:
    from postroom.alerts import Alerts
    from postroom.alerts.dnswatch import DnsWatch
    from postroom.alerts.report import Reports
    from postroom.api import ApiServer
    from postroom.config.discover import ConfigSource
    from postroom.delivery.direct import DirectDelivery
    from postroom.delivery.mailers import Mailer
    from postroom.delivery.mailers.api.limits import SendWindow, WindowUsage
    from postroom.delivery.retention import Retention
    from postroom.delivery.router import Router
    from postroom.delivery.scheduler import Scheduler
    from postroom.delivery.settle import OutcomeRules
    from postroom.delivery.slots import SharedSlots
    from postroom.events.dispatcher import WebhookDispatcher
    from postroom.events.forward import AttemptForwarder, AttemptReceiver
    from postroom.events.metrics import Metrics, WorkerCounts
    from postroom.imap.server import ImapServer
    from postroom.intake.marks import RouteTracking
    from postroom.mailauth.inbound import InboundChecker
    from postroom.net.control import ControlListener
    from postroom.pop3.server import Pop3Server
    from postroom.store.sqlite.sharedwriter import WritePort

__all__ = ["Server", "ready_line", "run", "run_restarted_worker", "run_worker"]

_log = logging.getLogger("postroom")
# The integrity check at start stops after this long (`postroom db check` checks all):
# measured, a quick_check of a 1 GB store (25,000 messages of 40 KB) takes 0.8 s from
# the page cache and 10 s from a cold 100 MB/s disk, so 2 s cover a cached store of
# about 2.5 GB, and the first 200 MB of a cold one.
_START_CHECK_BUDGET = 2.0
_STORE = "store"  # the store's name on Readiness


def _user_logins(users: Users, throttle: FailureThrottle) -> LoginGate[Principal]:
    """The gate every mail door logs users in through (SMTP AUTH, POP3, IMAP)."""

    async def verify(username: str, password: str) -> Principal | None:
        record = await users.verify(username, password)
        return None if record is None else user_principal(record)

    async def recall(username: str, password: str) -> Principal | None:
        record = await users.recall(username, password)
        return None if record is None else user_principal(record)

    return LoginGate(throttle, verify=verify, recall=recall)


def _login_cache(settings: Settings, clock: Clock) -> LoginCache | None:
    cache = settings.login_cache
    if cache.entries == 0 or cache.ttl == 0:
        return None
    return LoginCache(clock, ttl=cache.ttl, max_entries=cache.entries)


class _WakePrimary:
    """In an accept worker: after commits, wake the primary's scheduler (once per burst)."""

    def __init__(self, notify: Notifier) -> None:
        self._notify = notify
        self._pending = False

    def __call__(self, event: object) -> None:
        if isinstance(event, MessageQueued) and not event.handed_off and not self._pending:
            self._pending = True
            asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        self._pending = False
        self._notify()


class Server:
    """Everything `postroom serve` runs, started and stopped as one.

    ``deliver=False`` builds the delivery engine without running its loop, so a test can
    drive ``scheduler.run_once()`` with its own clock. ``shared``: the listening sockets
    this process shares with the other accepting processes; ``accept_only`` is an accept
    worker: SMTP into the store, no delivery. ``store``: a store to start and use
    instead of the configured one (a test's fault-injecting store); ``init``: make a
    new, empty store even where the data directory was used before (``postroom serve
    --init``); ``migrate``: upgrade an older PostgreSQL schema at start (``postroom
    serve --migrate``; an SQLite store is always upgraded)."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        deliver: bool = True,
        rng: random.Random | None = None,
        shared: SharedSockets | None = None,
        accept_only: bool = False,
        store: Store | None = None,
        init: bool = False,
        migrate: bool = False,
        worker_counts: WorkerCounts | None = None,
        certificate: CheckedCertificate | None = None,
    ) -> None:
        """``certificate``: the TLS files, checked in a child (``net.tls``); None: here."""
        self.settings = settings
        self._certificate = certificate
        self._worker_counts = worker_counts  # the accept workers' counters, for /metrics
        self.clock = clock or SystemClock()
        self.readiness = Readiness(self.clock)
        self.tasks = TaskSupervisor(self.readiness, self.clock)
        self._given_store = store
        self._init = init
        self._migrate = migrate
        self.rng = rng or random.Random()
        self.deliver = deliver and not accept_only
        self.accept_only = accept_only
        self._shared = shared
        self.store: Store | None = None
        self.smtp: SmtpServer | None = None
        self.pop3: Pop3Server | None = None
        self.imap: ImapServer | None = None
        self.mailboxes = Maildir(
            settings.data_dir / "mail",
            clock=self.clock,
            hostname=settings.hostname,
            poll_interval=settings.mailboxes.poll_interval,
            default_quota=settings.mailboxes.default_quota,
        )
        self.api: ApiServer | None = None
        self.intake: Intake | None = None
        self.alerts: Alerts | None = None
        self.reports: Reports | None = None
        self.scheduler: Scheduler | None = None
        self.direct: DirectDelivery | None = None  # local mail delivered at once
        self.retention: Retention | None = None
        self.webhooks: WebhookDispatcher | None = None
        self.metrics: Metrics | None = None  # the primary's /metrics
        self.process_counts = ProcessCounts()  # a worker's, which its primary asks for
        self.slots: SharedSlots | None = None
        self._router: Router | None = None
        self._own: list[Mailer] = []  # an accept worker's mailers, for delivery at once
        self._limited: dict[str, SendWindow] = {}  # the sending limits of API mailers
        self._wakeup: WakeupListener | None = None
        self._notifier: Notifier | None = None  # an accept worker's, to wake the primary
        self._forwarder: AttemptForwarder | None = None  # a worker's attempts, to alerts
        self._attempts: AttemptReceiver | None = None  # the primary's end of that
        self._control: ControlListener | None = None
        self._write_port: WritePort | None = None  # the workers' way to the writer
        self._inbound: InboundChecker | None = None
        self.tls: ServerTls | None = None
        self.certificate = ""  # the certificate served, for the ready line
        self._started = (self.clock.time(), self.clock.monotonic())

    async def start(self) -> None:
        settings = self.settings
        self._started = (self.clock.time(), self.clock.monotonic())
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.tls = tls = ServerTls(settings, self._certificate)
        self.certificate = _certificate_note(settings, tls.cert, changed=tls.made_now)
        self.store = store = await self._open_store()
        try:
            await self._share_writer(store)
        except OSError:
            await self.stop()
            raise
        if settings.inbound_auth.enabled:
            from postroom.mailauth.inbound import InboundChecker
            from postroom.resolver import DnsResolver

            self._inbound = InboundChecker(
                settings.inbound_auth, DnsResolver(settings.dns), settings.hostname
            )
        bus = Bus()
        bus.subscribe(LogLineWriter())
        if not self.accept_only:
            from postroom.events.metrics import Metrics

            self.metrics = Metrics()
            bus.subscribe(self.metrics)
        else:
            bus.subscribe(self.process_counts)
        self._links = links = links_for(settings)
        intake = Intake.from_settings(
            settings,
            store,
            self.clock,
            bus=bus,
            inbound=self._inbound,
            rng=self.rng,
            mailboxes=self.mailboxes,
            returns=ReturnDesk(links, store, self.clock, settings.bounces),
            route_tracking=_route_tracking(settings),
        )
        self.intake = intake
        if self.accept_only:
            self._notifier = notifier = Notifier(settings.data_dir)
            bus.subscribe(_WakePrimary(notifier))
            self._deliver_at_once(intake, bus, notifier)
            if self.direct is not None and settings.alerts:
                # The primary alone sends alerts: it is told of this worker's attempts.
                from postroom.events.forward import AttemptForwarder

                self._forwarder = AttemptForwarder(settings.data_dir)
                bus.subscribe(self._forwarder)
        else:
            self._start_delivery(store, intake, bus)
        auth = settings.limits.auth
        # One count of failed logins for every protocol (SMTP AUTH, POP3, the
        # dashboard): a guess is a guess, by any door.
        self.auth_throttle = auth_throttle = FailureThrottle(
            store,  # its counts are shared by every process on the store
            self.clock,
            max_failures=auth.max_failures,
            max_account_failures=auth.max_account_failures,
            window=auth.window,
        )
        users = Users(store, self.clock, login_cache=_login_cache(settings, self.clock))
        logins = _user_logins(users, auth_throttle)
        self.smtp = SmtpServer(
            settings,
            intake=intake,
            logins=logins,
            relay_networks=RelayNetworks.from_settings(settings),
            ssl_context=tls.context,
            bus=bus,
            shared=self._shared,
        )
        if not self.accept_only:  # mailboxes are served by the primary alone
            alone = (
                None if self._shared is None else replace(self._shared, slot=None, reserve=False)
            )
            self._make_mailbox_servers(logins, tls.context, alone)
        try:
            await self._start_listeners()
            if not self.accept_only:
                await self._start_api(store, intake)
        except OSError:
            await self.stop()
            raise
        if not self.accept_only:
            from postroom.net.control import ControlListener

            self._control = ControlListener(settings.data_dir, self.describe)
            await self._control.start()
            self._start_reporting()
        self._start_deliveries(store)

    def _start_deliveries(self, store: Store) -> None:
        """The delivery tasks: the scheduler's (the primary), and the renewals of what
        this process delivers at once."""
        if self.direct is not None:
            self.tasks.start("direct-leases", self.direct.keep_leases)
        if self.deliver:
            self._run_delivery(store)
        elif self.slots is not None:  # an accept worker relaying at once
            self.tasks.start("slots", self.slots.keep)

    def _run_delivery(self, store: Store) -> None:
        assert self.scheduler is not None and self.retention is not None
        self._wakeup = WakeupListener(self.settings.data_dir, self.scheduler.wake)
        self._wakeup.start()
        self.tasks.start("scheduler", self.scheduler.run)
        if isinstance(store, QueueWatch):  # other nodes on the same database
            self.tasks.start("queue-watch", functools.partial(self.scheduler.listen, store))
        self.tasks.start("leases", self.scheduler.keep_leases)
        if self.slots is not None:
            self.tasks.start("slots", self.slots.keep)
        self.tasks.start("retention", self.retention.run)
        if self.webhooks is not None:
            self.tasks.start("webhooks", self.webhooks.run)

    async def _start_listeners(self) -> None:
        for listening in (self.smtp, self.pop3, self.imap):
            if listening is not None:
                await listening.start()
                for spec, listener in zip(listening.specs, listening.listeners, strict=True):
                    self.readiness.watch(
                        f"listener {spec.role} {listener.address}:{listener.bound_port}",
                        _listening(listener),
                    )

    def _make_mailbox_servers(
        self,
        logins: LoginGate[Principal],
        ssl_context: ssl.SSLContext | None,
        shared: SharedSockets | None,
    ) -> None:
        settings = self.settings
        roles = {spec.role for spec in settings.listeners}
        if roles & POP3_ROLES:  # each protocol's code is loaded only where it listens
            from postroom.pop3.server import Pop3Server

            self.pop3 = Pop3Server(
                settings,
                mailboxes=self.mailboxes,
                logins=logins,
                ssl_context=ssl_context,
                shared=shared,
            )
        if roles & IMAP_ROLES:
            from postroom.imap.server import ImapServer

            self.imap = ImapServer(
                settings,
                mailboxes=self.mailboxes,
                logins=logins,
                ssl_context=ssl_context,
                shared=shared,
            )

    def describe(self) -> dict[str, object]:
        """What ``postroom status`` asks a running server over the control socket (times
        are Unix times; the command documents its own JSON)."""
        settings = self.settings
        started_at, started = self._started
        api = None
        if self.api is not None:
            address, port = self.api.bound
            api = {"address": address, "port": port}
        return {
            "pid": os.getpid(),
            "version": _version(),
            "started_at": started_at,
            "uptime": self.clock.monotonic() - started,
            "data_dir": str(settings.data_dir),
            "workers": settings.workers,
            "listeners": [
                {
                    "role": spec.role.value,
                    "address": spec.address,
                    "port": listener.bound_port,
                    "tls": "implicit" if spec.role in IMPLICIT_TLS_ROLES else "starttls",
                }
                for spec, listener in self.bound_listeners()
            ],
            "api": api,
            "delivery": {
                "paused": settings.delivery.paused,
                "in_flight": self.scheduler.in_flight if self.scheduler is not None else 0,
            },
            "failing": [
                {"part": p.part, "reason": p.reason, "since": p.since, "failures": p.failures}
                for p in self.readiness.problems()
            ],
            "faults": [
                {"part": f.part, "reason": f.reason, "at": f.at} for f in self.readiness.faults()
            ],
        }

    def smtp_sessions(self) -> dict[str, int]:
        """SMTP connections open now, by listener (``role address:port``)."""
        listeners = self.smtp.listeners if self.smtp is not None else []
        return {
            f"{spec.role.value} {listener.address}:{listener.bound_port}": listener.connections
            for spec, listener in zip(self.settings.listeners, listeners, strict=False)
        }

    async def _close_clients(self) -> None:
        """The HTTP and SMTP clients of the tasks that have stopped."""
        if self.webhooks is not None:
            await self.webhooks.aclose()
            self.webhooks = None
        if self._router is not None:
            await self._router.aclose()
            self._router = None
        for mailer in self._own:
            await mailer.aclose()
        self._own = []

    def bound_listeners(self) -> list[tuple[ListenerSettings, Listener]]:
        """Every started listener with its settings: SMTP's, then POP3's, then IMAP's."""
        found: list[tuple[ListenerSettings, Listener]] = []
        for server in (self.smtp, self.pop3, self.imap):
            if server is not None:
                found += zip(server.specs, server.listeners, strict=True)
        return found

    def _store_damaged(self, problem: str) -> None:
        """SQLite reported a damaged database file at run time: say so once in the log,
        and on /readyz until the server is stopped."""
        if all(p.part != _STORE for p in self.readiness.problems()):
            _log.error(
                "the database is damaged (%s): run `postroom db check`, and restore"
                " from a backup (`postroom db backup`) if it fails",
                problem,
            )
        self.readiness.fail(_STORE, f"database damaged: {problem}")

    async def _share_writer(self, store: Store) -> None:
        """With accept workers on an SQLite store, the primary's writer commits their
        new messages and delivery outcomes too (``store.sqlite.sharedwriter``): the
        primary listens for them, a worker hands them over."""
        if self.settings.workers < 2 or sqlite_path(self.settings.storage_url) is None:
            return
        from postroom.store.sqlite import SqliteStore
        from postroom.store.sqlite.sharedwriter import SharedWriter, WritePort, socket_path

        if not isinstance(store, SqliteStore):
            return
        path = socket_path(self.settings.data_dir)
        if path is None:
            if not self.accept_only:
                _log.warning(
                    "the data directory's path is too long for a socket: each accept"
                    " worker commits its own messages"
                )
            return
        if self.accept_only:
            store.write_through(SharedWriter(path))
            return
        self._write_port = port = WritePort(path, store)
        await port.start()

    async def _open_store(self) -> Store:
        if self._given_store is not None:
            await self._given_store.start()
            return self._given_store
        return await open_instance_store(
            self.settings.storage_url,
            self.settings.data_dir,
            init=self._init,
            migrate=self._migrate,
            check_budget=None if self.accept_only else _START_CHECK_BUDGET,
            on_damage=self._store_damaged,
            inline_body_max=self.settings.database.inline_body_max,
            database_timeout=self.settings.database.timeout,
        )

    async def _start_api(self, store: Store, intake: Intake) -> None:
        settings = self.settings
        if not settings.api.enabled:
            return
        from postroom.api import ApiDeps, ApiServer, create_app
        from postroom.feedback import EngagementDesk

        scheduler = self.scheduler if self.deliver else None
        deps = ApiDeps(
            store=store,
            intake=intake,
            clock=self.clock,
            settings=settings.api,
            hostname=settings.hostname,
            max_message_size=settings.limits.max_message_size,
            max_recipients=settings.limits.max_recipients,
            queue_changed=scheduler.wake if scheduler is not None else None,
            hooked={
                m.name: m
                for m in settings.mailers
                if isinstance(m, ProviderMailerSettings) and m.webhook is not None
            },
            readiness=self.readiness,
            delivery_paused=settings.delivery.paused,
            webhooks=settings.webhooks,
            metrics=self.metrics,
            smtp_sessions=self.smtp_sessions,
            worker_counts=self._worker_counts,
            engagement=EngagementDesk(self._links, store, self.clock, settings.tracking),
        )
        dashboard = None
        if settings.dashboard.enabled:
            from postroom.dashboard import Dashboard, DashboardDeps, dashboard_key

            dashboard = Dashboard(
                DashboardDeps(
                    store=store,
                    intake=intake,
                    clock=self.clock,
                    settings=settings,
                    key=dashboard_key(settings.data_dir),
                    throttle=self.auth_throttle,
                    queue_changed=deps.queue_changed,
                    limit_usage=self._limit_usage,
                    environ=os.environ,
                )
            )
        api = ApiServer(
            create_app(deps, dashboard),
            settings.api.address,
            settings.api.port,
            grace=settings.limits.shutdown_grace,
        )
        await api.start()
        self.api = api
        self.tasks.start("api", api.run)

    async def _limit_usage(self) -> dict[str, list[WindowUsage]]:
        """Each API mailer's sending-limit windows now (the store's counts, every node's)."""
        now = self.clock.time()
        return {name: await window.usage(now) for name, window in self._limited.items()}

    def reload_certificate(self) -> None:
        """SIGHUP: new TLS connections get the certificate and key files as they are now
        (a renewal); open sessions keep theirs. Only the certificate is reloaded: the
        rest of the configuration needs a restart."""
        if self.tls is not None:
            self.tls.reload()

    @property
    def api_port(self) -> int | None:
        """The API's bound port (the real one when 0 was configured); None when off."""
        return self.api.bound[1] if self.api is not None else None

    def _start_delivery(self, store: Store, intake: Intake, bus: Bus) -> None:
        from postroom.alerts import Alerts
        from postroom.alerts.report import Reports
        from postroom.delivery.localdomains import LocalDomains
        from postroom.delivery.mailers.build import MailerDeps, build_mailer
        from postroom.delivery.outcome_events import relay_names
        from postroom.delivery.retention import Retention
        from postroom.delivery.router import Router, RouteTable
        from postroom.delivery.scheduler import Scheduler
        from postroom.events.dispatcher import WebhookDispatcher
        from postroom.resolver import DnsResolver

        settings = self.settings
        # Connection slots are shared only where other processes deliver from the same
        # database: else this one delivers alone, and its pool's own count is exact.
        if _shares_slots(settings, store):
            self.slots = _shared_slots(store, self.clock)
        deps = MailerDeps(
            resolver=DnsResolver(settings.dns, rng=self.rng),
            hostname=settings.hostname,
            clock=self.clock,
            rng=self.rng,
            data_dir=settings.data_dir,
            mailboxes=self.mailboxes,
            limits=store,  # sending limits and connection slots count for every node
            slots=self.slots,
        )
        mailers = {m.name: build_mailer(m, deps) for m in settings.mailers}
        self._limited = _send_windows(settings, mailers)
        self._router = Router(mailers)
        local_domains = LocalDomains()
        self.scheduler = Scheduler(
            store=store,
            router=self._router,
            routes=RouteTable.from_settings(settings, local_domains),
            intake=intake,
            local_domains=local_domains,
            settings=settings.delivery,
            hostname=settings.hostname,
            clock=self.clock,
            bus=bus,
            rng=self.rng,
            readiness=self.readiness,
            return_path=self._links.return_path,
            relays=relay_names(settings.mailers),
        )
        intake.store_trouble = self.scheduler.look_at_store
        if self.deliver:
            self._deliver_at_once(intake, bus, self.scheduler.wake, (mailers, self.scheduler.rules))
        self.retention = Retention(store, settings.retention, self.clock)
        self.webhooks = WebhookDispatcher(store, settings.webhooks, self.clock, environ=os.environ)
        if settings.webhooks:
            # Woken by each commit only when an event may have somewhere to go: without
            # webhooks, the round every second marks what is new, and a burst of mail
            # costs no store round trips per commit.
            bus.subscribe(_wake_on_mail(self.webhooks.wake))
        self.alerts = Alerts(
            settings.alerts,
            clock=self.clock,
            hostname=settings.hostname,
            send_email=functools.partial(_send_alert_email, intake),
        )
        bus.subscribe(self.alerts.on_event)
        self.reports = Reports(
            settings.report,
            store,
            self.clock,
            hostname=settings.hostname,
            send_email=functools.partial(_send_alert_email, intake),
        )

    def _deliver_at_once(
        self,
        intake: Intake,
        bus: Bus,
        wake: Callable[[], object],
        scheduler: tuple[Mapping[str, Mailer], OutcomeRules] | None = None,
    ) -> None:
        """Mail delivered by the process that accepted it (``delivery.local_at_once``,
        ``delivery.relay_at_once``), through its own ``local`` and ``smtp`` mailers;
        ``wake``: the scheduler, for what it leaves; ``scheduler``: its mailers and
        rules where it runs here (one connection pool per relay for both)."""
        settings = self.settings
        chosen = _at_once_mailers(settings)
        if not chosen:
            return
        # Loaded only here: a worker with nothing to deliver carries no delivery code.
        from postroom.delivery.direct import DirectDelivery
        from postroom.delivery.outcome_events import relay_names
        from postroom.delivery.router import Route
        from postroom.delivery.settle import OutcomeRules

        if scheduler is None:  # an accept worker
            assert self.store is not None
            mailers = self._own_mailers(chosen, self.store)
            rules = OutcomeRules(
                suppressions=intake.store,
                intake=intake,
                settings=settings.delivery,
                hostname=settings.hostname,
                clock=self.clock,
                rng=self.rng,
                bus=bus,
                relays=relay_names(settings.mailers),
            )
        else:
            built, rules = scheduler
            mailers = {m.name: built[m.name] for m in chosen}
        self.direct = DirectDelivery(
            store=intake.store,
            routes=[Route.from_settings(r) for r in settings.routes],
            mailers=mailers,
            rules=rules,
            settings=settings.delivery,
            clock=self.clock,
            bus=bus,
            wake=wake,
            return_path=self._links.return_path,
            local_only=all(isinstance(m, LocalMailerSettings) for m in chosen),
            store_trouble=intake.store_trouble,  # the scheduler's, where it runs here
        )
        intake.handoff = self.direct

    def _own_mailers(
        self, chosen: Sequence[LocalMailerSettings | SmtpMailerSettings], limits: LimitStore
    ) -> dict[str, Mailer]:
        """An accept worker's mailers for delivery at once. A relay's connections count
        in the store's slots, with the primary's and every other worker's."""
        from postroom.delivery.mailers.mta.local import LocalMailer

        settings = self.settings
        mailers: dict[str, Mailer] = {}
        for m in chosen:
            if isinstance(m, LocalMailerSettings):
                mailers[m.name] = LocalMailer(
                    m, data_dir=settings.data_dir, clock=self.clock, mailbox=self.mailboxes
                )
                continue
            from postroom.delivery.mailers.mta.relay import SmtpMailer

            if self.slots is None:
                self.slots = _shared_slots(limits, self.clock)
            mailers[m.name] = SmtpMailer(
                m, hostname=settings.hostname, clock=self.clock, slots=self.slots
            )
        self._own = list(mailers.values())
        return mailers

    def _start_reporting(self) -> None:
        """The alert and report tasks, when configured (the primary only)."""
        from postroom.config.feedback import AlertKind

        settings = self.settings
        if self.alerts is not None and settings.alerts:
            self.tasks.start("alerts", self.alerts.run)
            if settings.workers > 1:  # the attempts of the mail they deliver at once
                from postroom.events.forward import AttemptReceiver

                self._attempts = AttemptReceiver(settings.data_dir, self.alerts.on_event)
                self._attempts.start()
            if any(AlertKind.DNS in a.on for a in settings.alerts) and self.store is not None:
                self.tasks.start("dns-check", self._dns_watch(self.alerts, self.store).run)
        if self.reports is not None and settings.report.enabled and settings.report.to:
            self.tasks.start("report", self.reports.run)

    def _dns_watch(self, alerts: Alerts, store: Store) -> DnsWatch:
        """The periodic check of the sending domains behind the ``dns`` alert."""
        from postroom.alerts.dnswatch import DnsWatch
        from postroom.mailauth.dkim import KeyRing
        from postroom.mailauth.doctor import DomainCheck, PolicyFetcher, discover_sending_addresses
        from postroom.resolver import DnsResolver

        settings = self.settings
        resolver = DnsResolver(settings.dns, rng=self.rng)
        keys = KeyRing(settings.data_dir)
        addresses = tuple(settings.delivery.sending_addresses) or tuple(
            discover_sending_addresses()
        )

        async def domains() -> list[str]:
            return sorted(set(await store.domains()) | set(keys.domains()))

        def check() -> DomainCheck:
            return DomainCheck(
                resolver=resolver,
                keys=keys,
                hostname=to_ascii_domain(settings.hostname),
                addresses=addresses,
                fetcher=PolicyFetcher(resolver, timeout=min(settings.dns.timeout, 10.0)),
                now=self.clock.time(),
                discovered=not settings.delivery.sending_addresses,
            )

        return DnsWatch(alerts, domains=domains, check=check)

    def workers_listen(self) -> None:
        """Every accept worker listens: the SMTP listeners, the primary's reserve, leave
        the sockets to them from now on, not from their next look, so a connection made
        after the ready line goes to a worker."""
        if self.smtp is not None:
            for listener in self.smtp.listeners:
                listener.look()

    async def _stop_api(self) -> None:
        """Its requests in flight finish within the grace (its server's own bound)."""
        if self.api is not None:
            await self.api.stop()
            self.api = None

    async def _stop_deliveries(self, grace: float) -> None:
        """At once and the scheduler's together: one grace for both."""
        parts = [p for p in (self.direct, self.scheduler) if p is not None]
        await asyncio.gather(*(part.stop(grace) for part in parts))

    async def _stop_listeners(self, grace: float) -> None:
        """SMTP, POP3 and IMAP at once: each stops accepting, then lets its sessions finish."""
        servers = [s for s in (self.smtp, self.pop3, self.imap) if s is not None]
        await asyncio.gather(*(server.stop(grace) for server in servers))
        self.smtp = self.pop3 = self.imap = None

    async def stop(self, workers: Awaitable[object] | None = None) -> None:
        """Two phases of at most ``limits.shutdown_grace`` each, then the store: the API
        and the listeners together (no new mail; requests and transactions in flight
        finish), then every delivery in flight together, at once and the scheduler's.
        With the last alerts' 10 s, a stop is bounded by twice the grace and a little
        more, which the systemd unit's stop timeout allows for. ``workers``: the accept
        workers' stop, under way (the same two phases); the writer serves them until it
        is done."""
        grace = self.settings.limits.shutdown_grace
        if self._control is not None:  # a stopping server no longer says it runs
            await self._control.close()
            self._control = None
        await asyncio.gather(self._stop_api(), self._stop_listeners(grace))
        # No new mail now: finish what was handed off, and what the scheduler started.
        await self._stop_deliveries(grace)
        if workers is not None:  # they deliver and commit until they have stopped, and
            await workers  # their last attempts reach the alerts before its socket closes
        self._close_hints()
        if self.retention is not None:
            self.retention.stop()
        await self._last_alerts(grace)
        await self.tasks.stop()
        await self._close_clients()
        await self._close_write_port()
        if self._inbound is not None:
            self._inbound.close()
            self._inbound = None
        if self.store is not None:
            await self.store.aclose()
            self.store = None

    def _close_hints(self) -> None:
        """The datagram sockets between the processes (wake-ups, workers' attempts)."""
        for hint in (self._wakeup, self._notifier, self._forwarder, self._attempts):
            if hint is not None:
                hint.close()
        self._wakeup = self._notifier = self._forwarder = self._attempts = None

    async def _last_alerts(self, grace: float) -> None:
        """The alerts raised by the last attempts go out before their task stops, within
        ``grace`` seconds and at most one webhook's timeout (a destination that does not
        answer must not hold the stop)."""
        alerts = self.alerts
        if alerts is None or not self.settings.alerts:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(grace, alerts.SEND_TIMEOUT)):
                await alerts.drained()

    async def _close_write_port(self) -> None:
        if self._write_port is not None:
            await self._write_port.aclose()
            self._write_port = None


def _send_windows(settings: Settings, mailers: Mapping[str, Mailer]) -> dict[str, SendWindow]:
    """The sending-limit windows of the provider API mailers among ``mailers``; their
    HTTP code (and httpx with it) is loaded only when one is configured."""
    if not any(isinstance(m, ProviderMailerSettings) for m in settings.mailers):
        return {}
    from postroom.delivery.mailers.api.http import HttpMailer

    return {n: m.window for n, m in mailers.items() if isinstance(m, HttpMailer)}


def _at_once_mailers(settings: Settings) -> list[LocalMailerSettings | SmtpMailerSettings]:
    """The mailers a process delivers through at once, the mail it accepts: ``local``
    with ``delivery.local_at_once``, ``smtp`` with ``delivery.relay_at_once``."""
    delivery = settings.delivery
    return [
        m
        for m in settings.mailers
        if (isinstance(m, LocalMailerSettings) and delivery.local_at_once)
        or (isinstance(m, SmtpMailerSettings) and delivery.relay_at_once)
    ]


def _shared_slots(store: LimitStore, clock: Clock) -> SharedSlots:
    """The store's connection slots. On a database of several nodes a dead node's slots
    end with their lease; on SQLite every holder is a process of this machine, so the
    slots of one that died (killed, then started again) are given back at once."""
    from postroom.delivery.slots import SharedSlots, dead_on_this_host

    local = not isinstance(store, QueueWatch)
    return SharedSlots(store, clock, dead=dead_on_this_host if local else None)


def _shares_slots(settings: Settings, store: Store) -> bool:
    """Whether a relay's connections are counted in the store's slots: other nodes
    deliver from the same database, or accept workers relay at once beside the primary."""
    relays_at_once = any(isinstance(m, SmtpMailerSettings) for m in _at_once_mailers(settings))
    return isinstance(store, QueueWatch) or (relays_at_once and settings.workers > 1)


def _import_accept_path(settings: Settings) -> None:
    """Before the workers are forked: import what an accept worker's start imports
    with these settings, so that those modules are pages every worker shares rather
    than its own (tests/e2e/test_workers.py checks that a worker imports nothing more)."""
    sqlite = sqlite_path(settings.storage_url) is not None
    names = ["postroom.store.sqlite" if sqlite else "postroom.store.postgres"]
    chosen = _at_once_mailers(settings)
    if chosen:
        names += ["postroom.delivery.direct", "postroom.delivery.settle"]
    if any(isinstance(m, LocalMailerSettings) for m in chosen):
        names.append("postroom.delivery.mailers.mta.local")
    if any(isinstance(m, SmtpMailerSettings) for m in chosen):
        names += ["postroom.delivery.mailers.mta.relay", "postroom.delivery.slots"]
    if chosen and settings.alerts:
        names.append("postroom.events.forward")
    if settings.inbound_auth.enabled:
        names += ["postroom.mailauth.inbound", "postroom.resolver"]
    if any(route.track is not None for route in settings.routes):
        names.append("postroom.delivery.tracking")
    with contextlib.suppress(ImportError):  # optional: the "fast" extra
        importlib.import_module("uvloop")
    for name in names:
        importlib.import_module(name)


def _route_tracking(settings: Settings) -> RouteTracking | None:
    """Intake's tracking per route; the route table's code is loaded only when a route
    has a ``track`` key (an accept worker would carry it for nothing otherwise)."""
    if all(route.track is None for route in settings.routes):
        return None
    from postroom.delivery.tracking import route_tracking

    return route_tracking(settings)


def _wake_on_mail(wake: Callable[[], None]) -> Callable[[object], None]:
    """A bus subscriber: what records events (a commit, an attempt) wakes ``wake``."""

    def subscriber(event: object) -> None:
        if isinstance(event, MessageQueued | DeliveryAttempt):
            wake()

    return subscriber


def _certificate_note(settings: Settings, cert: Path, *, changed: bool) -> str:
    if settings.tls.cert is not None:
        return str(cert)
    return f"{cert} ({'self-signed, made now' if changed else 'self-signed'})"


# The words after each SMTP port in the ready line: its role, and how TLS starts.
_ROLE_WORDS = {
    ListenerRole.MX: "mx",
    ListenerRole.SUBMISSION: "submission (STARTTLS)",
    ListenerRole.SUBMISSIONS: "submissions (TLS)",
    ListenerRole.POP3: "pop3 (STLS)",
    ListenerRole.POP3S: "pop3s (TLS)",
    ListenerRole.IMAP: "imap (STARTTLS)",
    ListenerRole.IMAPS: "imaps (TLS)",
}


def ready_line(server: Server, source: ConfigSource, *, users: bool, admins: bool = False) -> str:
    """The one line that says the server is up: what listens where, which certificate,
    configuration and data directory, the version, and the first step when no user exists.
    Parts are separated by "; " and keep their order (docs/configuration.md)."""
    settings = server.settings

    def ports(found: SmtpServer | Pop3Server | ImapServer | None) -> str:
        pairs = zip(found.specs, found.listeners, strict=True) if found is not None else ()
        return ", ".join(
            f"{_host_port(spec.address, lst.bound_port)} {_ROLE_WORDS[spec.role]}"
            for spec, lst in pairs
        )

    api = "off"
    if server.api is not None:
        api = f"http://{_host_port(*server.api.bound)}"
    dashboard = "off"
    if server.api is not None and settings.dashboard.enabled:
        dashboard = f"{api}/dashboard/" if admins else "off until an admin exists"
    workers = settings.workers
    processes = (
        "1 process" if workers == 1 else f"{workers + 1} processes ({workers} accept workers)"
    )
    parts = [f"postroom {_version()} ready: SMTP on {ports(server.smtp)}"]
    if server.pop3 is not None and server.pop3.listeners:
        parts.append(f"POP3 on {ports(server.pop3)}")
    if server.imap is not None and server.imap.listeners:
        parts.append(f"IMAP on {ports(server.imap)}")
    parts += [
        f"API {api}",
        f"dashboard {dashboard}",
        f"certificate {server.certificate}",
        f"config {source.describe()}",
        f"data in {settings.data_dir}",
        processes,
    ]
    if not users:
        config = f" --config {source.path}" if source.path is not None else ""
        parts.append(f"no users yet: postroom{config} user add USER@DOMAIN")
    return "; ".join(parts)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("postroom")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


async def _serve(
    settings: Settings,
    source: ConfigSource,
    *,
    init: bool,
    migrate: bool,
    shared: SharedSockets | None,
    workers: WorkerProcesses | None,
    certificate: CheckedCertificate | None,
) -> int:
    supervisor = None
    if workers is not None and shared is not None:
        supervisor = Supervisor(settings, workers, shared.shares)
    # Before the API starts: uvicorn puts back the signal handlers it finds (api/server.py).
    stop = _stop_on_signals()
    server = Server(
        settings,
        shared=shared,
        init=init,
        migrate=migrate,
        worker_counts=supervisor.counts if supervisor is not None else None,
        certificate=certificate,
    )
    if supervisor is not None:
        supervisor.report_to(server.readiness)  # /readyz: not ready until they listen
    _reload_on_sighup(server, supervisor)
    try:
        await server.start()
    except (OSError, PostroomError) as exc:
        if workers is not None:
            await workers.close()
        return _cannot_start(exc)
    code = 0
    if supervisor is not None:
        try:  # after start(): the certificate exists, the store is migrated
            await supervisor.start(server.tasks)
            server.workers_listen()
        except WorkerExited as exc:
            print(f"postroom: {exc}", file=sys.stderr)
            _log.error("%s", exc)
            code = 1
            stop.set()
    if code == 0:
        assert server.store is not None
        users = bool(await server.store.users())
        admins = bool(await server.store.admins())
        _log.info("%s", ready_line(server, source, users=users, admins=admins))
    await stop.wait()
    _log.info("postroom stopping")
    stopped = None
    if supervisor is not None:  # at once, beside the primary's own stop
        # Each worker's stop is the same two phases of a grace each.
        stopped = asyncio.ensure_future(supervisor.stop(2 * settings.limits.shutdown_grace))
    await server.stop(stopped)
    _log.info("postroom stopped")
    return code


async def _serve_worker(setup: WorkerSetup) -> int:
    shared = SharedSockets(setup.sockets, setup.shares, setup.shares.slot(setup.index))
    server = Server(setup.settings, shared=shared, accept_only=True, certificate=setup.certificate)
    _reload_on_sighup(server, None)
    try:
        await server.start()
    except Exception as exc:
        reason = str(exc) if isinstance(exc, PostroomError) else f"{type(exc).__name__}: {exc}"
        report_start(setup.report_fd, failed=reason)
        raise
    for handler in logging.getLogger("postroom").handlers:
        handler.flush()  # its start's lines come before the primary's ready line
    report_start(setup.report_fd)
    stop = _stop_on_signals()
    watch_primary(
        stop,
        server.reload_certificate,
        setup,
        lambda: server.process_counts.snapshot(server.smtp_sessions()),
    )
    await stop.wait()
    await server.stop()
    return 0


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


def _reload_on_sighup(server: Server, workers: Supervisor | None) -> None:
    """SIGHUP reloads the TLS certificate, here and in every accept worker. Installed
    before the server starts: a reload while starting is a no-op (the start reads the
    files), never the default action, which would end the process."""

    def reload() -> None:
        server.reload_certificate()
        if workers is not None:
            workers.reload_certificate()

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)


def _configure_logging(settings: Settings) -> None:
    # A file is reopened when logrotate moves it away; lines go out in batches.
    handler = BatchedLogHandler(settings.log.file)
    handler.setFormatter(log_formatter(settings.log.format))
    root = logging.getLogger("postroom")
    root.handlers[:] = [handler]
    root.setLevel(settings.log.level.upper())


def run(
    settings: Settings, source: ConfigSource, *, init: bool = False, migrate: bool = False
) -> int:
    """Run the server until SIGTERM/SIGINT; the process exit code. ``source``: where the
    settings came from (for the ready line); ``init``: make a new, empty store even if
    the data directory had one (``postroom serve --init``); ``migrate``: upgrade an older
    PostgreSQL schema (``postroom serve --migrate``)."""
    _configure_logging(settings)
    sockets: tuple[socket.socket, ...] | None = None
    shared: SharedSockets | None = None
    workers: WorkerProcesses | None = None
    if settings.workers > 1:
        try:
            sockets = tuple(bind_listeners(settings.listeners))
        except OSError as exc:
            return _cannot_start(exc)
    # Now, before the event loop, a thread or a store connection exists, so that forks
    # inherit none of them: the certificate's check in a child of its own (cryptography
    # stays out of the server's processes), then the workers.
    certificate = checked_in_child(settings)
    if sockets is not None:
        shares = accept_shares(settings)
        # The workers take SMTP; the primary only while none of them does.
        shared = SharedSockets(sockets, shares, shares.slot(0), reserve=True)
        _import_accept_path(settings)
        workers = WorkerProcesses.fork(settings, sockets, shares, run_worker, certificate)
    return _run_loop(
        _serve(
            settings,
            source,
            init=init,
            migrate=migrate,
            shared=shared,
            workers=workers,
            certificate=certificate,
        )
    )


def _cannot_start(exc: OSError | PostroomError) -> int:
    """Say in one line why the server cannot start; its exit code."""
    if isinstance(exc, OSError):
        print(f"postroom: cannot listen: {exc.strerror or exc}", file=sys.stderr)
    else:
        print(f"postroom: {exc}", file=sys.stderr)
    return 1


def run_worker(setup: WorkerSetup) -> int:
    """An accept worker, forked with its setup (``workerprocs.WorkerProcesses``)."""
    return _run_loop(_serve_worker(setup))


def run_restarted_worker(setup: WorkerSetup) -> int:
    """An accept worker started again as a fresh interpreter (``workerentry``)."""
    _configure_logging(setup.settings)
    return run_worker(setup)


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def _send_alert_email(
    intake: Intake, sender: str, recipients: Sequence[str], data: bytes
) -> None:
    """An alert by email: postroom's own mail, through intake like a DSN (so it is
    signed and logged as any other), to be delivered by the scheduler."""
    result = await intake.submit(
        Source(kind=SourceKind.DSN, protocol="local"),
        parse_address(sender),
        [Recipient(parse_address(r)) for r in recipients],
        data,
        principal=POSTROOM,
    )
    if not isinstance(result, Queued):
        raise OSError(f"intake refused the alert: {result}")


def _listening(listener: Listener) -> Check:
    """``/readyz``'s question for one listener: is its socket still accepting?"""

    def check() -> str | None:
        return None if listener.serving else "not accepting connections"

    return check
