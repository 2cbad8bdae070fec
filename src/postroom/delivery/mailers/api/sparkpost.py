"""The ``sparkpost`` mailer: SparkPost's ``transmissions`` with ``content.email_rfc822``
(the raw message, US or EU).

The queued message goes as it is; the recipients of this delivery are the envelope
(``recipients[].address.email``). 200 ``{"results": {"id", ...}}`` is acceptance. A
single suppressed recipient gets 400 with error code 1902, which bounces; 420 is a
plan's sending limit (hourly, daily): the message waits or fails over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import httpx

from postroom.config.providers import SparkpostMailerSettings
from postroom.delivery.mailers.api import http
from postroom.delivery.mailers.api.http import Rule, Verdict
from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["TABLE", "SparkpostMailer"]

TABLE: Final[http.Table] = http.table(
    {
        "400:1902": Rule(Verdict.REJECTED, "5.7.1"),  # recipient suppressed by policy
        "400:7001": Rule(Verdict.MISCONFIG, "4.3.5"),  # sending domain not set up
        "403:1100": Rule(Verdict.MISCONFIG, "4.7.1"),  # the key lacks the permission
        "420": Rule(Verdict.THROTTLED, "4.7.0"),  # "Exceed Sending Limit (hourly)"
        "200:rejected": Rule(Verdict.REJECTED, "5.7.1"),  # every recipient refused
        "400": Rule(Verdict.REJECTED, "5.6.0"),
        "422": Rule(Verdict.REJECTED, "5.6.0"),
    }
)


class SparkpostMailer(http.HttpMailer[SparkpostMailerSettings]):
    TABLE = TABLE

    KEY_HEADER = ("Authorization", "")

    def credentials(self, environ: Mapping[str, str]) -> http.Credentials:
        key = super().credentials(environ)
        if self.settings.subaccount is None:
            return key
        return http.Credentials({**key.headers, "X-MSYS-SUBACCOUNT": str(self.settings.subaccount)})

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        lost: tuple[str, ...] = ()
        try:
            content = message.data.decode("utf-8")
        except UnicodeDecodeError:
            # JSON carries text: 8-bit bytes outside UTF-8 go as Latin-1 characters.
            content, lost = message.data.decode("latin-1"), ("8-bit bytes that are not UTF-8",)
        data: dict[str, Any] = {
            "recipients": [{"address": {"email": r.address}} for r in recipients],
            "content": {"email_rfc822": content},
        }
        return self.client.build_request("POST", "/api/v1/transmissions", json=data), lost

    def read(self, answer: http.Answer) -> http.Reading:
        body = answer.fields()
        results = body.get("results")
        if 200 <= answer.status < 300 and isinstance(results, dict):
            accepted = results.get("total_accepted_recipients")
            code = "rejected" if accepted == 0 else None
            return http.Reading(code=code, provider_id=http.str_or_none(results.get("id")))
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            words = "; ".join(_error_text(e) for e in errors if isinstance(e, dict))
            return http.Reading(code=http.str_or_none(first.get("code")), text=words)
        return http.Reading()


def _error_text(error: Mapping[str, Any]) -> str:
    parts = [str(error.get(k)) for k in ("message", "description") if error.get(k)]
    return ": ".join(parts) + (f" (code {error['code']})" if error.get("code") else "")
