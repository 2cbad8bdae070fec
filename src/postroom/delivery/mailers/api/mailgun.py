"""The ``mailgun`` mailer: Mailgun's ``messages.mime`` (the raw message, US or EU).

The queued bytes go unchanged as the ``message`` file part of a multipart form, the
recipients of this delivery as ``to``; so headers and DKIM signatures survive. 200
``{"id": "<...>", "message": "Queued. Thank you."}`` is acceptance; a bad key gets a
plain-text 401 ``Forbidden``, a wrong region or domain 404 (configuration, not the
recipient). Suppressed recipients are accepted and fail later (webhook).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Final
from urllib.parse import quote

import httpx

from postroom.clock import Clock
from postroom.config.providers import MailgunMailerSettings
from postroom.delivery.mailers.api.http import (
    DEFAULT_TABLE,
    Answer,
    HttpMailer,
    Reading,
    Rule,
    Table,
    Verdict,
    environ_or,
    resolve_secret,
)
from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["TABLE", "MailgunMailer"]

TABLE: Final[Table] = MappingProxyType(
    {
        **DEFAULT_TABLE,
        "400": Rule(Verdict.REJECTED, "5.6.0"),  # e.g. "'to' parameter is not a valid address"
        "404": Rule(Verdict.MISCONFIG, "4.3.5"),  # "Domain not found": wrong domain or region
        "200:no-id": Rule(Verdict.MISCONFIG, "4.3.5"),  # a 200 that queued nothing
    }
)


class MailgunMailer(HttpMailer):
    TABLE = TABLE
    MAX_RECIPIENTS = 1000  # its documented cap per request

    def __init__(
        self,
        settings: MailgunMailerSettings,
        *,
        clock: Clock,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key = resolve_secret(settings, environ_or(environ))
        auth = httpx.BasicAuth("api", key)
        super().__init__(settings, clock=clock, auth=auth, transport=transport)
        self.path = f"/v3/{quote(settings.domain, safe='')}/messages.mime"

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        fields = {"to": ",".join(r.address for r in recipients)}
        files = {"message": ("message.eml", message.data, "message/rfc822")}
        return self.client.build_request("POST", self.path, data=fields, files=files), ()

    def read(self, answer: Answer) -> Reading:
        body = answer.json()
        words = str(body.get("message", "")) if isinstance(body, dict) else answer.text.strip()
        ident = body.get("id") if isinstance(body, dict) else None
        if 200 <= answer.status < 300 and not ident:
            # "Mailgun Magnificent API": a 200 from a path that sends nothing
            return Reading(code="no-id", text=words)
        return Reading(text=words, provider_id=str(ident) if ident else None)
