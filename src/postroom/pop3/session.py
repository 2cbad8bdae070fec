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
import logging
import ssl
from dataclasses import dataclass

from postroom.events.authlog import auth_account, log_auth
from postroom.intake import Principal
from postroom.mailbox import MailboxStore, mailbox_key
from postroom.mailbox.base import DELETED, INBOX, FlagChange
from postroom.mailbox.message import CHUNK
from postroom.net.logins import LoginGate
from postroom.net.sessions import GuardedSession
from postroom.net.stream import Stream
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

__all__ = ["Pop3Context", "Pop3Session"]

_log = logging.getLogger("postroom.pop3")
_READ_SIZE = 16 * 1024
_THROTTLED = "[SYS/TEMP] Too many failed logins; try again later"


@dataclass(frozen=True, slots=True)
class Pop3Context:
    """What every session of one listener shares."""

    role: str
    config: Pop3Config
    mailboxes: MailboxStore
    logins: LoginGate[Principal]  # the one way passwords are checked, by every door
    ssl_context: ssl.SSLContext | None
    idle_timeout: float
    handshake_timeout: float = 30.0


class Pop3Session(GuardedSession):
    """A stop: a session waiting for a command ends at once (nothing removed)."""

    def __init__(self, context: Pop3Context, stream: Stream) -> None:
        super().__init__(stream, context.role, _log)
        self._ctx = context
        tls = stream.get_extra_info("ssl_object") is not None
        self.conn = Pop3Connection(context.config, tls=tls)
        self._user: tuple[str, str] | None = None  # (domain, user) once logged in

    def _greeting(self) -> bytes:
        return self.conn.greeting()

    def _farewell(self, *, stopping: bool) -> None:
        self._goodbye(
            "[SYS/TEMP] Server shutting down" if stopping else "[SYS/TEMP] Internal error"
        )

    def _goodbye(self, text: str) -> None:
        if not self._stream.is_closing():
            self._stream.write(self.conn.shutdown(text))

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
        login = await self._ctx.logins.login(
            self._ip or "unknown",
            auth_account(event.username),
            event.username,
            event.password,
            authzid=event.authzid,
        )
        principal = login.who
        if login.verdict == "unavailable":
            self.conn.refuse_login("[SYS/TEMP] Logins are not possible now; try later")
            return
        if login.verdict == "throttled":
            log_auth(_log, "throttled", self._ip, event.username, self._ctx.role)
            self.conn.refuse_login(_THROTTLED)
            return
        if principal is None:
            log_auth(_log, "failed", self._ip, event.username, self._ctx.role)
            self.conn.refuse_login()
            return
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
            await self._stream.start_tls(
                context, handshake_timeout=self._ctx.handshake_timeout
            )  # drops plaintext read behind STLS
        except (ssl.SSLError, OSError) as exc:
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
