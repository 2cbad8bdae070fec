"""The composition root: Settings -> store, bus, directory, intake, listeners; signals; shutdown.

Nothing else in postroom builds long-lived objects; everything is passed in from here.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from postroom.clock import Clock, SystemClock
from postroom.config.settings import Settings
from postroom.directory.users import Users
from postroom.events import Bus
from postroom.events.logline import LogLineWriter
from postroom.intake import Intake, Principal
from postroom.net.throttle import FailureThrottle
from postroom.net.tls import ensure_certificate, server_context
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
    """Everything `postroom serve` runs, started and stopped as one."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.store: Store | None = None
        self.smtp: SmtpServer | None = None

    async def start(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        cert, key = ensure_certificate(settings)
        context = server_context(cert, key, settings.tls.min_version)
        self.store = store = await open_store(settings.storage_url)
        bus = Bus()
        bus.subscribe(LogLineWriter())
        intake = Intake(
            store=store,
            clock=self.clock,
            hostname=settings.hostname,
            spool_dir=settings.data_dir / "spool",
            spool_memory=settings.limits.spool_memory,
            max_message_size=settings.limits.max_message_size,
        )
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

    async def stop(self) -> None:
        if self.smtp is not None:
            await self.smtp.stop(self.settings.limits.shutdown_grace)
            self.smtp = None
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
