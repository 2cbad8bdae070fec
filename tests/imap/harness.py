"""An IMAP listener in-process over a real Maildir, real sockets and real TLS, on its own
event loop thread, for imaplib (which blocks)."""

from __future__ import annotations

import asyncio
import imaplib
import ssl
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from postroom.clock import SystemClock
from postroom.imap.connection import ImapConfig
from postroom.imap.session import ImapContext, ImapSession
from postroom.intake import Principal
from postroom.intake.policy import SenderRights
from postroom.mailbox import Maildir
from postroom.net.listener import Listener
from postroom.net.stream import Stream
from postroom.net.throttle import ConnectionCounter, FailureThrottle
from postroom.net.tls import ServerTls
from postroom.store.sqlite.limits import LocalLimits
from tests.support.servers import client_context, loopback_settings

T = TypeVar("T")

USERS = {"ann@example.test": "ann-pass", "bob@example.test": "bob-pass"}


async def _authenticate(username: str, password: str) -> Principal | None:
    if USERS.get(username) != password:
        return None
    return Principal(username, SenderRights(frozenset(), local_domains=True))


class ImapHarness:
    def __init__(
        self,
        data_dir: Path,
        *,
        implicit_tls: bool = False,
        plaintext_login: bool = False,
        quota: int = 0,
        max_message_size: int = 1024 * 1024,
        max_failures: int = 5,
        autologout: float = 1800.0,
    ) -> None:
        self.data_dir = data_dir
        settings = loopback_settings(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.tls = ServerTls(settings)
        self.mailboxes = Maildir(data_dir / "mail", hostname="mail.test", default_quota=quota)
        self.counts = LocalLimits(None)  # the failure counts of one process
        self.throttle = FailureThrottle(
            self.counts, SystemClock(), max_failures=max_failures, window=60
        )
        self.implicit_tls = implicit_tls
        self.context = ImapContext(
            role="imaps" if implicit_tls else "imap",
            config=ImapConfig(
                "mail.test",
                max_message_size=max_message_size,
                starttls_available=not implicit_tls,
                plaintext_login=plaintext_login,
            ),
            mailboxes=self.mailboxes,
            authenticate=_authenticate,
            auth_throttle=self.throttle,
            ssl_context=self.tls.context,
            autologout=autologout,
        )
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.sessions: set[ImapSession] = set()
        self.listener: Listener | None = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _handle(self, stream: Stream) -> None:
        session = ImapSession(self.context, stream)
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)

    async def _start(self) -> None:
        self.listener = Listener(
            address="127.0.0.1",
            port=0,
            handler=self._handle,
            counter=ConnectionCounter(max_total=2000, max_per_ip=2000),
            refusal=b"* BYE too many\r\n",
            ssl_context=self.tls.context if self.implicit_tls else None,
        )
        await self.listener.start()

    async def _stop(self) -> None:
        assert self.listener is not None
        self.listener.stop_accepting()
        self.listener.cancel_connections()
        await self.listener.wait_closed()
        # every connection's task (its socket closing, after the session) ends first
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if others:
            await asyncio.wait(others, timeout=10)
        await self.counts.aclose()

    def start(self) -> ImapHarness:
        self._thread.start()
        self.call(self._start())
        return self

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    @property
    def port(self) -> int:
        assert self.listener is not None
        return self.listener.bound_port

    def client_context(self) -> ssl.SSLContext:
        return client_context(self.data_dir)

    def connect(self, *, starttls: bool = True) -> imaplib.IMAP4:
        if self.implicit_tls:
            return imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=self._hostname_free())
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=30)
        if starttls:
            client.starttls(ssl_context=self._hostname_free())
        return client

    def _hostname_free(self) -> ssl.SSLContext:
        context = self.client_context()
        context.check_hostname = False  # the certificate names mail.test; we dial 127.0.0.1
        return context

    def login(self, user: str = "ann@example.test") -> imaplib.IMAP4:
        client = self.connect()
        client.login(user, USERS[user])
        return client

    def deliver(self, data: bytes, user: str = "ann") -> None:
        self.mailboxes.deliver_sync(
            "example.test", user, data, sender="s@example.org", recipient=f"{user}@example.test"
        )
