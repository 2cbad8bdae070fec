"""The SMTP listeners of one server: per-role configuration, sessions, graceful stop."""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Callable, Sequence

from postroom.config.settings import SMTP_ROLES, ListenerRole, ListenerSettings, Settings
from postroom.events import Bus
from postroom.intake import Intake, Principal
from postroom.intake.principals import RelayNetworks
from postroom.net.deadlines import Deadlines
from postroom.net.logins import LoginGate
from postroom.net.sessions import Sessions, SessionServer
from postroom.net.shares import SharedSockets
from postroom.net.stream import Stream
from postroom.smtp import replies
from postroom.smtp.connection import ServerConfig
from postroom.smtp.session import Session, SessionContext

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


class SmtpServer(SessionServer):
    """The SMTP listeners. Stopping: no new connections, idle sessions get ``421 4.3.2``,
    transactions in flight may finish within ``grace`` seconds, then the rest is cut."""

    def __init__(
        self,
        settings: Settings,
        *,
        intake: Intake,
        logins: LoginGate[Principal],
        ssl_context: ssl.SSLContext | None,
        bus: Bus,
        relay_networks: RelayNetworks | None = None,
        listeners: Sequence[ListenerSettings] | None = None,
        shared: SharedSockets | None = None,
    ) -> None:
        """``shared``: bound, listening sockets for the listeners, in order, shared with
        the other accepting processes (those of other protocols' roles are left alone);
        None: each listener binds its own. ``relay_networks``
        apply to mx listeners only: submission ports always want AUTH (RFC 6409 4.3)."""
        self._settings = settings
        limits = settings.limits
        super().__init__(Sessions(_log, limits, replies.TOO_MANY_CONNECTIONS.to_bytes()))
        specs = list(listeners if listeners is not None else settings.listeners)
        deadlines = Deadlines()

        def sessions(spec: ListenerSettings) -> Callable[[Stream], Session]:
            context = SessionContext(
                role=spec.role.value,
                config=server_config(settings, spec.role, starttls=ssl_context is not None),
                intake=intake,
                logins=logins,
                ssl_context=ssl_context,
                command_timeout=limits.command_timeout,
                data_timeout=limits.data_timeout,
                bus=bus,
                deadlines=deadlines,
                relay_networks=relay_networks if spec.role is ListenerRole.MX else None,
                min_data_rate=limits.min_data_rate,
                data_grace=limits.data_grace,
            )
            return functools.partial(Session, context)

        self._sessions.listen(specs, SMTP_ROLES, sessions, ssl_context=ssl_context, shared=shared)
