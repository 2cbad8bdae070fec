"""Loopback SMTP peers for delivery tests: aiosmtpd servers with one behaviour each.

    with SmtpPeer("127.0.0.2", reject_rcpt={"bob@example.test": "550 5.1.1 No such user"}) as peer:
        ...deliver to 127.0.0.2:peer.port...
        assert peer.received[0].recipients == ("alice@example.test",)

Behaviours (keyword arguments, freely combined):

- accept (the default): every message is recorded in ``received``;
- ``greylist=True``: the first RCPT of each (sender, recipient) gets 451 4.7.1, later 250;
- ``reject_rcpt={address: reply}``, ``mail_reply=...``, ``data_reply=...``: fixed replies;
- ``greeting="554 5.7.1 Go away"``: a non-220 greeting, then the connection is closed;
- ``drop_at=stage`` / ``stall_at=stage`` with stage in "connect", "ehlo", "mail", "rcpt",
  "data": close the connection without a reply, or never answer (client timeouts);
- ``starttls=ctx`` (with ``require_starttls``), ``implicit_tls=ctx``, ``users={name: pw}``
  (AUTH, offered over TLS only; required with ``starttls``): a relay. ``PeerCA`` makes the
  server contexts and the CA file a client trusts;
- ``size=n``: advertise and enforce ``SIZE n`` (default 10 MiB; None: no SIZE).

``hold()`` makes DATA wait until ``release()`` (to observe concurrency); ``connections``,
``active`` and ``max_active`` count sessions, ``mail_commands`` the MAIL commands seen;
``disconnect_all()`` cuts open sessions. A peer runs its own loop in a thread, so it serves
sync and async tests alike; ``eventually(...)`` waits for its state from async tests.
``Peers`` starts several and stops them all (a three-line fixture), and
``shared_port(ips)`` finds one port free on several loopback addresses (the ``mx``
mailer uses one port for every host).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["PeerCA", "Peers", "Received", "SmtpPeer", "eventually", "shared_port"]

Stage = Literal["connect", "ehlo", "mail", "rcpt", "data"]


@dataclass(frozen=True)
class Received:
    sender: str
    recipients: tuple[str, ...]
    data: bytes
    mail_options: tuple[str, ...]
    rcpt_options: tuple[str, ...]
    helo: str | None
    tls: str | None  # e.g. "TLSv1.3"; None in the clear
    login: str | None  # the AUTH user


@dataclass
class PeerCA:
    """A trustme CA: server contexts for peers, and its PEM file for ``ca_file``."""

    directory: Path
    ca: trustme.CA = field(default_factory=trustme.CA)

    @property
    def ca_file(self) -> str:
        path = self.directory / f"ca-{id(self.ca)}.pem"
        if not path.exists():
            self.ca.cert_pem.write_to_path(str(path))
        return str(path)

    def server_context(self, *names: str) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*(names or ("localhost",))).configure_cert(context)
        return context


def shared_port(hosts: Iterable[str]) -> int:
    """A TCP port that is free on every one of ``hosts`` (checked by binding it)."""
    hosts = list(hosts)
    for _ in range(50):
        socks = [socket.socket()]
        try:
            socks[0].bind((hosts[0], 0))
            port = socks[0].getsockname()[1]
            for host in hosts[1:]:
                sock = socket.socket()
                socks.append(sock)
                sock.bind((host, port))
            return int(port)
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no common free port on {hosts}")


class _State(Session):
    # aiosmtpd sets its deprecated ``login_data`` on every successful AUTH; the warning
    # would be an error under pytest's filterwarnings, raised in the peer's thread.
    login_data: Any = None


class _Session(SMTP):
    def __init__(self, peer: SmtpPeer, **kwargs: Any) -> None:
        super().__init__(peer, **kwargs)
        self._peer = peer

    def _create_session(self) -> Session:
        return _State(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # not the second call that STARTTLS makes
            self._peer._opened(transport)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        transport = self._original_transport or self.transport
        super().connection_lost(error)
        self._peer._closed(transport)


class _Raw(asyncio.Protocol):
    """The peers that speak no SMTP: a fixed greeting, a hang-up, or silence."""

    def __init__(self, peer: SmtpPeer) -> None:
        self._peer = peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._peer._opened(transport)
        assert isinstance(transport, asyncio.Transport)
        if self._peer.greeting is not None:
            transport.write(self._peer.greeting.encode() + b"\r\n")
            transport.close()
        elif self._peer.drop_at == "connect":
            transport.abort()
        # stall: say nothing, keep the connection open

    def connection_lost(self, exc: Exception | None) -> None:
        self._peer._closed(self._transport)


class SmtpPeer:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        hostname: str = "peer.test",
        greylist: bool = False,
        reject_rcpt: Mapping[str, str] | None = None,
        mail_reply: str | None = None,
        data_reply: str | None = None,
        greeting: str | None = None,
        drop_at: Stage | None = None,
        stall_at: Stage | None = None,
        starttls: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        implicit_tls: ssl.SSLContext | None = None,
        users: Mapping[str, str] | None = None,
        size: int | None = 10 * 1024 * 1024,
        smtputf8: bool = True,
    ) -> None:
        self.host, self.port, self.hostname = host, port, hostname
        self.greylist, self.reject_rcpt = greylist, dict(reject_rcpt or {})
        self.mail_reply, self.data_reply, self.greeting = mail_reply, data_reply, greeting
        self.drop_at, self.stall_at = drop_at, stall_at
        self._starttls, self._require_starttls = starttls, require_starttls
        self._implicit_tls, self.users = implicit_tls, dict(users or {})
        self._size, self._smtputf8 = size, smtputf8
        self.received: list[Received] = []
        self.mail_commands = 0
        self.connections = self.active = self.max_active = self.held = 0
        self._seen: set[tuple[str, str]] = set()
        self._transports: set[asyncio.BaseTransport] = set()  # each one an asyncio.Transport
        self._server: asyncio.Server | None = None
        self._gate: asyncio.Event | None = None
        self._never: asyncio.Future[None] | None = None

    # -- life ------------------------------------------------------------------------------
    _loop: asyncio.AbstractEventLoop
    _thread: threading.Thread

    def start(self) -> SmtpPeer:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> SmtpPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def hold(self) -> None:
        """DATA waits (after the message is read, before the reply) until ``release()``."""
        self._call(self._close_gate)

    def release(self) -> None:
        self._call(lambda: self._gate.set() if self._gate else None)

    def _call(self, function: Callable[[], object]) -> None:
        async def run() -> None:
            function()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    async def _listen(self) -> None:
        self._never = self._loop.create_future()
        raw = self.greeting is not None or "connect" in (self.drop_at, self.stall_at)
        factory = (lambda: _Raw(self)) if raw else self._session
        self._server = await self._loop.create_server(
            factory, self.host, self.port, ssl=self._implicit_tls, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        assert self._server is not None and self._never is not None
        self._never.cancel()
        if self._gate is not None:
            self._gate.set()
        self._server.close()
        for transport in list(self._transports):
            cast(asyncio.Transport, transport).abort()
        await asyncio.sleep(0)  # let the aborts close their sockets
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _session(self) -> SMTP:
        return _Session(
            self,
            hostname=self.hostname,
            data_size_limit=self._size,
            enable_SMTPUTF8=self._smtputf8,
            tls_context=self._starttls,
            require_starttls=self._require_starttls,
            auth_required=bool(self.users) and self._starttls is not None,
            auth_require_tls=self._implicit_tls is None,
            authenticator=self._authenticate if self.users else None,
            loop=self._loop,
        )

    def _close_gate(self) -> None:
        self._gate = asyncio.Event()

    def disconnect_all(self) -> None:
        """Cut every open connection (as a server that times idle clients out does)."""

        def cut() -> None:
            for transport in list(self._transports):
                cast(asyncio.Transport, transport).abort()

        self._call(cut)

    def _opened(self, transport: asyncio.BaseTransport | None) -> None:
        self.connections += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        if transport is not None:
            self._transports.add(transport)

    def _closed(self, transport: asyncio.BaseTransport | None) -> None:
        self.active -= 1
        if transport is not None:
            self._transports.discard(transport)

    # -- aiosmtpd hooks --------------------------------------------------------------------
    async def _at(self, stage: Stage, server: SMTP) -> None:
        if self.drop_at == stage:
            cast(asyncio.Transport, server.transport).abort()
        if stage in (self.stall_at, self.drop_at):
            assert self._never is not None
            await asyncio.shield(self._never)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        await self._at("ehlo", server)
        session.host_name = hostname
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.mail_commands += 1
        await self._at("mail", server)
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        await self._at("rcpt", server)
        if address in self.reject_rcpt:
            return self.reject_rcpt[address]
        if self.greylist and (key := (envelope.mail_from or "", address)) not in self._seen:
            self._seen.add(key)
            return "451 4.7.1 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self._at("data", server)
        if self._gate is not None:
            self.held += 1
            await self._gate.wait()
            self.held -= 1
        if self.data_reply is not None:
            return self.data_reply
        assert server.transport is not None
        ssl_object = server.transport.get_extra_info("ssl_object")
        content = envelope.original_content or b""
        self.received.append(
            Received(
                sender=envelope.mail_from or "",
                recipients=tuple(envelope.rcpt_tos),
                data=content if isinstance(content, bytes) else content.encode(),
                mail_options=tuple(envelope.mail_options),
                rcpt_options=tuple(envelope.rcpt_options),
                helo=session.host_name,
                tls=ssl_object.version() if ssl_object is not None else None,
                login=session.auth_data if isinstance(session.auth_data, str) else None,
            )
        )
        return "250 2.0.0 OK: queued"

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            login, password = data.login.decode(), data.password.decode()
            if self.users.get(login) == password:
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)


class Peers:
    """Starts peers and stops them all at the end: ``with Peers() as peers:``."""

    def __init__(self) -> None:
        self._started: list[SmtpPeer] = []

    def start(self, host: str = "127.0.0.1", port: int = 0, **behaviour: Any) -> SmtpPeer:
        peer = SmtpPeer(host, port, **behaviour).start()
        self._started.append(peer)
        return peer

    def stop_all(self) -> None:
        while self._started:
            self._started.pop().stop()

    def __enter__(self) -> Peers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until ``condition()`` holds: polled, as it is about another thread's state."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 (no event crosses the thread boundary)
            await asyncio.sleep(0.005)
