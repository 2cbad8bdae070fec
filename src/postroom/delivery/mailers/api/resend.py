"""The ``resend`` mailer: Resend's ``emails`` endpoint (JSON only).

200 ``{"id": "..."}`` is acceptance; errors come as ``{"statusCode", "message",
"name"}`` and the table reads ``name`` (a daily quota is a wait, a domain that is not
verified an operator's job). Each request carries an ``Idempotency-Key`` made of the
message id and its recipients, so a retry after a lost answer is not sent twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Final

import httpx

from postroom.config.providers import ResendMailerSettings
from postroom.delivery.mailers.api import http, jsonapi
from postroom.delivery.mailers.api.http import Rule, Verdict
from postroom.delivery.mailers.api.mimeparts import Mailbox, ParsedMessage, base64_text, parse
from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["TABLE", "ResendMailer", "payload"]

TABLE: Final[http.Table] = http.table(
    {
        "400": Rule(Verdict.REJECTED, "5.6.0"),  # validation_error
        "403:validation_error": Rule(Verdict.MISCONFIG, "4.7.1"),  # domain not verified
        "409:concurrent_idempotent_requests": Rule(Verdict.TEMPORARY, "4.3.0"),
        "409": Rule(Verdict.MISCONFIG, "4.3.5"),
        "422": Rule(Verdict.REJECTED, "5.6.0"),  # invalid attachment, missing field
        "429:daily_quota_exceeded": Rule(Verdict.THROTTLED, "4.7.0"),
        "451": Rule(Verdict.TEMPORARY, "4.7.0"),
    }
)


class ResendMailer(http.HttpMailer[ResendMailerSettings]):
    TABLE = TABLE
    KEY_HEADER = ("Authorization", "Bearer")
    RETRY_HEADERS = (
        ("retry-after", http.HintKind.SECONDS),
        ("ratelimit-reset", http.HintKind.SECONDS),
    )

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        addresses = [r.address for r in recipients]
        data, lost = payload(parse(message.data, addresses))
        digest = hashlib.sha256("\n".join([message.id, *sorted(addresses)]).encode()).hexdigest()
        headers = {"Idempotency-Key": f"postroom-{digest[:48]}"}
        return self.client.build_request("POST", "/emails", json=data, headers=headers), lost

    def read(self, answer: http.Answer) -> http.Reading:
        body = answer.fields()
        return http.Reading(
            code=http.str_or_none(body.get("name")),
            text=str(body.get("message", "")),
            provider_id=http.str_or_none(body.get("id")),
        )


def _formatted(boxes: Sequence[Mailbox]) -> list[str]:
    return [box.formatted() for box in boxes]


def payload(parsed: ParsedMessage) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The ``emails`` body for a parsed message, and what it could not carry."""
    parsed = parsed.with_to()
    headers, repeated = jsonapi.custom_headers(parsed, "Resend", message_id="Message-ID")
    attachments = [
        jsonapi.optional(
            {
                "content": base64_text(part.content),
                "filename": name,
                "content_type": part.content_type,
                "content_id": part.content_id,
            }
        )
        for name, part in parsed.named_attachments()
    ]
    data = {
        "subject": parsed.subject,
        "to": _formatted(parsed.to),
        **jsonapi.optional(
            {
                "from": parsed.sender.formatted() if parsed.sender else None,
                "cc": _formatted(parsed.cc),
                "bcc": _formatted(parsed.bcc),
                "reply_to": _formatted(parsed.reply_to),
                "text": parsed.text,
                "html": parsed.html,
                "headers": headers,
                "attachments": attachments,
            }
        ),
    }
    return data, (*parsed.lost, *repeated)
