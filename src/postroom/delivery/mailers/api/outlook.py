"""Microsoft Graph ``sendMail`` with the raw message (OAuth 2.0).

Graph takes the whole MIME message base64-encoded as a ``text/plain`` body and sends
it to the addresses in its To, Cc and Bcc headers (``with_bcc`` adds this delivery's
other recipients). It answers 202 with no body, so no provider message id is known.
Errors are ``{"error": {"code", "message", "innerError"}}``; 401 renews the token once.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Final
from urllib.parse import quote

import httpx

from postroom.clock import Clock
from postroom.config.providers import OutlookMailerSettings
from postroom.delivery.mailers.api.http import (
    DEFAULT_TABLE,
    Answer,
    Reading,
    Rule,
    Table,
    Verdict,
    environ_or,
)
from postroom.delivery.mailers.api.oauthmailer import OAuthHttpMailer, with_bcc
from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["TABLE", "OutlookMailer"]

_CONF: Final = Rule(Verdict.MISCONFIG, "4.3.5")

TABLE: Final[Table] = MappingProxyType(
    {
        **DEFAULT_TABLE,
        "400:ErrorInvalidRecipients": Rule(Verdict.REJECTED, "5.1.3"),
        "400:ErrorMessageSizeExceeded": Rule(Verdict.REJECTED, "5.3.4"),
        "403:ErrorSendAsDenied": _CONF,
        "403:ErrorAccessDenied": _CONF,
        "404:ErrorInvalidUser": _CONF,
        "400": Rule(Verdict.REJECTED, "5.6.0"),  # e.g. MIME Graph cannot read
        "503": Rule(Verdict.THROTTLED, "4.7.0"),  # may carry Retry-After
    }
)


class OutlookMailer(OAuthHttpMailer):
    TABLE = TABLE
    # Never split: the headers say who gets the message, so each request would send
    # every header address a copy.
    MAX_RECIPIENTS = 1_000_000

    def __init__(
        self,
        settings: OutlookMailerSettings,
        *,
        clock: Clock,
        data_dir: Path,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        user = settings.user
        self.path = (
            "/v1.0/me/sendMail" if user == "me" else f"/v1.0/users/{quote(user, safe='@')}/sendMail"
        )
        super().__init__(
            settings,
            settings,
            clock=clock,
            data_dir=data_dir,
            environ=environ_or(environ),
            transport=transport,
        )

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        data = with_bcc(message.data, [r.address for r in recipients])
        body = base64.b64encode(data)
        headers = {"Content-Type": "text/plain"}
        return self.client.build_request("POST", self.path, content=body, headers=headers), ()

    def read(self, answer: Answer) -> Reading:
        data = answer.json()
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict):
            return Reading(text=answer.text if answer.status >= 300 else "")
        code = error.get("code")
        return Reading(code=str(code) if code else None, text=str(error.get("message") or ""))
