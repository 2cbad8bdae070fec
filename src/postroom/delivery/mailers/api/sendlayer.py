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
from typing import Any, Final

import httpx

from postroom.config.providers import SendlayerMailerSettings
from postroom.delivery.mailers.api import http, jsonapi
from postroom.delivery.mailers.api.http import Rule, Verdict
from postroom.delivery.mailers.api.mimeparts import Mailbox, ParsedMessage, base64_text, parse
from postroom.delivery.mailers.api.rcptsplit import Addressed, split
from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["LIMITS", "TABLE", "SendlayerMailer", "build_email"]

LIMITS: Final = {"max_to": 10, "max_cc": 10, "max_bcc": 5}

_CODES: Final[Mapping[str, Rule]] = {
    "13": Rule(Verdict.MISCONFIG, "4.3.5"),  # invalid sender API key
    "14": Rule(Verdict.REJECTED, "5.1.1"),  # recipient is suppressed
    "17": Rule(Verdict.THROTTLED, "4.7.0"),  # email quota reached
    "19": Rule(Verdict.REJECTED, "5.1.3"),  # recipient invalid
    "32": Rule(Verdict.MISCONFIG, "4.3.5"),  # sending domain not activated
}

TABLE: Final[http.Table] = http.table(
    {f"{status}:{code}": rule for status in range(400, 430) for code, rule in _CODES.items()}
)


def _boxes(boxes: Sequence[Mailbox]) -> list[dict[str, str]]:
    return [{"name": b.name, "email": b.email} for b in boxes]


def build_email(parsed: ParsedMessage, group: Addressed) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The ``email`` body for one group of recipients, and what it could not carry."""
    attachments = [
        jsonapi.optional(
            {
                "Content": base64_text(part.content),
                "Type": part.content_type,
                "Filename": name,
                "Disposition": "inline" if part.inline else "attachment",
                "ContentId": part.content_id,
            }
        )
        for name, part in parsed.named_attachments()
    ]
    headers, repeated = jsonapi.custom_headers(parsed, "SendLayer")
    body = {
        "To": _boxes(group.to),
        "Subject": parsed.subject,
        "ContentType": "HTML" if parsed.html is not None else "plain",
        **jsonapi.optional(
            {
                "From": _boxes([parsed.sender])[0] if parsed.sender else None,
                "CC": _boxes(group.cc),
                "BCC": _boxes(group.bcc),
                "ReplyTo": _boxes(parsed.reply_to),
                "HTMLContent": parsed.html,
                "PlainContent": parsed.text,
                "Headers": headers,
                "Attachments": attachments,
            }
        ),
    }
    return body, (*parsed.lost, *repeated)


class SendlayerMailer(http.HttpMailer[SendlayerMailerSettings]):
    TABLE = TABLE
    KEY_HEADER = ("Authorization", "Bearer")

    def batches(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Sequence[OutboundRecipient]]:
        """One request per group of recipients within SendLayer's limits."""
        addresses = [r.address for r in recipients]
        groups = split(parse(message.data, addresses), addresses, **LIMITS)
        return http.regroup(recipients, [group.recipients for group in groups])

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        addresses = [r.address for r in recipients]
        parsed = parse(message.data, addresses)
        [group] = split(parsed, addresses, **LIMITS)  # deliver() sends one group at a time
        body, lost = build_email(parsed, group)
        return jsonapi.post_json(self.client, "/api/v1/email", body), lost

    def read(self, answer: http.Answer) -> http.Reading:
        data = answer.json()
        if not isinstance(data, dict):
            return http.Reading(text=answer.text)
        if answer.status == 200 and data.get("MessageID"):
            return http.Reading(provider_id=http.str_or_none(data["MessageID"]))
        errors = data.get("Errors") or data.get("Error")
        first = errors[0] if isinstance(errors, list) and errors else errors
        if isinstance(first, dict):
            code = first.get("Code")
            text = str(first.get("Message") or "")
            return http.Reading(code=None if code is None else str(code), text=text)
        return http.Reading(text=str(first or answer.text))
