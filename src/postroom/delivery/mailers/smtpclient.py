"""One outbound SMTP transaction on aiosmtplib, and the one table that judges its results.

``SmtpClient.deliver(peer, message, recipients)`` takes a pooled connection (probed with
RSET) or opens one: connect, greeting, EHLO (HELO if EHLO is refused), STARTTLS when
offered or required (RFC 3207), AUTH when configured (RFC 4954); then MAIL FROM with
SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531) and the DSN parameters (RFC 3461)
the peer supports, one RCPT per recipient, DATA. It returns one ``Outcome`` per recipient.

Every failure becomes a (stage, fault) pair and ``CLASSIFICATION`` below says what it
means, as Postfix's smtp_trouble.c does: deliver, defer or bounce; one recipient or all
that are left; whether another mailer may do better (``failover``); whether the ``mx``
mailer should try the next host (``next_host``). Recipients settled by such a fault are
listed in ``Transaction.retry`` when another host may still take them.

RCPT commands go one at a time, not pipelined (RFC 2920): aiosmtplib pairs one read with
each command and drops replies that arrive while none is awaited, so a pipelined batch
would need a reader of our own. One round trip per recipient is the cost.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Final

import aiosmtplib

from postroom.clock import Clock
from postroom.delivery.mailers.pool import ConnectionPool
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Disposition, Outcome, RemoteInfo
from postroom.smtp.grammar import xtext_encode
from postroom.smtp.replies import Reply

__all__ = [
    "CLASSIFICATION",
    "Connection",
    "Fault",
    "Peer",
    "Rule",
    "Scope",
    "SmtpClient",
    "Stage",
    "TlsMode",
    "Transaction",
    "classify",
    "mail_parameters",
    "parse_reply",
    "rcpt_parameters",
]

DELIVERED, DEFERRED, BOUNCED = Disposition.DELIVERED, Disposition.DEFERRED, Disposition.BOUNCED


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


class Scope(StrEnum):
    RECIPIENT = "recipient"  # the one recipient the reply was about
    ALL = "all"  # every recipient not settled yet


@dataclass(frozen=True, slots=True)
class Rule:
    disposition: Disposition
    scope: Scope
    failover: bool  # another mailer in the chain could succeed
    next_host: bool  # mx: another address or MX host could succeed
    ours: tuple[int, str] | None = None  # (code, enhanced) of our own reply; None: the remote's


ONE, ALL = Scope.RECIPIENT, Scope.ALL
# (stage, fault) first, then (None, fault) for any stage. Columns: disposition, scope,
# failover, next_host, our own (code, enhanced) or None for the remote's reply.
CLASSIFICATION: Final[Mapping[tuple[Stage | None, Fault], Rule]] = MappingProxyType(
    {
        (Stage.RCPT, Fault.PERMANENT): Rule(BOUNCED, ONE, False, False),
        (Stage.RCPT, Fault.TRANSIENT): Rule(DEFERRED, ONE, True, False),
        (Stage.MAIL, Fault.PERMANENT): Rule(BOUNCED, ALL, False, False),
        (Stage.DATA, Fault.PERMANENT): Rule(BOUNCED, ALL, False, False),
        # A 5xx greeting or EHLO says "not from you", not "no such mailbox": skip the host
        # (Postfix smtp_skip_5xx_greeting) and defer when it was the last one.
        (Stage.GREETING, Fault.PERMANENT): Rule(DEFERRED, ALL, True, True, (451, "4.4.0")),
        (Stage.HELO, Fault.PERMANENT): Rule(DEFERRED, ALL, True, True, (451, "4.4.0")),
        # A refused login at a relay is the operator's problem: defer, never bounce.
        (Stage.AUTH, Fault.PERMANENT): Rule(DEFERRED, ALL, True, True, (454, "4.7.0")),
        (Stage.CONNECT, Fault.TIMEOUT): Rule(DEFERRED, ALL, True, True, (451, "4.4.1")),
        (None, Fault.PERMANENT): Rule(BOUNCED, ALL, False, False),
        (None, Fault.TRANSIENT): Rule(DEFERRED, ALL, True, True),
        (None, Fault.NO_CONNECTION): Rule(DEFERRED, ALL, True, True, (451, "4.4.1")),
        (None, Fault.TIMEOUT): Rule(DEFERRED, ALL, True, True, (451, "4.4.2")),
        (None, Fault.LOST): Rule(DEFERRED, ALL, True, True, (451, "4.4.2")),
        (None, Fault.TLS): Rule(DEFERRED, ALL, True, True, (454, "4.7.5")),
        (None, Fault.LOCAL): Rule(BOUNCED, ALL, False, False),
    }
)


# After these the session can carry another transaction (after RSET).
_SESSION_INTACT: Final = frozenset({Fault.TRANSIENT, Fault.PERMANENT, Fault.LOCAL})


def classify(stage: Stage, fault: Fault) -> Rule:
    return CLASSIFICATION.get((stage, fault)) or CLASSIFICATION[(None, fault)]


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


@dataclass(frozen=True, slots=True)
class Transaction:
    outcomes: tuple[Outcome, ...]  # one per recipient, in the order given
    retry: frozenset[str] = frozenset()  # deferred, but another host may take them now


class _Failure(Exception):
    def __init__(self, stage: Stage, fault: Fault, text: str, remote: Reply | None = None):
        super().__init__(text)
        self.stage, self.fault, self.text, self.remote = stage, fault, text, remote


_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")


def parse_reply(code: int, message: str) -> Reply:
    """aiosmtplib's (code, text) -> Reply; the enhanced code is taken from the text
    (RFC 3463), its class made to match the reply code, else ``X.0.0``."""
    lines = message.split("\n") if message else [""]
    enhanced = None
    if match := _ENHANCED.match(lines[0]):
        enhanced = f"{code // 100}.{match.group(2)}.{match.group(3)}"
        lines = [_ENHANCED.sub("", line, count=1) for line in lines]
    if enhanced is None and 200 <= code < 600:
        enhanced = f"{code // 100}.0.0"
    return Reply(code, enhanced, lines[0] if len(lines) == 1 else tuple(lines))


def _reply_failure(stage: Stage, code: int, message: str, where: str) -> _Failure:
    remote = parse_reply(code, message)
    if remote.is_transient:
        return _Failure(stage, Fault.TRANSIENT, f"{where} said: {remote}", remote)
    if remote.is_permanent:
        return _Failure(stage, Fault.PERMANENT, f"{where} said: {remote}", remote)
    # RFC 5321 4.2.1: anything else here is a protocol error; try again later.
    text = f"protocol error: unexpected reply from {where} while {stage}: {code} {message}"
    return _Failure(stage, Fault.TRANSIENT, text, Reply(451, "4.5.0", text))


def mail_parameters(message: OutboundMessage, extensions: Mapping[str, str]) -> list[str]:
    params = []
    if "size" in extensions:
        params.append(f"SIZE={len(message.data)}")
    if message.body_type.upper() == "8BITMIME" and "8bitmime" in extensions:
        params.append("BODY=8BITMIME")
    if message.smtputf8 and "smtputf8" in extensions:
        params.append("SMTPUTF8")
    if "dsn" in extensions:
        if message.ret:
            params.append(f"RET={message.ret.upper()}")
        if message.envid:
            params.append(f"ENVID={xtext_encode(message.envid)}")
    return params


def rcpt_parameters(recipient: OutboundRecipient, extensions: Mapping[str, str]) -> list[str]:
    if "dsn" not in extensions:
        return []  # RFC 3461 4.2 "relayed" DSNs are the caller's business
    params = []
    if recipient.notify:
        params.append(f"NOTIFY={recipient.notify.upper().replace(' ', '')}")
    if recipient.orcpt:
        kind, _, address = recipient.orcpt.partition(";")
        # Stored xtext-decoded, except utf-8-addr-xtext which is kept as given (RFC 6533).
        value = address if kind.lower() == "utf-8" else xtext_encode(address)
        params.append(f"ORCPT={kind};{value}")
    return params


def _local_refusal(
    message: OutboundMessage, extensions: Mapping[str, str], where: str
) -> Reply | None:
    limit = extensions.get("size", "").strip()
    if limit.isdigit() and 0 < int(limit) < len(message.data):
        text = f"Message size ({len(message.data)} bytes) exceeds the limit of {where} ({limit})"
        return Reply(552, "5.3.4", text)
    if message.smtputf8 and "smtputf8" not in extensions:
        return Reply(550, "5.6.7", f"SMTPUTF8 is required, but was not offered by {where}")
    return None


class Connection:
    """One open SMTP session between transactions (``Reusable`` for the pool)."""

    def __init__(self, smtp: aiosmtplib.SMTP, peer: Peer, remote: RemoteInfo) -> None:
        self.smtp, self.peer, self.remote = smtp, peer, remote
        self.uses = 0

    @property
    def usable(self) -> bool:
        return self.smtp.is_connected

    async def aclose(self) -> None:
        transport = self.smtp.transport  # quit() forgets it, and closes it only gracefully
        try:
            if self.smtp.is_connected:
                await self.smtp.quit(timeout=5.0)
        except (aiosmtplib.SMTPException, OSError):
            pass
        finally:
            _hang_up(self.smtp, transport)
        await asyncio.sleep(0)  # the socket closes on the loop's next turn


_DELIVERED: Final = Rule(DELIVERED, ALL, False, False)


class _Ledger:
    """The outcomes of one ``deliver`` call, as they are settled."""

    def __init__(self, clock: Clock, remote: RemoteInfo) -> None:
        self.clock, self.remote, self.started = clock, remote, clock.monotonic()
        self.settled: dict[str, Outcome] = {}
        self.retry: set[str] = set()

    def settle(self, recipients: Sequence[OutboundRecipient], rule: Rule, reply: Reply) -> None:
        duration = self.clock.monotonic() - self.started
        for r in recipients:
            self.settled[r.address] = Outcome(
                r.address, rule.disposition, reply, self.remote, rule.failover, duration
            )

    def transaction(self, recipients: Sequence[OutboundRecipient]) -> Transaction:
        outcomes = tuple(self.settled[r.address] for r in recipients)
        return Transaction(outcomes, frozenset(self.retry))


class SmtpClient:
    def __init__(
        self,
        *,
        mailer: str,
        hostname: str,
        clock: Clock,
        pool: ConnectionPool[Connection],
        connect_timeout: float,
        command_timeout: float,
    ) -> None:
        self._mailer, self._hostname, self._clock, self._pool = mailer, hostname, clock, pool
        self._connect_timeout, self._timeout = connect_timeout, command_timeout
        self._contexts: dict[tuple[bool, str | None], ssl.SSLContext] = {}

    async def deliver(
        self, peer: Peer, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> Transaction:
        """Never raises for delivery trouble: every recipient gets an ``Outcome``."""
        ledger = _Ledger(self._clock, RemoteInfo(self._mailer, peer.host, peer.address, peer.port))
        connection = await self._reuse(peer)
        try:
            if connection is None:
                connection = await self._open_with_fallback(peer)
            ledger.remote = connection.remote
            await self._transact(connection, message, recipients, ledger)
        except _Failure as failure:
            rule = classify(failure.stage, failure.fault)
            reply = failure.remote if rule.ours is None else Reply(*rule.ours, failure.text)
            assert reply is not None
            left = [r for r in recipients if r.address not in ledger.settled]
            ledger.settle(left, rule, reply)
            if rule.next_host:
                ledger.retry.update(r.address for r in left)
            if connection is not None and failure.fault not in _SESSION_INTACT:
                _hang_up(connection.smtp)
        except BaseException:
            if connection is not None:
                _hang_up(connection.smtp)  # cancelled mid-transaction: the session is unusable
            raise
        if connection is not None:
            self._pool.give(peer.key, connection)
        return ledger.transaction(recipients)

    # -- one transaction -----------------------------------------------------------------
    async def _transact(
        self,
        connection: Connection,
        message: OutboundMessage,
        recipients: Sequence[OutboundRecipient],
        ledger: _Ledger,
    ) -> None:
        smtp, where = connection.smtp, connection.peer.where
        extensions = smtp.esmtp_extensions
        if (refusal := _local_refusal(message, extensions, where)) is not None:
            raise _Failure(Stage.MAIL, Fault.LOCAL, str(refusal), refusal)
        connection.uses += 1
        mail = [_path("FROM", message.sender), *mail_parameters(message, extensions)]
        response = await self._command(connection, Stage.MAIL, mail)
        if response.code != 250:
            raise _reply_failure(Stage.MAIL, response.code, response.message, where)
        accepted: list[OutboundRecipient] = []
        for recipient in recipients:
            rcpt = [_path("TO", recipient.address), *rcpt_parameters(recipient, extensions)]
            response = await self._command(connection, Stage.RCPT, rcpt)
            if response.code in (250, 251):
                accepted.append(recipient)
                continue
            failure = _reply_failure(Stage.RCPT, response.code, response.message, where)
            assert failure.remote is not None
            ledger.settle([recipient], classify(Stage.RCPT, failure.fault), failure.remote)
        if not accepted:
            return  # the next user of this connection sends RSET first
        with _guard(Stage.DATA, where):
            response = await smtp.data(message.data, timeout=self._timeout)
        ledger.settle(accepted, _DELIVERED, parse_reply(response.code, response.message))

    async def _command(
        self, connection: Connection, stage: Stage, words: list[str]
    ) -> aiosmtplib.SMTPResponse:
        verb = b"MAIL" if stage is Stage.MAIL else b"RCPT"
        with _guard(stage, connection.peer.where):
            return await connection.smtp.execute_command(
                verb, *(word.encode("utf-8") for word in words), timeout=self._timeout
            )

    # -- connections ---------------------------------------------------------------------
    async def _reuse(self, peer: Peer) -> Connection | None:
        """An idle pooled connection that still answers RSET, or None."""
        while (connection := self._pool.take(peer.key)) is not None:
            try:
                response = await connection.smtp.execute_command(b"RSET", timeout=self._timeout)
            except (aiosmtplib.SMTPException, OSError):
                _hang_up(connection.smtp)
                continue
            if response.code == 250:
                return connection
            self._pool.discard(connection)
        return None

    async def _open_with_fallback(self, peer: Peer) -> Connection:
        try:
            return await self._open(peer)
        except _Failure as failure:
            # Opportunistic TLS must never make delivery worse than plain text (RFC 7435):
            # when the handshake fails, try the same host once more without it.
            if failure.fault is not Fault.TLS or peer.tls is not TlsMode.OPPORTUNISTIC:
                raise
        return await self._open(replace(peer, tls=TlsMode.NONE))

    async def _open(self, peer: Peer) -> Connection:
        implicit = peer.tls is TlsMode.IMPLICIT
        smtp = aiosmtplib.SMTP(
            hostname=peer.address,
            port=peer.port,
            local_hostname=self._hostname,
            timeout=self._timeout,
            use_tls=implicit,
            start_tls=False,
            tls_context=self._context(peer) if implicit else None,
        )
        try:
            await _connect(smtp, peer, self._connect_timeout)
            await self._hello(smtp, peer)
            if peer.tls in (TlsMode.OPPORTUNISTIC, TlsMode.STARTTLS):
                await self._starttls(smtp, peer)
            if peer.username is not None:
                await self._login(smtp, peer)
        except BaseException:
            _hang_up(smtp)
            raise
        ssl_object = smtp.get_transport_info("ssl_object")
        peername = smtp.get_transport_info("peername")
        remote = RemoteInfo(
            self._mailer,
            peer.host,
            str(peername[0]) if peername else peer.address,
            peer.port,
            ssl_object.version() if ssl_object is not None else None,
        )
        return Connection(smtp, peer, remote)

    async def _hello(self, smtp: aiosmtplib.SMTP, peer: Peer) -> None:
        with _guard(Stage.HELO, peer.where):
            try:
                await smtp.ehlo(timeout=self._timeout)
            except aiosmtplib.SMTPHeloError as exc:
                if exc.code < 500 or not smtp.is_connected:
                    raise
                await smtp.helo(timeout=self._timeout)  # RFC 5321 3.2: an old server

    async def _starttls(self, smtp: aiosmtplib.SMTP, peer: Peer) -> None:
        required = peer.tls is TlsMode.STARTTLS
        if not smtp.supports_extension("starttls"):
            if required:
                text = f"TLS is required, but was not offered by {peer.where}"
                raise _Failure(Stage.STARTTLS, Fault.TLS, text)
            return
        try:
            await smtp.starttls(
                server_hostname=peer.host, tls_context=self._context(peer), timeout=self._timeout
            )
        except aiosmtplib.SMTPResponseException as exc:
            if required:
                text = f"STARTTLS refused by {peer.where}: {parse_reply(exc.code, exc.message)}"
                raise _Failure(Stage.STARTTLS, Fault.TLS, text) from None
            return  # RFC 3207 4: the client may go on in the clear
        except (aiosmtplib.SMTPException, OSError) as exc:
            text = f"TLS handshake with {peer.where} failed: {_reason(exc)}"
            raise _Failure(Stage.STARTTLS, Fault.TLS, text) from None
        await self._hello(smtp, peer)  # RFC 3207 4.2: forget what was said in the clear

    async def _login(self, smtp: aiosmtplib.SMTP, peer: Peer) -> None:
        assert peer.username is not None
        with _guard(Stage.AUTH, peer.where):
            try:
                await smtp.login(peer.username, peer.password or "", timeout=self._timeout)
            except aiosmtplib.SMTPAuthenticationError as exc:
                reply = parse_reply(exc.code, exc.message)
                fault = Fault.TRANSIENT if reply.is_transient else Fault.PERMANENT
                text = f"authentication failed at {peer.where}: {reply}"
                raise _Failure(Stage.AUTH, fault, text, reply) from None
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
                raise
            except aiosmtplib.SMTPException as exc:  # no AUTH offered, no common mechanism
                text = f"cannot authenticate at {peer.where}: {exc}"
                raise _Failure(Stage.AUTH, Fault.PERMANENT, text) from None

    def _context(self, peer: Peer) -> ssl.SSLContext:
        key = (peer.verify, peer.ca_file)
        if key not in self._contexts:
            context = ssl.create_default_context(cafile=peer.ca_file)
            if not peer.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._contexts[key] = context
        return self._contexts[key]


async def _connect(smtp: aiosmtplib.SMTP, peer: Peer, seconds: float) -> None:
    try:
        await smtp.connect(timeout=seconds)
    except aiosmtplib.SMTPConnectResponseError as exc:
        raise _reply_failure(Stage.GREETING, exc.code, exc.message, peer.where) from None
    except aiosmtplib.SMTPConnectError as exc:  # SMTPConnectTimeoutError is one too
        raise _connect_failure(exc, peer.where) from None


def _connect_failure(exc: aiosmtplib.SMTPConnectError, where: str) -> _Failure:
    cause = exc.__cause__
    if isinstance(cause, aiosmtplib.SMTPTimeoutError):  # connected, but no greeting
        text = f"conversation with {where} timed out while {Stage.GREETING}"
        return _Failure(Stage.GREETING, Fault.TIMEOUT, text)
    if isinstance(exc, aiosmtplib.SMTPConnectTimeoutError):
        return _Failure(Stage.CONNECT, Fault.TIMEOUT, f"connect to {where}: timed out")
    if isinstance(cause, ssl.SSLError):  # implicit TLS
        return _Failure(Stage.CONNECT, Fault.TLS, f"TLS with {where} failed: {_reason(cause)}")
    if isinstance(cause, aiosmtplib.SMTPServerDisconnected):
        text = f"lost connection with {where} while {Stage.GREETING}"
        return _Failure(Stage.GREETING, Fault.LOST, text)
    if isinstance(cause, ConnectionRefusedError):
        return _Failure(Stage.CONNECT, Fault.NO_CONNECTION, f"Connection refused by {where}")
    reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(exc)
    return _Failure(Stage.CONNECT, Fault.NO_CONNECTION, f"connect to {where}: {reason}")


@contextmanager
def _guard(stage: Stage, where: str) -> Iterator[None]:
    """aiosmtplib's and the socket's exceptions -> a ``_Failure`` at ``stage``."""
    try:
        yield
    except aiosmtplib.SMTPResponseException as exc:
        raise _reply_failure(stage, exc.code, exc.message, where) from None
    except aiosmtplib.SMTPTimeoutError:
        raise _Failure(
            stage, Fault.TIMEOUT, f"conversation with {where} timed out while {stage}"
        ) from None
    except ssl.SSLError as exc:
        raise _Failure(stage, Fault.TLS, f"TLS failure with {where}: {_reason(exc)}") from None
    except (aiosmtplib.SMTPException, OSError):
        raise _Failure(stage, Fault.LOST, f"lost connection with {where} while {stage}") from None


def _hang_up(smtp: aiosmtplib.SMTP, transport: asyncio.BaseTransport | None = None) -> None:
    """Close at once. A graceful TLS close waits for the peer's close_notify, which after
    QUIT or trouble nobody needs, and would leave the socket open past our control."""
    transport = transport or smtp.transport
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    smtp.close()


def _path(keyword: str, address: str) -> str:
    return f"{keyword}:<{address}>"  # sent as UTF-8, which only SMTPUTF8 messages contain


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message or "certificate verification failed"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return str(exc) or type(exc).__name__
