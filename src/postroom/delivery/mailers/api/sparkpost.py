"""The ``sparkpost`` mailer: SparkPost's ``transmissions`` with ``content.email_rfc822``
(the raw message, US or EU).

The queued message goes as it is; the recipients of this delivery are the envelope
(``recipients[].address.email``). 200 ``{"results": {"id", ...}}`` is acceptance. A
single suppressed recipient gets 400 with error code 1902, which bounces; 420 is a
plan's sending limit (hourly, daily): the message waits or fails over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

import httpx

from postroom.clock import Clock
from postroom.config.providers import SparkpostMailerSettings
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

__all__ = ["TABLE", "SparkpostMailer"]

TABLE: Final[Table] = MappingProxyType(
    {
        **DEFAULT_TABLE,
        "400:1902": Rule(Verdict.REJECTED, "5.7.1"),  # recipient suppressed by policy
        "400:7001": Rule(Verdict.MISCONFIG, "4.3.5"),  # sending domain not set up
        "403:1100": Rule(Verdict.MISCONFIG, "4.7.1"),  # the key lacks the permission
        "420": Rule(Verdict.THROTTLED, "4.7.0"),  # "Exceed Sending Limit (hourly)"
        "200:rejected": Rule(Verdict.REJECTED, "5.7.1"),  # every recipient refused
        "400": Rule(Verdict.REJECTED, "5.6.0"),
        "422": Rule(Verdict.REJECTED, "5.6.0"),
    }
)


class SparkpostMailer(HttpMailer):
    TABLE = TABLE

    def __init__(
        self,
        settings: SparkpostMailerSettings,
        *,
        clock: Clock,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key = resolve_secret(settings, environ_or(environ))
        headers = {"Authorization": key, "Accept": "application/json"}
        if settings.subaccount is not None:
            headers["X-MSYS-SUBACCOUNT"] = str(settings.subaccount)
        super().__init__(settings, clock=clock, headers=headers, transport=transport)

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

    def read(self, answer: Answer) -> Reading:
        body = answer.json()
        if not isinstance(body, dict):
            return Reading()
        results = body.get("results")
        if 200 <= answer.status < 300 and isinstance(results, dict):
            ident = results.get("id")
            accepted = results.get("total_accepted_recipients")
            code = "rejected" if accepted == 0 else None
            return Reading(code=code, provider_id=str(ident) if ident else None)
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            words = "; ".join(_error_text(e) for e in errors if isinstance(e, dict))
            return Reading(code=str(first.get("code") or "") or None, text=words)
        return Reading()


def _error_text(error: Mapping[str, Any]) -> str:
    parts = [str(error.get(k)) for k in ("message", "description") if error.get(k)]
    return ": ".join(parts) + (f" (code {error['code']})" if error.get("code") else "")
