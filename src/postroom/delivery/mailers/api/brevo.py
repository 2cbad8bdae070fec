"""The ``brevo`` mailer: Brevo's ``smtp/email`` (JSON only).

201 ``{"messageId": "<...>"}`` is acceptance. Brevo takes one Reply-To and attachments
without a Content-ID, so inline images arrive as plain attachments: both are noted on
the attempt. Errors come as ``{"code", "message"}``; 429 carries
``x-sib-ratelimit-reset`` (seconds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import httpx

from postroom.config.providers import BrevoMailerSettings
from postroom.delivery.mailers.api import http, jsonapi
from postroom.delivery.mailers.api.http import Rule, Verdict
from postroom.delivery.mailers.api.mimeparts import ParsedMessage, base64_text, parse
from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["TABLE", "BrevoMailer", "payload"]

TABLE: Final[http.Table] = http.table(
    {
        "400": Rule(Verdict.REJECTED, "5.6.0"),  # {"code": "invalid_parameter", ...}
        "402": Rule(Verdict.MISCONFIG, "4.3.5"),  # out of credits: the account, not the mail
    }
)


class BrevoMailer(http.HttpMailer[BrevoMailerSettings]):
    TABLE = TABLE
    KEY_HEADER = ("api-key", "")
    RETRY_HEADERS = (
        ("retry-after", http.HintKind.SECONDS),
        ("x-sib-ratelimit-reset", http.HintKind.SECONDS),
    )

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        data, lost = payload(parse(message.data, [r.address for r in recipients]))
        return self.client.build_request("POST", "/v3/smtp/email", json=data), lost

    def read(self, answer: http.Answer) -> http.Reading:
        body = answer.fields()
        words = str(body.get("message", ""))
        return http.Reading(
            code=body.get("code"), text=words, provider_id=http.str_or_none(body.get("messageId"))
        )


def payload(parsed: ParsedMessage) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The ``smtp/email`` body for a parsed message, and what it could not carry."""
    parsed = parsed.with_to()
    headers, repeated = jsonapi.custom_headers(parsed, "Brevo", message_id="Message-Id")
    lost = [*parsed.lost, *repeated]
    if len(parsed.reply_to) > 1:
        lost.append("Reply-To addresses after the first")
    attachments = []
    for name, part in parsed.named_attachments():
        attachments.append({"name": name, "content": base64_text(part.content)})
        if part.content_id:
            lost.append(f"Content-ID <{part.content_id}> of {name} (sent as an attachment)")
    data = {
        "subject": parsed.subject,
        "to": jsonapi.mailbox_objects(parsed.to),
        **jsonapi.optional(
            {
                "sender": jsonapi.mailbox_object(parsed.sender) if parsed.sender else None,
                "cc": jsonapi.mailbox_objects(parsed.cc),
                "bcc": jsonapi.mailbox_objects(parsed.bcc),
                "replyTo": jsonapi.mailbox_object(parsed.reply_to[0]) if parsed.reply_to else None,
                "textContent": parsed.text,
                "htmlContent": parsed.html,
                "headers": headers,
                "attachment": attachments,
            }
        ),
    }
    return data, tuple(lost)
