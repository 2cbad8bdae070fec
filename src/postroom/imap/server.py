"""The IMAP listeners of one server: per-role configuration, sessions, stopping."""

from __future__ import annotations

import functools
import logging
import socket
import ssl
from collections.abc import Sequence

from postroom.config.settings import IMAP_ROLES, ListenerRole, ListenerSettings, Settings
from postroom.imap.connection import ImapConfig
from postroom.imap.session import Authenticator, ImapContext, ImapSession
from postroom.mailbox import MailboxStore
from postroom.net.listener import Listener
from postroom.net.sessions import Sessions
from postroom.net.throttle import ConnectionCounter, FailureThrottle

__all__ = ["ImapServer"]

_log = logging.getLogger("postroom.imap")
_TOO_MANY = b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"


class ImapServer:
    def __init__(
        self,
        settings: Settings,
        *,
        mailboxes: MailboxStore,
        authenticate: Authenticator,
        auth_throttle: FailureThrottle,
        ssl_context: ssl.SSLContext | None,
        sockets: Sequence[socket.socket] | None = None,
    ) -> None:
        """``sockets``: one bound, listening socket per entry of ``settings.listeners``
        (those of other roles are left alone); None: each listener binds its own."""
        limits = settings.limits
        self._counter = ConnectionCounter(
            max_total=limits.max_connections, max_per_ip=limits.max_connections_per_ip
        )
        self._sessions = Sessions(_log)
        self.specs: list[ListenerSettings] = []  # the IMAP listeners', as self.listeners
        self.listeners = self._sessions.listeners
        for index, spec in enumerate(settings.listeners):
            if spec.role not in IMAP_ROLES:
                continue
            implicit = spec.role is ListenerRole.IMAPS
            context = ImapContext(
                role=spec.role.value,
                config=ImapConfig(
                    hostname=settings.hostname,
                    max_message_size=limits.max_message_size,
                    max_errors=max(limits.max_errors, 20),
                    starttls_available=ssl_context is not None and not implicit,
                    plaintext_login=spec.plaintext_login,
                ),
                mailboxes=mailboxes,
                authenticate=authenticate,
                auth_throttle=auth_throttle,
                ssl_context=ssl_context,
                autologout=settings.mailboxes.imap_autologout,
                command_timeout=limits.command_timeout,
            )
            self.specs.append(spec)
            self.listeners.append(
                Listener(
                    address=spec.address,
                    port=spec.port,
                    handler=self._sessions.handler(functools.partial(ImapSession, context)),
                    counter=self._counter,
                    refusal=_TOO_MANY,
                    ssl_context=ssl_context if implicit else None,
                    handshake_timeout=limits.command_timeout,
                    sock=sockets[index] if sockets is not None else None,
                )
            )

    async def start(self) -> None:
        await self._sessions.start()

    async def stop(self, grace: float) -> None:
        """Stop accepting; sessions waiting for a command (or idling) get BYE at once,
        those busy with a command get up to ``grace`` seconds."""
        await self._sessions.stop(grace)

    @property
    def session_count(self) -> int:
        return self._sessions.count
