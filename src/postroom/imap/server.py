"""The IMAP listeners of one server: per-role configuration, sessions, stopping."""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Callable

from postroom.config.settings import IMAP_ROLES, IMPLICIT_TLS_ROLES, ListenerSettings, Settings
from postroom.imap.connection import ImapConfig
from postroom.imap.session import ImapContext, ImapSession
from postroom.intake import Principal
from postroom.mailbox import MailboxStore
from postroom.net.logins import LoginGate
from postroom.net.sessions import Sessions, SessionServer
from postroom.net.shares import SharedSockets
from postroom.net.stream import Stream

__all__ = ["ImapServer"]

_log = logging.getLogger("postroom.imap")
_TOO_MANY = b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"


class ImapServer(SessionServer):
    """The IMAP listeners. Stopping: sessions waiting for a command (or idling) get BYE
    at once, those busy with a command get up to ``grace`` seconds."""

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

        def sessions(spec: ListenerSettings) -> Callable[[Stream], ImapSession]:
            implicit = spec.role in IMPLICIT_TLS_ROLES
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
                logins=logins,
                ssl_context=ssl_context,
                autologout=settings.mailboxes.imap_autologout,
                command_timeout=limits.command_timeout,
            )
            return functools.partial(ImapSession, context)

        self._sessions.listen(
            settings.listeners, IMAP_ROLES, sessions, ssl_context=ssl_context, shared=shared
        )
