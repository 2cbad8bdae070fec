"""The ``sendgrid`` mailer: Twilio SendGrid's v3 ``mail/send`` (JSON only).

The message is rebuilt as JSON from its MIME parts (``mimeparts``); the recipients of
this delivery go in one personalization. 202 is acceptance, with the message id in the
``X-Message-Id`` header; errors come as ``{"errors": [{"message", "field"}]}``.
SendGrid refuses no single recipient at send time: suppressed addresses are accepted
and dropped later (its event webhook says so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import httpx

from postroom.config.providers import SendgridMailerSettings
from postroom.delivery.mailers.api import http, jsonapi
from postroom.delivery.mailers.api.http import Rule, Verdict
from postroom.delivery.mailers.api.mimeparts import ParsedMessage, base64_text, parse
from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["TABLE", "SendgridMailer", "payload"]

TABLE: Final[http.Table] = http.table(
    {
        "400": Rule(Verdict.REJECTED, "5.6.0"),  # the request (the message) is invalid
        "401": Rule(Verdict.MISCONFIG, "4.7.0"),  # bad key, or credits exhausted
        "403": Rule(Verdict.MISCONFIG, "4.7.1"),  # sender identity not verified
    }
)


class SendgridMailer(http.HttpMailer[SendgridMailerSettings]):
    TABLE = TABLE
    KEY_HEADER = ("Authorization", "Bearer")
    MAX_RECIPIENTS = 1000  # its documented cap per request
    RETRY_HEADERS = (
        ("retry-after", http.HintKind.SECONDS),
        ("x-ratelimit-reset", http.HintKind.EPOCH),
    )

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        data, lost = payload(parse(message.data, [r.address for r in recipients]))
        return self.client.build_request("POST", "/v3/mail/send", json=data), lost

    def read(self, answer: http.Answer) -> http.Reading:
        if 200 <= answer.status < 300:
            return http.Reading(provider_id=answer.headers.get("x-message-id"))
        errors = answer.fields().get("errors")
        if isinstance(errors, list):
            words = "; ".join(_error_text(e) for e in errors if isinstance(e, dict))
            return http.Reading(text=words)
        return http.Reading()


def _error_text(error: Mapping[str, Any]) -> str:
    field = error.get("field")
    return f"{error.get('message')} ({field})" if field else str(error.get("message"))


def payload(parsed: ParsedMessage) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The ``mail/send`` body for a parsed message, and what it could not carry."""
    parsed = parsed.with_to()
    personalization = {
        "to": jsonapi.mailbox_objects(parsed.to),
        **jsonapi.optional(
            {"cc": jsonapi.mailbox_objects(parsed.cc), "bcc": jsonapi.mailbox_objects(parsed.bcc)}
        ),
    }
    # SendGrid wants text/plain first, then text/html.
    content = [("text/plain", parsed.text), ("text/html", parsed.html)]
    attachments = [
        jsonapi.optional(
            {
                "content": base64_text(part.content),
                "type": part.content_type,
                "filename": name,
                "disposition": "inline" if part.inline else "attachment",
                "content_id": part.content_id,
            }
        )
        for name, part in parsed.named_attachments()
    ]
    headers, repeated = jsonapi.custom_headers(parsed, "SendGrid", message_id="Message-ID")
    data = {
        "personalizations": [personalization],
        "subject": parsed.subject,
        "content": [{"type": t, "value": v} for t, v in content if v is not None],
        **jsonapi.optional(
            {
                "from": jsonapi.mailbox_object(parsed.sender) if parsed.sender else None,
                "reply_to_list": jsonapi.mailbox_objects(parsed.reply_to),
                "attachments": attachments,
                "headers": headers,
            }
        ),
    }
    return data, (*parsed.lost, *repeated)
