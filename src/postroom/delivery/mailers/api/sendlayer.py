"""SendLayer (``POST /api/v1/email``, ``Authorization: Bearer KEY``).

JSON only, rebuilt from ``mimeparts``. SendLayer takes at most 10 To, 10 Cc and 5 Bcc
addresses per email, so a larger delivery goes as several requests, each its own
outcome for its recipients. It answers 200 ``{"MessageID"}``; errors carry
``{"Errors": [{"Code", "Message"}]}`` with codes 1-32 (14 suppressed recipient,
19 invalid recipient, 13 bad key, 17 quota reached, 32 domain not activated); the
HTTP status of each code is not documented, so they are matched on every 4xx.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

import httpx

from postroom.clock import Clock
from postroom.config.providers import SendlayerMailerSettings
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
from postroom.delivery.mailers.api.jsonapi import b64, post_json
from postroom.delivery.mailers.api.mimeparts import Mailbox, ParsedMessage, parse
from postroom.delivery.mailers.api.rcptsplit import Addressed, split
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Outcome

__all__ = ["LIMITS", "TABLE", "SendlayerMailer", "build_email"]

LIMITS: Final = {"max_to": 10, "max_cc": 10, "max_bcc": 5}

_CODES: Final[Mapping[str, Rule]] = {
    "13": Rule(Verdict.MISCONFIG, "4.3.5"),  # invalid sender API key
    "14": Rule(Verdict.REJECTED, "5.1.1"),  # recipient is suppressed
    "17": Rule(Verdict.THROTTLED, "4.7.0"),  # email quota reached
    "19": Rule(Verdict.REJECTED, "5.1.3"),  # recipient invalid
    "32": Rule(Verdict.MISCONFIG, "4.3.5"),  # sending domain not activated
}

TABLE: Final[Table] = MappingProxyType(
    {
        **DEFAULT_TABLE,
        **{f"{status}:{code}": rule for status in range(400, 430) for code, rule in _CODES.items()},
    }
)


def _boxes(boxes: Sequence[Mailbox]) -> list[dict[str, str]]:
    return [{"name": b.name, "email": b.email} for b in boxes]


def build_email(parsed: ParsedMessage, group: Addressed) -> dict[str, Any]:
    body: dict[str, Any] = {
        "To": _boxes(group.to),
        "Subject": parsed.subject,
        "ContentType": "HTML" if parsed.html is not None else "plain",
    }
    if parsed.sender is not None:
        body["From"] = _boxes([parsed.sender])[0]
    if group.cc:
        body["CC"] = _boxes(group.cc)
    if group.bcc:
        body["BCC"] = _boxes(group.bcc)
    if parsed.reply_to:
        body["ReplyTo"] = _boxes(parsed.reply_to)
    if parsed.html is not None:
        body["HTMLContent"] = parsed.html
    if parsed.text is not None:
        body["PlainContent"] = parsed.text
    if parsed.headers:
        body["Headers"] = dict(parsed.headers)
    if parsed.attachments:
        body["Attachments"] = [
            {
                "Content": b64(part.content),
                "Type": part.content_type,
                "Filename": part.filename or part.content_id or "attachment",
                "Disposition": "inline" if part.inline else "attachment",
                **({"ContentId": part.content_id} if part.content_id else {}),
            }
            for part in parsed.attachments
        ]
    return body


class SendlayerMailer(HttpMailer):
    TABLE = TABLE

    def __init__(
        self,
        settings: SendlayerMailerSettings,
        *,
        clock: Clock,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key = resolve_secret(settings, environ_or(environ))
        headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        super().__init__(settings, clock=clock, headers=headers, transport=transport)

    async def deliver(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Outcome]:
        """One request per group of recipients within SendLayer's limits."""
        parsed = parse(message.data, [r.address for r in recipients])
        by_address = {r.address.lower(): r for r in recipients}
        outcomes: list[Outcome] = []
        for group in split(parsed, [r.address for r in recipients], **LIMITS):
            members = [by_address[a.lower()] for a in group.recipients]
            outcomes.extend(await super().deliver(message, members))
        order = {r.address.lower(): i for i, r in enumerate(recipients)}
        return sorted(outcomes, key=lambda o: order[o.recipient.lower()])

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        addresses = [r.address for r in recipients]
        parsed = parse(message.data, addresses)
        [group] = split(parsed, addresses, **LIMITS)  # deliver() sends one group at a time
        request = post_json(self.client, "/api/v1/email", build_email(parsed, group))
        lost = list(parsed.lost)
        if len({n.lower() for n, _ in parsed.headers}) != len(parsed.headers):
            lost.append("repeated headers (one of each is sent)")
        return request, tuple(lost)

    def read(self, answer: Answer) -> Reading:
        data = answer.json()
        if not isinstance(data, dict):
            return Reading(text=answer.text)
        if answer.status == 200 and data.get("MessageID"):
            return Reading(provider_id=str(data["MessageID"]))
        errors = data.get("Errors") or data.get("Error")
        first = errors[0] if isinstance(errors, list) and errors else errors
        if isinstance(first, dict):
            code = first.get("Code")
            return Reading(
                code=str(code) if code is not None else None, text=str(first.get("Message") or "")
            )
        return Reading(text=str(first or answer.text))
