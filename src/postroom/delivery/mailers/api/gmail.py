"""Gmail API ``users.messages.send`` with the raw message (OAuth 2.0).

The message goes whole, base64url in ``{"raw": ...}``; Gmail sends it to the addresses
in its To, Cc and Bcc headers (``with_bcc`` adds this delivery's other recipients).
Gmail answers 200 with the sent message's ``id``. Errors are
``{"error": {"code", "message", "errors": [{"reason", ...}]}}``: quota and rate reasons
(as 403 or 429) are throttling; other 403s and a failed precondition (no access to the
mailbox) are configuration; other 400s (a header Gmail cannot send to) bounce.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Final
from urllib.parse import quote

import httpx

from postroom.config.providers import GmailMailerSettings
from postroom.delivery.mailers.api import http
from postroom.delivery.mailers.api.http import Rule, Verdict
from postroom.delivery.mailers.api.oauthmailer import RawMessageMailer
from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["TABLE", "GmailMailer", "read_google_error"]

_SLOW: Final = Rule(Verdict.THROTTLED, "4.7.0")
_CONF: Final = Rule(Verdict.MISCONFIG, "4.3.5")

TABLE: Final[http.Table] = http.table(
    {
        **{
            f"{status}:{reason}": _SLOW
            for status in (403, 429)
            for reason in (
                "dailyLimitExceeded",
                "userRateLimitExceeded",
                "rateLimitExceeded",
                "quotaExceeded",
            )
        },
        "400:failedPrecondition": _CONF,  # e.g. Gmail not enabled for the account
        "400": Rule(Verdict.REJECTED, "5.6.0"),  # "Invalid To header" and the like
    }
)


def read_google_error(answer: http.Answer) -> http.Reading:
    data = answer.json()
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return http.Reading(text=answer.text)
    details = [e for e in error.get("errors") or () if isinstance(e, dict)]
    reason = details[0].get("reason") if details else error.get("status")
    return http.Reading(code=http.str_or_none(reason), text=str(error.get("message") or ""))


class GmailMailer(RawMessageMailer[GmailMailerSettings]):
    TABLE = TABLE

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        data = self.raw(message, recipients)
        raw = base64.urlsafe_b64encode(data).decode("ascii")
        path = f"/gmail/v1/users/{quote(self.settings.user, safe='@')}/messages/send"
        body = json.dumps({"raw": raw}).encode()
        headers = {"Content-Type": "application/json"}
        return self.client.build_request("POST", path, content=body, headers=headers), ()

    def read(self, answer: http.Answer) -> http.Reading:
        if answer.status == 200:
            return http.Reading(provider_id=http.str_or_none(answer.fields().get("id")))
        return read_google_error(answer)
