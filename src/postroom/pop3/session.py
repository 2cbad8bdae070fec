"""The asyncio driver of one POP3 connection: read -> core -> store/directory -> write.

The core (``connection``) answers most commands itself; this driver does what needs
I/O: the login (through the shared AUTH throttle, the same log line as SMTP's), the
STLS handshake, streaming a message from the mailbox store, and the UPDATE state's
removals. The maildrop is the user's INBOX as one look at login saw it (RFC 1939: a
session's message numbers do not change); UIDL names messages by UIDVALIDITY and UID,
so a client leaving mail on the server sees the same names in every session.

A read that waits longer than ``idle_timeout`` ends the session without removing
anything (RFC 1939 3: the autologout timer, at least 10 minutes). An unforeseen
exception is logged with the client and listener and the session ends with
``-ERR [SYS/TEMP]``; the client never sees a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from postroom.errors import StoreError
from postroom.events.authlog import auth_account, log_auth
from postroom.intake import Principal
from postroom.mailbox import MailboxStore, mailbox_key
from postroom.mailbox.base import DELETED, INBOX, FlagChange
from postroom.mailbox.message import CHUNK
from postroom.net.stream import Stream
from postroom.net.throttle import FailureThrottle
from postroom.pop3.body import MessageBody
from postroom.pop3.connection import MaildropEntry, Pop3Config, Pop3Connection, unique_id
from postroom.pop3.events import (
    NEED_DATA,
    Authenticate,
    ConnectionClosed,
    Retrieve,
    StartTls,
    Update,
)

__all__ = ["Authenticator", "Pop3Context", "Pop3Session"]

Authenticator = Callable[[str, str], Awaitable[Principal | None]]
_log = logging.getLogger("postroom.pop3")
_READ_SIZE = 16 * 1024
_THROTTLED = "[SYS/TEMP] Too many failed logins; try again later"


@dataclass(frozen=True, slots=True)
class Pop3Context:
    """What every session of one listener shares."""

    role: str
    config: Pop3Config
    mailboxes: MailboxStore
    authenticate: Authenticator
    auth_throttle: FailureThrottle
    ssl_context: ssl.SSLContext | None
    idle_timeout: float
    handshake_timeout: float = 30.0


class Pop3Session:
    def __init__(self, context: Pop3Context, stream: Stream) -> None:
        self._ctx = context
        self._stream = stream
        peer = stream.get_extra_info("peername")
        self._ip: str | None = str(peer[0]) if peer else None
        tls = stream.get_extra_info("ssl_object") is not None
        self.conn = Pop3Connection(context.config, tls=tls)
        self._user: tuple[str, str] | None = None  # (domain, user) once logged in
        self._stopping = False
        self._reading = False
        self._task: asyncio.Task[None] | None = None

    def request_stop(self) -> None:
        """The server is stopping: a session waiting for a command ends now (nothing
        removed); one busy with a command ends after it."""
        self._stopping = True
        if self._reading and self._task is not None:
            self._task.cancel()

    async def run(self) -> None:
        self._task = asyncio.current_task()
        try:
            self._stream.write(self.conn.greeting())
            await self._loop()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._stopping or task is None or task.uncancel() > 0:
                raise
            self._goodbye("[SYS/TEMP] Server shutting down")
        except Exception as exc:
            if isinstance(exc, OSError) and self._stream.is_closing():
                _log.debug("connection from %s ended: %s", self._ip, exc)
                return
            _log.error(
                "session failed: client=%s listener=%s", self._ip, self._ctx.role, exc_info=True
            )
            self._goodbye("[SYS/TEMP] Internal error")
        await self._flush()

    def _goodbye(self, text: str) -> None:
        if not self._stream.is_closing():
            self._stream.write(self.conn.shutdown(text))

    async def _flush(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self._stream.drain()

    async def _loop(self) -> None:
        conn = self.conn
        while not conn.closed:
            if self._stopping:
                self._goodbye("[SYS/TEMP] Server shutting down")
                return
            self._reading = True
            try:
                async with asyncio.timeout(self._ctx.idle_timeout):
                    data = await self._stream.read(_READ_SIZE)
            except TimeoutError:
                _log.info("idle timeout for %s; closing", self._ip)
                self._goodbye("Autologout; idle for too long")
                return
            finally:
                self._reading = False
            if not data:
                return
            conn.receive_data(data)
            if not await self._events():
                return
            await self._flush()

    async def _events(self) -> bool:
        """Handle every complete command; False when the connection must end."""
        conn = self.conn
        while True:
            event = conn.next_event()
            self._stream.write(conn.data_to_send())
            match event:
                case _ if event is NEED_DATA:
                    return not conn.closed
                case Authenticate():
                    await self._login(event)
                case StartTls():
                    if not await self._start_tls():
                        return False
                case Retrieve():
                    await self._retrieve(event)
                case Update(uids=uids):
                    conn.update_done(await self._remove(uids))
                case ConnectionClosed():
                    return False
            self._stream.write(conn.data_to_send())

    async def _login(self, event: Authenticate) -> None:
        account = auth_account(event.username)
        try:
            attempt = await self._ctx.auth_throttle.begin(self._ip or "unknown", account)
        except StoreError as exc:  # the shared counts are out of reach: check nothing
            _log.warning("login not checked: the failure counts are unavailable: %s", exc)
            self.conn.refuse_login("[SYS/TEMP] Logins are not possible now; try later")
            return
        if attempt is None:
            log_auth(_log, "throttled", self._ip, event.username, self._ctx.role)
            self.conn.refuse_login(_THROTTLED)
            return
        principal = None
        if event.authzid in ("", event.username):
            try:
                principal = await self._ctx.authenticate(event.username, event.password)
            except StoreError as exc:  # the directory is away: not the client's fault
                _log.error("login: the directory could not be read: %s", exc)
                self.conn.refuse_login("[SYS/TEMP] Logins are not possible now; try later")
                return
        if principal is None:
            log_auth(_log, "failed", self._ip, event.username, self._ctx.role)
            self.conn.refuse_login()
            return
        await attempt.succeeded()
        self._user = mailbox_key(principal.name)
        mailbox = self._ctx.mailboxes.account(*self._user)
        status, messages = await mailbox.messages(INBOX)
        maildrop = [
            MaildropEntry(m.uid, unique_id(status.uidvalidity, m.uid), m.size) for m in messages
        ]
        self.conn.accept_login(principal.name, maildrop)

    async def _start_tls(self) -> bool:
        context = self._ctx.ssl_context
        assert context is not None, "the core offers STLS only with a context"
        await self._flush()
        try:
            async with asyncio.timeout(self._ctx.handshake_timeout):
                await self._stream.start_tls(context)  # drops plaintext read behind STLS
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            _log.info("TLS handshake with %s failed: %s", self._ip, exc)
            return False
        self.conn.start_tls()
        return True

    async def _retrieve(self, event: Retrieve) -> None:
        assert self._user is not None
        mailbox = self._ctx.mailboxes.account(*self._user)
        message = await mailbox.open_message(INBOX, event.uid)
        if message is None:  # removed by another session (IMAP, another POP3 client)
            self.conn.message_gone()
            return
        with message:
            self._stream.write(self.conn.message_start(message.size or 0))
            body = MessageBody(event.top)
            while not body.done and (chunk := message.read(CHUNK)):
                self._stream.write(body.feed(chunk))
                await self._stream.drain()  # one chunk buffered at a time, however large
            self._stream.write(body.end())

    async def _remove(self, uids: tuple[int, ...]) -> bool:
        if not uids:
            return True
        assert self._user is not None
        mailbox = self._ctx.mailboxes.account(*self._user)
        try:
            await mailbox.store(INBOX, uids, [DELETED], FlagChange.ADD)
            await mailbox.expunge(INBOX, uids)
        except OSError:
            _log.error("removing messages failed: client=%s", self._ip, exc_info=True)
            return False
        return True
