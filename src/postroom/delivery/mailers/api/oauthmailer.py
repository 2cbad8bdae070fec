"""The shared part of mailers that send as a user with OAuth (Gmail, Graph, Zoho).

``BearerAuth`` puts the access token on each request (httpx's auth flow) and, when the
API answers 401, renews the token once and sends again; a second 401 is left to the
provider's table (misconfigured: deferred with failover, logged). When no token can be
had, the attempt gets no answer: deferred with failover, and the reason as its text:
for a revoked refresh token, the sentence that says to run ``postroom mailer authorize``.

``RawMessageMailer`` is for APIs that take the raw message and send to its To, Cc and
Bcc headers (they have no envelope, Gmail and Graph): ``with_bcc`` adds the recipients
of this delivery that no header names in a ``Bcc:`` header, which the provider removes
before sending.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path
from typing import Final, TypeVar

import httpx

from postroom.clock import Clock
from postroom.config.providers import (
    GmailMailerSettings,
    OutlookMailerSettings,
    ZohoMailerSettings,
)
from postroom.delivery.mailers.api.http import Answer, Credentials, HttpMailer, NoAnswer, environ_or
from postroom.delivery.mailers.oauth.flow import AccessTokens, OAuthError, oauth_config
from postroom.delivery.mailers.oauth.tokens import TokenFile, token_path
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.store.base import LimitStore

__all__ = ["BearerAuth", "OAuthHttpMailer", "RawMessageMailer", "with_bcc"]

_HEADER_END: Final = re.compile(rb"\r?\n\r?\n")


class BearerAuth(httpx.Auth):
    def __init__(self, tokens: AccessTokens, scheme: str = "Bearer") -> None:
        self.tokens = tokens
        self.scheme = scheme

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = f"{self.scheme} {await self.tokens.token()}"
        response = yield request
        if response.status_code == 401:
            renewed = await self.tokens.token(renew=True)
            request.headers["Authorization"] = f"{self.scheme} {renewed}"
            yield request


# The concrete settings classes: only they carry the ``type`` that picks the OAuth provider.
OAuthSettingsT_co = TypeVar(
    "OAuthSettingsT_co",
    bound=GmailMailerSettings | OutlookMailerSettings | ZohoMailerSettings,
    covariant=True,
)


class OAuthHttpMailer(HttpMailer[OAuthSettingsT_co]):
    """An ``HttpMailer`` whose requests carry an OAuth access token; the refresh token is
    read from ``data_dir``."""

    AUTH_SCHEME = "Bearer"

    def __init__(
        self,
        settings: OAuthSettingsT_co,
        *,
        clock: Clock,
        data_dir: Path,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: LimitStore | None = None,
    ) -> None:
        config = oauth_config(settings, environ_or(environ))
        self.token_client = httpx.AsyncClient(transport=transport, follow_redirects=False)
        self.tokens = AccessTokens(
            config,
            TokenFile(token_path(data_dir, settings.name)),
            clock=clock,
            http=self.token_client,
        )
        super().__init__(settings, clock=clock, environ=environ, transport=transport, limits=limits)

    def credentials(self, environ: Mapping[str, str]) -> Credentials:
        return Credentials(auth=BearerAuth(self.tokens, self.AUTH_SCHEME))

    async def send(self, request: httpx.Request) -> Answer | NoAnswer:
        try:
            return await super().send(request)
        except OAuthError as exc:
            return NoAnswer("4.7.0", str(exc))

    async def aclose(self) -> None:
        await super().aclose()
        await self.token_client.aclose()


class RawMessageMailer(OAuthHttpMailer[OAuthSettingsT_co]):
    """An API that sends the raw message to the addresses in its headers."""

    # Never split: the headers say who gets the message, so each request would send
    # every header address a copy.
    MAX_RECIPIENTS = 1_000_000

    def raw(self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]) -> bytes:
        """The message as the API takes it: every recipient of this delivery named."""
        return with_bcc(message.data, [r.address for r in recipients])


def with_bcc(data: bytes, recipients: Sequence[str]) -> bytes:
    """``data`` with a ``Bcc:`` header for the recipients its headers do not name."""
    end = _HEADER_END.search(data)
    head = data[: end.start()] if end else data
    named = _named(head.decode("utf-8", "replace"))
    missing = [r for r in recipients if r.lower() not in named]
    if not missing:
        return data
    return b"Bcc: " + ", ".join(missing).encode() + b"\r\n" + data


def _named(head: str) -> set[str]:
    unfolded = re.sub(r"\r?\n[ \t]", " ", head)
    values = [
        line.split(":", 1)[1]
        for line in unfolded.splitlines()
        if line.split(":", 1)[0].strip().lower() in ("to", "cc", "bcc") and ":" in line
    ]
    return {address.lower() for _, address in email.utils.getaddresses(values) if address}
