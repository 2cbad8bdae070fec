"""The composition root: Settings -> store, bus, directory, intake, listeners; signals; shutdown.

Nothing else in postroom builds long-lived objects; everything is passed in from here.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import sys
from collections.abc import Awaitable, Callable

from postroom.clock import Clock, SystemClock
from postroom.config.settings import Settings
from postroom.delivery.localdomains import LocalDomains
from postroom.delivery.mailers.build import MailerDeps, build_mailer
from postroom.delivery.retention import Retention
from postroom.delivery.router import Router, RouteTable
from postroom.delivery.scheduler import Scheduler
from postroom.directory.users import Users
from postroom.events import Bus
from postroom.events.logline import LogLineWriter
from postroom.intake import Intake, Principal
from postroom.mailauth.dkim import DkimSigner, KeyRing
from postroom.mailauth.inbound import InboundChecker
from postroom.net.throttle import FailureThrottle
from postroom.net.tls import ensure_certificate, server_context
from postroom.net.wakeup import WakeupListener
from postroom.resolver import DnsResolver
from postroom.smtp.server import SmtpServer
from postroom.store import Store, open_store

__all__ = ["Server", "run"]

_log = logging.getLogger("postroom")


def _authenticator(users: Users) -> Callable[[str, str], Awaitable[Principal | None]]:
    async def authenticate(username: str, password: str) -> Principal | None:
        record = await users.verify(username, password)
        if record is None:
            return None
        return Principal(record.address, record.sender_domains)

    return authenticate


class Server:
    """Everything `postroom serve` runs, started and stopped as one.

    ``deliver=False`` builds the delivery engine without running its loop, so a test can
    drive ``scheduler.run_once()`` with its own clock."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        deliver: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.deliver = deliver
        self.store: Store | None = None
        self.smtp: SmtpServer | None = None
        self.scheduler: Scheduler | None = None
        self.retention: Retention | None = None
        self._router: Router | None = None
        self._wakeup: WakeupListener | None = None
        self._inbound: InboundChecker | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        cert, key = ensure_certificate(settings)
        context = server_context(cert, key, settings.tls.min_version)
        self.store = store = await open_store(settings.storage_url)
        if settings.inbound_auth.enabled:
            self._inbound = InboundChecker(
                settings.inbound_auth, DnsResolver(settings.dns), settings.hostname
            )
        bus = Bus()
        bus.subscribe(LogLineWriter())
        intake = Intake(
            store=store,
            clock=self.clock,
            hostname=settings.hostname,
            spool_dir=settings.data_dir / "spool",
            spool_memory=settings.limits.spool_memory,
            max_message_size=settings.limits.max_message_size,
            bus=bus,
            signer=DkimSigner(KeyRing(settings.data_dir)),
            inbound=self._inbound,
        )
        self._start_delivery(store, intake, bus)
        auth = settings.limits.auth
        self.smtp = SmtpServer(
            settings,
            intake=intake,
            authenticate=_authenticator(Users(store)),
            auth_throttle=FailureThrottle(
                self.clock, max_failures=auth.max_failures, window=auth.window
            ),
            ssl_context=context,
            bus=bus,
        )
        try:
            await self.smtp.start()
        except OSError:
            await self.stop()
            raise
        if self.deliver:
            assert self.scheduler is not None and self.retention is not None
            self._wakeup = WakeupListener(settings.data_dir, self.scheduler.wake)
            self._wakeup.start()
            self._tasks = [
                asyncio.create_task(self.scheduler.run(), name="scheduler"),
                asyncio.create_task(self.retention.run(), name="retention"),
            ]

    def _start_delivery(self, store: Store, intake: Intake, bus: Bus) -> None:
        settings = self.settings
        deps = MailerDeps(
            resolver=DnsResolver(settings.dns, rng=self.rng),
            hostname=settings.hostname,
            clock=self.clock,
            rng=self.rng,
            data_dir=settings.data_dir,
        )
        mailers = {m.name: build_mailer(m, deps) for m in settings.mailers}
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
        )
        self.retention = Retention(store, settings.retention, self.clock)

    async def stop(self) -> None:
        """SMTP first (no new mail, transactions in flight finish), then delivery, then
        the store."""
        grace = self.settings.limits.shutdown_grace
        if self.smtp is not None:
            await self.smtp.stop(grace)
            self.smtp = None
        if self._wakeup is not None:
            self._wakeup.close()
            self._wakeup = None
        if self.retention is not None:
            self.retention.stop()
        if self.scheduler is not None:
            await self.scheduler.stop(grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._router is not None:
            await self._router.aclose()
            self._router = None
        if self._inbound is not None:
            self._inbound.close()
            self._inbound = None
        if self.store is not None:
            await self.store.aclose()
            self.store = None


async def _serve(settings: Settings) -> int:
    server = Server(settings)
    try:
        await server.start()
    except OSError as exc:
        print(f"postroom: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    ports = ", ".join(
        f"{lst.address}:{lst.bound_port}" for lst in (server.smtp.listeners if server.smtp else [])
    )
    _log.info("postroom ready: SMTP on %s, data in %s", ports, settings.data_dir)
    await stop.wait()
    _log.info("postroom stopping")
    await server.stop()
    _log.info("postroom stopped")
    return 0


def _configure_logging(settings: Settings) -> None:
    handler: logging.Handler
    if settings.log.file is not None:
        handler = logging.FileHandler(settings.log.file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("postroom")
    root.handlers[:] = [handler]
    root.setLevel(settings.log.level.upper())


def run(settings: Settings) -> int:
    """Run the server until SIGTERM/SIGINT; the process exit code."""
    _configure_logging(settings)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_serve(settings))
    return uvloop.run(_serve(settings))
