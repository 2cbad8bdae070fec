"""The POP3 listeners of one server: per-role configuration, sessions, stopping."""

from __future__ import annotations

import functools
import logging
import socket
import ssl
from collections.abc import Sequence

from postroom.config.settings import POP3_ROLES, ListenerRole, ListenerSettings, Settings
from postroom.mailbox import MailboxStore
from postroom.net.listener import Listener
from postroom.net.sessions import Sessions
from postroom.net.throttle import ConnectionCounter, FailureThrottle
from postroom.pop3.connection import Pop3Config
from postroom.pop3.session import Authenticator, Pop3Context, Pop3Session

__all__ = ["Pop3Server"]

_log = logging.getLogger("postroom.pop3")
_TOO_MANY = b"-ERR [SYS/TEMP] Too many connections, try again later\r\n"


class Pop3Server:
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
        self.specs: list[ListenerSettings] = []  # the POP3 listeners', as self.listeners
        self.listeners = self._sessions.listeners
        for index, spec in enumerate(settings.listeners):
            if spec.role not in POP3_ROLES:
                continue
            implicit = spec.role is ListenerRole.POP3S
            config = Pop3Config(
                hostname=settings.hostname,
                tls_available=ssl_context is not None and not implicit,
                plaintext_login=spec.plaintext_login,
                max_line_length=limits.max_line_length,
                max_errors=limits.max_errors,
            )
            context = Pop3Context(
                role=spec.role.value,
                config=config,
                mailboxes=mailboxes,
                authenticate=authenticate,
                auth_throttle=auth_throttle,
                ssl_context=ssl_context,
                idle_timeout=settings.mailboxes.pop3_idle_timeout,
                handshake_timeout=limits.command_timeout,
            )
            self.specs.append(spec)
            self.listeners.append(
                Listener(
                    address=spec.address,
                    port=spec.port,
                    handler=self._sessions.handler(functools.partial(Pop3Session, context)),
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
        """Stop accepting; sessions waiting for a command end at once (nothing removed),
        those busy (a RETR, an UPDATE) get up to ``grace`` seconds."""
        await self._sessions.stop(grace)
