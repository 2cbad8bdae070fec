"""The POP3 listeners of one server: per-role configuration, sessions, stopping."""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Callable

from postroom.config.settings import IMPLICIT_TLS_ROLES, POP3_ROLES, ListenerSettings, Settings
from postroom.intake import Principal
from postroom.mailbox import MailboxStore
from postroom.net.logins import LoginGate
from postroom.net.sessions import Sessions, SessionServer
from postroom.net.shares import SharedSockets
from postroom.net.stream import Stream
from postroom.pop3.connection import Pop3Config
from postroom.pop3.session import Pop3Context, Pop3Session

__all__ = ["Pop3Server"]

_log = logging.getLogger("postroom.pop3")
_TOO_MANY = b"-ERR [SYS/TEMP] Too many connections, try again later\r\n"


class Pop3Server(SessionServer):
    """The POP3 listeners. Stopping: sessions waiting for a command end at once (nothing
    removed), those busy (a RETR, an UPDATE) get up to ``grace`` seconds."""

    def __init__(
        self,
        settings: Settings,
        *,
        mailboxes: MailboxStore,
        logins: LoginGate[Principal],
        ssl_context: ssl.SSLContext | None,
        shared: SharedSockets | None = None,
    ) -> None:
        """``shared``: one bound, listening socket per entry of ``settings.listeners``,
        shared with the other accepting processes (those of other roles are left alone);
        None: each listener binds its own."""
        limits = settings.limits
        super().__init__(Sessions(_log, limits, _TOO_MANY))

        def sessions(spec: ListenerSettings) -> Callable[[Stream], Pop3Session]:
            implicit = spec.role in IMPLICIT_TLS_ROLES
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
                logins=logins,
                ssl_context=ssl_context,
                idle_timeout=settings.mailboxes.pop3_idle_timeout,
                handshake_timeout=limits.command_timeout,
            )
            return functools.partial(Pop3Session, context)

        self._sessions.listen(
            settings.listeners, POP3_ROLES, sessions, ssl_context=ssl_context, shared=shared
        )
