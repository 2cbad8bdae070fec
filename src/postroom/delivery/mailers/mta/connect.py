"""The asyncio driver of the outbound SMTP client: a socket for a ``ClientConnection``.

``Connector.open(peer)`` connects (TLS from the first byte for ``implicit``, RFC 8314)
and lets the core (``postroom.smtp.clientconnection``) open the session: greeting,
EHLO/HELO, STARTTLS, AUTH. Here only bytes move: what the core decided to send is
written, what arrives is handed to it, the TLS handshake is done when it asks, and
timeouts and lost connections are reported to it. The result is a ``Connection``: the
wire, the core, and facts for the log.

Every failure is a ``Failure`` with the ``Stage`` it happened at and its ``Fault``
(``postroom.smtp.trouble``, whose table says what that means for the recipients).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field, replace

from postroom.delivery.mailers.mta.wire import Wire
from postroom.delivery.outcome import RemoteInfo
from postroom.smtp.clientconnection import (
    ClientConfig,
    ClientConnection,
    ClientEvent,
    Closed,
    Failed,
    Ready,
    StartTls,
    TlsMode,
)
from postroom.smtp.events import NEED_DATA
from postroom.smtp.trouble import Failure, Fault, Stage

__all__ = [
    "Connection",
    "Connector",
    "Failure",
    "Fault",
    "Peer",
    "Stage",
    "TlsMode",
]

_QUIT_TIMEOUT = 5.0  # seconds for the reply to QUIT before the socket is closed anyway


@dataclass(frozen=True, slots=True)
class Peer:
    host: str  # the name: for logs, SNI and the certificate check
    address: str  # where to connect: an IP address, or the name again
    port: int
    tls: TlsMode = TlsMode.OPPORTUNISTIC
    verify: bool = False  # check the certificate chain and name (STARTTLS, IMPLICIT)
    ca_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[object, ...]:
        """Connections are shared only between peers with equal keys."""
        return (
            self.host,
            self.address,
            self.port,
            self.tls,
            self.verify,
            self.ca_file,
            self.username,
            hash(self.password),  # a changed password must not reuse the old login
        )

    @property
    def where(self) -> str:
        name = self.host if self.address == self.host else f"{self.host}[{self.address}]"
        return f"{name}:{self.port}"


def reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message or "certificate verification failed"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return str(exc) or type(exc).__name__


class Connection:
    """One open SMTP session (``Reusable`` for the pool): the wire and the core."""

    def __init__(self, wire: Wire, core: ClientConnection, peer: Peer) -> None:
        self.wire, self.core, self.peer = wire, core, peer
        self.remote = RemoteInfo("", peer.host, wire.peer_ip or peer.address, peer.port)
        self.uses = 0

    @property
    def usable(self) -> bool:
        return self.wire.is_open and self.core.usable

    async def next_event(self) -> ClientEvent:
        """Move bytes until the core has something to say."""
        core, wire = self.core, self.wire
        while True:
            event = core.next_event()
            if data := core.data_to_send():
                try:
                    await wire.send(data)
                except OSError as exc:
                    core.fail(*_fault(exc))
            if event is not NEED_DATA:
                return event
            try:
                await wire.wait()
            except OSError as exc:
                core.fail(*_fault(exc))

    def abort(self) -> None:
        self.wire.abort()

    async def aclose(self) -> None:
        """QUIT (RFC 5321 4.1.1.10), its reply awaited briefly, then close; never raises."""
        try:
            if self.usable:
                self.core.quit()
                async with asyncio.timeout(_QUIT_TIMEOUT):
                    while not isinstance(await self.next_event(), Closed):
                        pass
        except OSError:
            pass
        finally:
            self.wire.abort()


def _fault(exc: OSError) -> tuple[Fault, str]:
    if isinstance(exc, TimeoutError):
        return Fault.TIMEOUT, ""
    if isinstance(exc, ssl.SSLError):
        return Fault.TLS, reason(exc)
    return Fault.LOST, ""


class Connector:
    """Opens sessions for one mailer; TLS contexts are made once and shared."""

    def __init__(
        self,
        *,
        mailer: str,
        hostname: str,
        connect_timeout: float,
        command_timeout: float,
        chunking: bool,
    ) -> None:
        self._mailer, self._hostname, self._chunking = mailer, hostname, chunking
        self._connect_timeout, self._timeout = connect_timeout, command_timeout
        self._contexts: dict[tuple[bool, str | None], ssl.SSLContext] = {}

    async def open(self, peer: Peer) -> Connection:
        try:
            return await self._open(peer)
        except Failure as failure:
            # Opportunistic TLS must never make delivery worse than plain text (RFC 7435):
            # when the handshake fails, try the same host once more without it.
            if failure.fault is not Fault.TLS or peer.tls is not TlsMode.OPPORTUNISTIC:
                raise
        return await self._open(replace(peer, tls=TlsMode.NONE))

    async def _open(self, peer: Peer) -> Connection:
        config = ClientConfig(
            self._hostname, peer.where, peer.tls, peer.username, peer.password, self._chunking
        )
        core = ClientConnection(config)
        wire = await self._connect(peer, core)
        connection = Connection(wire, core, peer)
        try:
            while not isinstance(event := await connection.next_event(), Ready):
                if isinstance(event, Failed):
                    raise event.failure
                if not isinstance(event, StartTls):  # the core reports a failure first
                    raise Failure(Stage.GREETING, Fault.LOST, f"{peer.where} closed")
                try:
                    await wire.start_tls(self._context(peer), peer.host)
                except OSError as exc:  # SSLError, TimeoutError, a lost connection
                    core.tls_failed(reason(exc))
                else:
                    core.tls_started()
        except BaseException:
            wire.abort()
            raise
        connection.remote = RemoteInfo(
            self._mailer, peer.host, wire.peer_ip or peer.address, peer.port, wire.tls_version
        )
        return connection

    async def _connect(self, peer: Peer, core: ClientConnection) -> Wire:
        where = peer.where
        context = self._context(peer) if peer.tls is TlsMode.IMPLICIT else None
        try:
            return await Wire.connect(
                peer.address,
                peer.port,
                core.receive_data,
                connect_timeout=self._connect_timeout,
                command_timeout=self._timeout,
                context=context,
                server_hostname=peer.host,
            )
        except TimeoutError:
            raise Failure(Stage.CONNECT, Fault.TIMEOUT, f"connect to {where}: timed out") from None
        except ssl.SSLError as exc:  # implicit TLS
            text = f"TLS with {where} failed: {reason(exc)}"
            raise Failure(Stage.CONNECT, Fault.TLS, text) from None
        except ConnectionRefusedError:
            text = f"Connection refused by {where}"
            raise Failure(Stage.CONNECT, Fault.NO_CONNECTION, text) from None
        except OSError as exc:
            text = f"connect to {where}: {exc.strerror or reason(exc)}"
            raise Failure(Stage.CONNECT, Fault.NO_CONNECTION, text) from None

    def _context(self, peer: Peer) -> ssl.SSLContext:
        key = (peer.verify, peer.ca_file)
        if key not in self._contexts:
            context = ssl.create_default_context(cafile=peer.ca_file)
            if not peer.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._contexts[key] = context
        return self._contexts[key]
