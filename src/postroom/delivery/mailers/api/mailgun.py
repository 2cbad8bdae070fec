"""The ``mailgun`` mailer: Mailgun's ``messages.mime`` (the raw message, US or EU).

The queued bytes go unchanged as the ``message`` file part of a multipart form, the
recipients of this delivery as ``to``; so headers and DKIM signatures survive. 200
``{"id": "<...>", "message": "Queued. Thank you."}`` is acceptance; a bad key gets a
plain-text 401 ``Forbidden``, a wrong region or domain 404 (configuration, not the
recipient). Suppressed recipients are accepted and fail later (webhook).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import quote

import httpx

from postroom.config.providers import MailgunMailerSettings
from postroom.delivery.mailers.api import http
from postroom.delivery.mailers.api.http import Rule, Verdict
from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["TABLE", "MailgunMailer"]

TABLE: Final[http.Table] = http.table(
    {
        "400": Rule(Verdict.REJECTED, "5.6.0"),  # e.g. "'to' parameter is not a valid address"
        "404": Rule(Verdict.MISCONFIG, "4.3.5"),  # "Domain not found": wrong domain or region
        "200:no-id": Rule(Verdict.MISCONFIG, "4.3.5"),  # a 200 that queued nothing
    }
)


class MailgunMailer(http.HttpMailer[MailgunMailerSettings]):
    TABLE = TABLE
    MAX_RECIPIENTS = 1000  # its documented cap per request

    def credentials(self, environ: Mapping[str, str]) -> http.Credentials:
        return http.Credentials(
            auth=httpx.BasicAuth("api", http.resolve_secret(self.settings, environ))
        )

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        path = f"/v3/{quote(self.settings.domain, safe='')}/messages.mime"
        fields = {"to": ",".join(r.address for r in recipients)}
        files = {"message": ("message.eml", message.data, "message/rfc822")}
        return self.client.build_request("POST", path, data=fields, files=files), ()

    def read(self, answer: http.Answer) -> http.Reading:
        body = answer.json()
        words = str(body.get("message", "")) if isinstance(body, dict) else answer.text.strip()
        ident = http.str_or_none(answer.fields().get("id"))
        if 200 <= answer.status < 300 and not ident:
            # "Mailgun Magnificent API": a 200 from a path that sends nothing
            return http.Reading(code="no-id", text=words)
        return http.Reading(text=words, provider_id=ident)
