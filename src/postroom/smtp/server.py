"""The SMTP listeners of one server: per-role configuration, sessions, graceful stop."""

from __future__ import annotations

import functools
import logging
import socket
import ssl
from collections.abc import Sequence

from postroom.config.settings import SMTP_ROLES, ListenerRole, ListenerSettings, Settings
from postroom.events import Bus
from postroom.intake import Intake
from postroom.intake.principals import RelayNetworks
from postroom.net.listener import Listener
from postroom.net.sessions import Sessions
from postroom.net.throttle import ConnectionCounter, FailureThrottle
from postroom.smtp import replies
from postroom.smtp.connection import ServerConfig
from postroom.smtp.session import Authenticator, Session, SessionContext

__all__ = ["SmtpServer", "server_config"]

_log = logging.getLogger("postroom.smtp")


def server_config(settings: Settings, role: ListenerRole, *, starttls: bool) -> ServerConfig:
    limits = settings.limits
    return ServerConfig(
        hostname=settings.hostname,
        max_message_size=limits.max_message_size,
        max_recipients=limits.max_recipients,
        max_line_length=limits.max_line_length,
        max_errors=limits.max_errors,
        starttls_available=starttls and role is not ListenerRole.SUBMISSIONS,
        auth_required=role is not ListenerRole.MX,
    )


class SmtpServer:
    def __init__(
        self,
        settings: Settings,
        *,
        intake: Intake,
        authenticate: Authenticator,
        auth_throttle: FailureThrottle,
        ssl_context: ssl.SSLContext | None,
        bus: Bus,
        relay_networks: RelayNetworks | None = None,
        listeners: Sequence[ListenerSettings] | None = None,
        sockets: Sequence[socket.socket] | None = None,
    ) -> None:
        """``sockets``: bound, listening sockets for the listeners, in order (accept
        workers share them; those of other protocols' roles are left alone); None: each
        listener binds its own. ``relay_networks``
        apply to mx listeners only: submission ports always want AUTH (RFC 6409 4.3)."""
        self._settings = settings
        limits = settings.limits
        self._counter = ConnectionCounter(
            max_total=limits.max_connections, max_per_ip=limits.max_connections_per_ip
        )
        self._sessions = Sessions(_log)
        self.specs: list[ListenerSettings] = []  # the SMTP listeners', as self.listeners
        self.listeners = self._sessions.listeners
        refusal = replies.TOO_MANY_CONNECTIONS.to_bytes()
        specs = list(listeners if listeners is not None else settings.listeners)
        if sockets is not None and len(sockets) != len(specs):
            raise ValueError("one socket per listener")
        for index, spec in enumerate(specs):
            if spec.role not in SMTP_ROLES:
                continue
            context = SessionContext(
                role=spec.role.value,
                config=server_config(settings, spec.role, starttls=ssl_context is not None),
                intake=intake,
                authenticate=authenticate,
                auth_throttle=auth_throttle,
                ssl_context=ssl_context,
                command_timeout=limits.command_timeout,
                data_timeout=limits.data_timeout,
                bus=bus,
                relay_networks=relay_networks if spec.role is ListenerRole.MX else None,
                min_data_rate=limits.min_data_rate,
                data_grace=limits.data_grace,
            )
            implicit = spec.role is ListenerRole.SUBMISSIONS
            self.specs.append(spec)
            self.listeners.append(
                Listener(
                    address=spec.address,
                    port=spec.port,
                    handler=self._sessions.handler(functools.partial(Session, context)),
                    counter=self._counter,
                    refusal=refusal,
                    ssl_context=ssl_context if implicit else None,
                    handshake_timeout=limits.command_timeout,
                    sock=sockets[index] if sockets is not None else None,
                )
            )

    async def start(self) -> None:
        await self._sessions.start()

    async def stop(self, grace: float) -> None:
        """Stop accepting; tell idle sessions 421 4.3.2; wait up to ``grace`` seconds for
        transactions in flight; then cut whatever is left."""
        await self._sessions.stop(grace)

    @property
    def session_count(self) -> int:
        return self._sessions.count
