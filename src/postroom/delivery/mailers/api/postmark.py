"""The ``postmark`` mailer: Postmark's ``email`` endpoint (JSON only), server token,
message stream.

Postmark answers 200 with ``ErrorCode: 0`` on acceptance; when some recipients are
inactive (hard-bounced or complained before) it still says 200, naming them in
``Message``: those recipients bounce, the others are accepted. A 422 carries
``ErrorCode``: 406 (every recipient inactive) and 300 (an invalid address or request)
bounce; 10 (a bad token) waits for an operator.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

import httpx

from postroom.config.providers import PostmarkMailerSettings
from postroom.delivery.mailers.api import http, jsonapi
from postroom.delivery.mailers.api.http import Rule, Verdict
from postroom.delivery.mailers.api.mimeparts import Mailbox, ParsedMessage, base64_text, parse
from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["TABLE", "PostmarkMailer", "payload"]

_SUPPRESSED: Final = Rule(Verdict.REJECTED, "5.7.1")
TABLE: Final[http.Table] = http.table(
    {
        "200:406": _SUPPRESSED,  # inactive recipients named in an accepted answer
        "422:406": _SUPPRESSED,
        "422:300": Rule(Verdict.REJECTED, "5.1.3"),  # invalid email request (bad address)
        "422:10": Rule(Verdict.MISCONFIG, "4.7.0"),  # bad or missing server token
        "401": Rule(Verdict.MISCONFIG, "4.7.0"),
        "422": Rule(Verdict.REJECTED, "5.6.0"),
    }
)
_INACTIVE = re.compile(r"inactive addresses:\s*(?P<list>[^.]*(?:\.[^\s.][^.]*)*)", re.IGNORECASE)


class PostmarkMailer(http.HttpMailer[PostmarkMailerSettings]):
    TABLE = TABLE
    KEY_HEADER = ("X-Postmark-Server-Token", "")

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        parsed = parse(message.data, [r.address for r in recipients])
        data, lost = payload(parsed, self.settings.message_stream)
        return self.client.build_request("POST", "/email", json=data), lost

    def read(self, answer: http.Answer) -> http.Reading:
        body = answer.fields()
        code, words = body.get("ErrorCode"), str(body.get("Message", ""))
        refused: dict[str, str] = {}
        if 200 <= answer.status < 300 and (found := _INACTIVE.search(words)):
            refused = {a.strip(): "406" for a in found["list"].split(",") if a.strip()}
        return http.Reading(
            code=http.str_or_none(code),
            text=words,
            provider_id=http.str_or_none(body.get("MessageID")),
            refused=refused,
        )


def _listed(boxes: Sequence[Mailbox]) -> str:
    return ", ".join(box.formatted() for box in boxes)


def payload(parsed: ParsedMessage, stream: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The ``email`` body for a parsed message, and what it could not carry."""
    parsed = parsed.with_to()
    headers = [{"Name": name, "Value": value} for name, value in parsed.headers]
    if parsed.message_id:
        headers.append({"Name": "Message-ID", "Value": parsed.message_id})
    attachments = [
        jsonapi.optional(
            {
                "Name": name,
                "Content": base64_text(part.content),
                "ContentType": part.content_type,
                "ContentID": f"cid:{part.content_id}" if part.content_id else None,
            }
        )
        for name, part in parsed.named_attachments()
    ]
    data = {
        "Subject": parsed.subject,
        "MessageStream": stream,
        **jsonapi.optional(
            {
                "From": parsed.sender.formatted() if parsed.sender else None,
                "To": _listed(parsed.to) or None,
                "Cc": _listed(parsed.cc) or None,
                "Bcc": _listed(parsed.bcc) or None,
                "ReplyTo": _listed(parsed.reply_to) or None,
                "TextBody": parsed.text,
                "HtmlBody": parsed.html,
                "Headers": headers,
                "Attachments": attachments,
            }
        ),
    }
    return data, parsed.lost
