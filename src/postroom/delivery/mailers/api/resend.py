"""The ``resend`` mailer: Resend's ``emails`` endpoint (JSON only).

200 ``{"id": "..."}`` is acceptance; errors come as ``{"statusCode", "message",
"name"}`` and the table reads ``name`` (a daily quota is a wait, a domain that is not
verified an operator's job). Each request carries an ``Idempotency-Key`` made of the
message id and its recipients, so a retry after a lost answer is not sent twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

import httpx

from postroom.clock import Clock
from postroom.config.providers import ResendMailerSettings
from postroom.delivery.mailers.api.http import (
    DEFAULT_TABLE,
    Answer,
    HintKind,
    HttpMailer,
    Reading,
    Rule,
    Table,
    Verdict,
    environ_or,
    resolve_secret,
)
from postroom.delivery.mailers.api.mimeparts import ParsedMessage, base64_text, parse
from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["TABLE", "ResendMailer", "payload"]

TABLE: Final[Table] = MappingProxyType(
    {
        **DEFAULT_TABLE,
        "400": Rule(Verdict.REJECTED, "5.6.0"),  # validation_error
        "403:validation_error": Rule(Verdict.MISCONFIG, "4.7.1"),  # domain not verified
        "409:concurrent_idempotent_requests": Rule(Verdict.TEMPORARY, "4.3.0"),
        "409": Rule(Verdict.MISCONFIG, "4.3.5"),
        "422": Rule(Verdict.REJECTED, "5.6.0"),  # invalid attachment, missing field
        "429:daily_quota_exceeded": Rule(Verdict.THROTTLED, "4.7.0"),
        "451": Rule(Verdict.TEMPORARY, "4.7.0"),
    }
)


class ResendMailer(HttpMailer):
    TABLE = TABLE
    RETRY_HEADERS = (("retry-after", HintKind.SECONDS), ("ratelimit-reset", HintKind.SECONDS))

    def __init__(
        self,
        settings: ResendMailerSettings,
        *,
        clock: Clock,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key = resolve_secret(settings, environ_or(environ))
        headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        super().__init__(settings, clock=clock, headers=headers, transport=transport)

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        addresses = [r.address for r in recipients]
        data, lost = payload(parse(message.data, addresses))
        digest = hashlib.sha256("\n".join([message.id, *sorted(addresses)]).encode()).hexdigest()
        headers = {"Idempotency-Key": f"postroom-{digest[:48]}"}
        return self.client.build_request("POST", "/emails", json=data, headers=headers), lost

    def read(self, answer: Answer) -> Reading:
        body = answer.json()
        if not isinstance(body, dict):
            return Reading()
        ident = body.get("id")
        name = body.get("name")
        return Reading(
            code=str(name) if name else None,
            text=str(body.get("message", "")),
            provider_id=str(ident) if ident else None,
        )


def payload(parsed: ParsedMessage) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The ``emails`` body for a parsed message, and what it could not carry."""
    parsed = parsed.with_to()
    lost = list(parsed.lost)
    data: dict[str, Any] = {"subject": parsed.subject, "to": [b.formatted() for b in parsed.to]}
    if parsed.sender is not None:
        data["from"] = parsed.sender.formatted()
    for key, boxes in (("cc", parsed.cc), ("bcc", parsed.bcc), ("reply_to", parsed.reply_to)):
        if boxes:
            data[key] = [b.formatted() for b in boxes]
    if parsed.text is not None:
        data["text"] = parsed.text
    if parsed.html is not None:
        data["html"] = parsed.html
    headers = dict(parsed.headers)
    if len(headers) < len(parsed.headers):
        lost.append("repeated custom headers (Resend keeps one of each)")
    if parsed.message_id:
        headers["Message-ID"] = parsed.message_id
    if headers:
        data["headers"] = headers
    attachments = []
    for index, part in enumerate(parsed.attachments, start=1):
        item = {
            "content": base64_text(part.content),
            "filename": part.filename or f"part-{index}",
            "content_type": part.content_type,
        }
        if part.content_id:
            item["content_id"] = part.content_id
        attachments.append(item)
    if attachments:
        data["attachments"] = attachments
    return data, tuple(lost)
