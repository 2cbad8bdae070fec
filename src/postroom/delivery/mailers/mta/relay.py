"""The ``smtp`` mailer: everything through one relay or smarthost ("Other SMTP").

All recipients go in one transaction. ``tls`` is ``starttls`` (required: nothing is sent
in the clear), ``implicit`` (RFC 8314, usually port 465) or ``none``; the relay's
certificate and name are checked unless ``verify = false``. With ``username`` the client
logs in (RFC 4954), the password coming from ``password`` or, read once at start-up,
from the environment variable named by ``password_env``.

Every trouble that is the relay's or ours rather than the recipient's (connection,
TLS, a refused login, 4xx) defers with ``failover`` set, so a route can fall back to
another mailer; a 5xx for a recipient or the message bounces (``transaction``'s table).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Final

from postroom.clock import Clock
from postroom.config.mailers import SmtpMailerSettings, SmtpTls
from postroom.delivery.mailers.mta.transaction import (
    Peer,
    TlsMode,
    pooled_client,
)
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Outcome
from postroom.delivery.slots import SharedSlots
from postroom.errors import ConfigError

__all__ = ["SmtpMailer"]

_TLS_MODES: Final[Mapping[SmtpTls, TlsMode]] = {
    SmtpTls.STARTTLS: TlsMode.STARTTLS,
    SmtpTls.IMPLICIT: TlsMode.IMPLICIT,
    SmtpTls.NONE: TlsMode.NONE,
}


class SmtpMailer:
    def __init__(
        self,
        settings: SmtpMailerSettings,
        *,
        hostname: str,
        clock: Clock,
        environ: Mapping[str, str] | None = None,
        slots: SharedSlots | None = None,
    ) -> None:
        self.name = settings.name
        self.peer = Peer(
            host=settings.host,
            address=settings.host,
            port=settings.port,
            tls=_TLS_MODES[settings.tls],
            verify=settings.verify,
            ca_file=settings.ca_file,
            username=settings.username,
            password=_password(settings, os.environ if environ is None else environ),
        )
        self.pool, self._client = pooled_client(
            settings,
            hostname=hostname,
            clock=clock,
            max_per_destination=settings.max_connections,
            slots=slots,
        )

    async def deliver(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Outcome]:
        async with self.pool.limit(self.peer.where):
            transaction = await self._client.deliver(self.peer, message, recipients)
        return list(transaction.outcomes)

    async def aclose(self) -> None:
        await self.pool.aclose()


def _password(settings: SmtpMailerSettings, environ: Mapping[str, str]) -> str | None:
    key = f"mailers.{settings.name}"
    if settings.password_env is not None:
        if settings.password is not None:
            raise ConfigError(f"{key}.password_env", "set password or password_env, not both")
        password = environ.get(settings.password_env)
        if password is None:
            problem = f"the environment variable {settings.password_env} is not set"
            raise ConfigError(f"{key}.password_env", problem)
        return password
    if settings.password is not None and settings.username is None:
        raise ConfigError(f"{key}.username", "a password is set but no username")
    return settings.password
