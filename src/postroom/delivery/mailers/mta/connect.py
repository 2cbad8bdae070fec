"""Opening an outbound SMTP session, and the words for what can go wrong in one.

``Connector.open(peer)`` connects (TLS from the first byte for ``implicit``, RFC 8314),
reads the greeting, says EHLO (HELO when EHLO gets a 5xx: RFC 5321 3.2), runs STARTTLS
when offered or required (RFC 3207; EHLO again after it, 4.2), and logs in when the
peer has a username (RFC 4954: PLAIN, else LOGIN). The result is a ``Connection``: the
wire, the capabilities from the last EHLO, and facts for the log.

Every failure is a ``Failure`` with the ``Stage`` it happened at and its ``Fault``;
``transaction``'s table says what that means for the recipients.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum

from postroom.delivery.mailers.mta.wire import Wire
from postroom.delivery.outcome import RemoteInfo
from postroom.smtp import client as smtp
from postroom.smtp.client import Capabilities, ReplyError
from postroom.smtp.replies import Reply

__all__ = [
    "Connection",
    "Connector",
    "Failure",
    "Fault",
    "Peer",
    "Stage",
    "TlsMode",
    "guard",
    "reply_failure",
]


class Stage(StrEnum):
    """Where a transaction was; the values complete "... while <stage>"."""

    CONNECT = "connecting"
    GREETING = "receiving the initial server greeting"
    HELO = "sending EHLO/HELO"
    STARTTLS = "starting TLS"
    AUTH = "authenticating"
    MAIL = "sending MAIL FROM"
    RCPT = "sending RCPT TO"
    DATA = "sending message content"


class Fault(StrEnum):
    TRANSIENT = "4xx reply"
    PERMANENT = "5xx reply"
    NO_CONNECTION = "no connection"  # refused, unreachable
    TIMEOUT = "timeout"
    LOST = "lost connection"
    TLS = "TLS failure"  # handshake or certificate failure, or required TLS not offered
    LOCAL = "local refusal"  # we will not send it there: SIZE, SMTPUTF8


class TlsMode(StrEnum):
    NONE = "none"  # never
    OPPORTUNISTIC = "opportunistic"  # STARTTLS when offered, no certificate check (RFC 7435)
    STARTTLS = "starttls"  # STARTTLS or nothing is sent
    IMPLICIT = "implicit"  # TLS from the first byte (RFC 8314)


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


class Failure(Exception):
    def __init__(self, stage: Stage, fault: Fault, text: str, remote: Reply | None = None):
        super().__init__(text)
        self.stage, self.fault, self.text, self.remote = stage, fault, text, remote


def reply_failure(stage: Stage, reply: Reply, where: str) -> Failure:
    """A reply that was not the one hoped for."""
    if reply.is_transient:
        return Failure(stage, Fault.TRANSIENT, f"{where} said: {reply}", reply)
    if reply.is_permanent:
        return Failure(stage, Fault.PERMANENT, f"{where} said: {reply}", reply)
    # RFC 5321 4.2.1: anything else here is a protocol error; try again later.
    text = f"protocol error: unexpected reply from {where} while {stage}: {reply}"
    return Failure(stage, Fault.TRANSIENT, text, Reply(451, "4.5.0", text))


@contextmanager
def guard(stage: Stage, where: str) -> Iterator[None]:
    """The wire's exceptions -> a ``Failure`` at ``stage``."""
    try:
        yield
    except TimeoutError:
        text = f"conversation with {where} timed out while {stage}"
        raise Failure(stage, Fault.TIMEOUT, text) from None
    except ssl.SSLError as exc:
        raise Failure(stage, Fault.TLS, f"TLS failure with {where}: {reason(exc)}") from None
    except ReplyError as exc:
        # The stream cannot be trusted any more (the wire is no longer open): like a lost
        # connection, but the log says what was wrong.
        text = f"protocol error: malformed reply from {where} while {stage}: {exc}"
        raise Failure(stage, Fault.LOST, text) from None
    except OSError:
        raise Failure(stage, Fault.LOST, f"lost connection with {where} while {stage}") from None


def reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message or "certificate verification failed"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return str(exc) or type(exc).__name__


class Connection:
    """One open SMTP session between transactions (``Reusable`` for the pool)."""

    def __init__(
        self, wire: Wire, peer: Peer, remote: RemoteInfo, capabilities: Capabilities
    ) -> None:
        self.wire, self.peer, self.remote = wire, peer, remote
        self.capabilities = capabilities
        self.uses = 0

    @property
    def usable(self) -> bool:
        return self.wire.is_open

    async def aclose(self) -> None:
        """QUIT (RFC 5321 4.1.1.10), its reply awaited briefly, then close; never raises."""
        try:
            if self.wire.is_open:
                self.wire.write(smtp.QUIT)
                async with asyncio.timeout(5.0):
                    await self.wire.read_reply()
        except (OSError, ReplyError):
            pass
        finally:
            self.wire.abort()


class Connector:
    """Opens sessions for one mailer; TLS contexts are made once and shared."""

    def __init__(
        self, *, mailer: str, hostname: str, connect_timeout: float, command_timeout: float
    ) -> None:
        self._mailer, self._hostname = mailer, hostname
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
        wire = await self._connect(peer)
        try:
            await self._greeting(wire, peer)
            capabilities = await self._hello(wire, peer)
            if peer.tls in (TlsMode.OPPORTUNISTIC, TlsMode.STARTTLS):
                capabilities = await self._starttls(wire, peer, capabilities)
            if peer.username is not None:
                await self._login(wire, peer, capabilities)
        except BaseException:
            wire.abort()
            raise
        remote = RemoteInfo(
            self._mailer, peer.host, wire.peer_ip or peer.address, peer.port, wire.tls_version
        )
        return Connection(wire, peer, remote, capabilities)

    async def _connect(self, peer: Peer) -> Wire:
        where = peer.where
        context = self._context(peer) if peer.tls is TlsMode.IMPLICIT else None
        try:
            return await Wire.connect(
                peer.address,
                peer.port,
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

    async def _greeting(self, wire: Wire, peer: Peer) -> None:
        with guard(Stage.GREETING, peer.where):
            reply = await wire.read_reply()
        if reply.code != 220:
            raise reply_failure(Stage.GREETING, reply, peer.where)

    async def _command(self, wire: Wire, stage: Stage, where: str, line: bytes) -> Reply:
        with guard(stage, where):
            wire.write(line)
            return await wire.read_reply()

    async def _hello(self, wire: Wire, peer: Peer) -> Capabilities:
        where = peer.where
        reply = await self._command(wire, Stage.HELO, where, smtp.command("EHLO", self._hostname))
        if reply.code == 250:
            return Capabilities.from_ehlo(reply)
        if not reply.is_permanent or not wire.is_open:
            raise reply_failure(Stage.HELO, reply, where)
        # RFC 5321 3.2: an old server that knows no EHLO (500, 502) may know HELO.
        helo = await self._command(wire, Stage.HELO, where, smtp.command("HELO", self._hostname))
        if helo.code != 250:
            raise reply_failure(Stage.HELO, helo, where)
        return smtp.HELO_CAPABILITIES

    async def _starttls(self, wire: Wire, peer: Peer, capabilities: Capabilities) -> Capabilities:
        required, where = peer.tls is TlsMode.STARTTLS, peer.where
        if not capabilities.starttls:
            if required:
                text = f"TLS is required, but was not offered by {where}"
                raise Failure(Stage.STARTTLS, Fault.TLS, text)
            return capabilities
        reply = await self._command(wire, Stage.STARTTLS, where, smtp.STARTTLS)
        if reply.code != 220:
            if required:
                text = f"STARTTLS refused by {where}: {reply}"
                raise Failure(Stage.STARTTLS, Fault.TLS, text)
            return capabilities  # RFC 3207 4: the client may go on in the clear
        try:
            await wire.start_tls(self._context(peer), peer.host)
        except (OSError, ReplyError) as exc:  # SSLError, TimeoutError, a lost connection
            text = f"TLS handshake with {where} failed: {reason(exc)}"
            raise Failure(Stage.STARTTLS, Fault.TLS, text) from None
        return await self._hello(wire, peer)  # RFC 3207 4.2: forget what was said in the clear

    async def _login(self, wire: Wire, peer: Peer, capabilities: Capabilities) -> None:
        username, password, where = peer.username or "", peer.password or "", peer.where
        if "PLAIN" in capabilities.auth:
            steps = [(smtp.auth_plain(username, password), 235)]
        elif "LOGIN" in capabilities.auth:
            steps = [
                (smtp.command("AUTH", "LOGIN"), 334),
                (smtp.base64_line(username), 334),
                (smtp.base64_line(password), 235),
            ]
        else:
            offered = " ".join(sorted(capabilities.auth)) or "none"
            text = f"cannot authenticate at {where}: no common AUTH mechanism (offered: {offered})"
            raise Failure(Stage.AUTH, Fault.PERMANENT, text)
        for line, expected in steps:
            reply = await self._command(wire, Stage.AUTH, where, line)
            if reply.code == expected:
                continue
            if reply.is_transient or reply.is_permanent:
                fault = Fault.TRANSIENT if reply.is_transient else Fault.PERMANENT
                text = f"authentication failed at {where}: {reply}"
                raise Failure(Stage.AUTH, fault, text, reply)
            raise reply_failure(Stage.AUTH, reply, where)  # a protocol error; we hang up

    def _context(self, peer: Peer) -> ssl.SSLContext:
        key = (peer.verify, peer.ca_file)
        if key not in self._contexts:
            context = ssl.create_default_context(cafile=peer.ca_file)
            if not peer.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._contexts[key] = context
        return self._contexts[key]
