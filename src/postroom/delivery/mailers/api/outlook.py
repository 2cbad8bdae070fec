"""Microsoft Graph ``sendMail`` with the raw message (OAuth 2.0).

Graph takes the whole MIME message base64-encoded as a ``text/plain`` body and sends
it to the addresses in its To, Cc and Bcc headers (``with_bcc`` adds this delivery's
other recipients). It answers 202 with no body, so no provider message id is known.
Errors are ``{"error": {"code", "message", "innerError"}}``; 401 renews the token once.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Final
from urllib.parse import quote

import httpx

from postroom.config.providers import OutlookMailerSettings
from postroom.delivery.mailers.api import http
from postroom.delivery.mailers.api.http import Rule, Verdict
from postroom.delivery.mailers.api.oauthmailer import RawMessageMailer
from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["TABLE", "OutlookMailer"]

_CONF: Final = Rule(Verdict.MISCONFIG, "4.3.5")

TABLE: Final[http.Table] = http.table(
    {
        "400:ErrorInvalidRecipients": Rule(Verdict.REJECTED, "5.1.3"),
        "400:ErrorMessageSizeExceeded": Rule(Verdict.REJECTED, "5.3.4"),
        "403:ErrorSendAsDenied": _CONF,
        "403:ErrorAccessDenied": _CONF,
        "404:ErrorInvalidUser": _CONF,
        "400": Rule(Verdict.REJECTED, "5.6.0"),  # e.g. MIME Graph cannot read
        "503": Rule(Verdict.THROTTLED, "4.7.0"),  # may carry Retry-After
    }
)


class OutlookMailer(RawMessageMailer[OutlookMailerSettings]):
    TABLE = TABLE

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        data = self.raw(message, recipients)
        body = base64.b64encode(data)
        headers = {"Content-Type": "text/plain"}
        user = self.settings.user
        path = (
            "/v1.0/me/sendMail" if user == "me" else f"/v1.0/users/{quote(user, safe='@')}/sendMail"
        )
        return self.client.build_request("POST", path, content=body, headers=headers), ()

    def read(self, answer: http.Answer) -> http.Reading:
        data = answer.json()
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict):
            return http.Reading(text=answer.text if answer.status >= 300 else "")
        return http.Reading(
            code=http.str_or_none(error.get("code")), text=str(error.get("message") or "")
        )
