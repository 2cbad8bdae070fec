"""Mailjet Send API v3.1 (``POST /v3.1/send``, Basic ``api_key:secret_key``).

JSON only: the message is rebuilt from ``mimeparts``. Recipients go in messages of at
most 50 per field, and at most 50 messages go in one call (Mailjet's caps). Mailjet
answers each message on its own: 200 when all were sent, 400 when any failed, with
per-message ``Status`` and, for a failed one, ``Errors`` whose ``ErrorRelatedTo`` names
fields such as ``To[1].Email``. So outcomes are read per message, and inside a failed
message per recipient: a named recipient bounces (or defers, by the table); the others
of that message were not sent because of it and are deferred, to go without it next
time (no failover: Mailjet itself is fine). A successful message gives each recipient
its own ``MessageID``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import httpx

from postroom.config.providers import MailjetMailerSettings
from postroom.delivery.mailers.api import http, jsonapi
from postroom.delivery.mailers.api.http import Rule, Verdict
from postroom.delivery.mailers.api.mimeparts import Mailbox, ParsedMessage, base64_text, parse
from postroom.delivery.mailers.api.rcptsplit import Addressed, split
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Outcome, RemoteInfo

__all__ = ["MAX_MESSAGES", "MAX_PER_FIELD", "TABLE", "MailjetMailer", "build_messages"]

MAX_PER_FIELD: Final = 50
MAX_MESSAGES: Final = 50  # per call

TABLE: Final[http.Table] = http.table(
    {
        "400:mj-0013": Rule(Verdict.REJECTED, "5.1.3"),  # invalid email address
        "400:send-0010": Rule(Verdict.REJECTED, "5.1.3"),  # invalid recipient (inferred)
        "400:mj-0011": Rule(Verdict.REJECTED, "5.3.4"),  # payload too large
        "400:send-0015": Rule(Verdict.REJECTED, "5.5.3"),  # too many recipients
        "401:mj-0001": Rule(Verdict.MISCONFIG, "4.3.5"),  # API key suspended
    }
)

_FIELD: Final = re.compile(r"^(To|Cc|Bcc)\[(\d+)\]")
_NOT_SENT: Final = Rule(Verdict.TEMPORARY, "4.5.3")


def _boxes(boxes: Sequence[Mailbox]) -> list[dict[str, str]]:
    return jsonapi.mailbox_objects(boxes, email="Email", name="Name")


def _files(parsed: ParsedMessage, inline: bool) -> list[dict[str, str]]:
    return [
        jsonapi.optional(
            {
                "ContentType": part.content_type,
                "Filename": name,
                "Base64Content": base64_text(part.content),
                "ContentID": part.content_id if inline else None,
            }
        )
        for name, part in parsed.named_attachments()
        if part.inline == inline
    ]


def build_messages(
    parsed: ParsedMessage, groups: Sequence[Addressed], custom_id: str
) -> list[dict[str, Any]]:
    headers, _ = jsonapi.custom_headers(parsed, "Mailjet")
    base = {
        "Subject": parsed.subject,
        "CustomID": custom_id,
        **jsonapi.optional(
            {
                "From": _boxes([parsed.sender])[0] if parsed.sender else None,
                "ReplyTo": _boxes(parsed.reply_to)[0] if parsed.reply_to else None,
                "TextPart": parsed.text,
                "HTMLPart": parsed.html,
                "Headers": headers,
                "Attachments": _files(parsed, inline=False),
                "InlinedAttachments": _files(parsed, inline=True),
            }
        ),
    }
    return [
        {
            **base,
            "To": _boxes(group.to),
            **jsonapi.optional({"Cc": _boxes(group.cc), "Bcc": _boxes(group.bcc)}),
        }
        for group in groups
    ]


def _read_error(answer: http.Answer) -> http.Reading:
    """A whole-call error: ``{"ErrorCode": "mj-0002", "ErrorMessage": ...}``, or text (429)."""
    data = answer.json()
    if not isinstance(data, dict):
        return http.Reading(text=answer.text)
    return http.Reading(
        code=http.str_or_none(data.get("ErrorCode")), text=str(data.get("ErrorMessage") or "")
    )


def _lost(parsed: ParsedMessage) -> tuple[str, ...]:
    _, repeated = jsonapi.custom_headers(parsed, "Mailjet")
    after_first = ("Reply-To addresses after the first",) if len(parsed.reply_to) > 1 else ()
    return (*parsed.lost, *repeated, *after_first)


class MailjetMailer(http.HttpMailer[MailjetMailerSettings]):
    TABLE = TABLE

    def credentials(self, environ: Mapping[str, str]) -> http.Credentials:
        key = http.resolve_secret(self.settings, environ)
        secret = http.resolve_secret(self.settings, environ, value="secret_key")
        return http.Credentials(auth=httpx.BasicAuth(key, secret))

    def _groups(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[ParsedMessage, list[Addressed]]:
        addresses = [r.address for r in recipients]
        parsed = parse(message.data, addresses)
        limit = MAX_PER_FIELD
        return parsed, split(parsed, addresses, max_to=limit, max_cc=limit, max_bcc=limit)

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        parsed, groups = self._groups(message, recipients)
        body = {"Messages": build_messages(parsed, groups, message.id)}
        return jsonapi.post_json(self.client, "/v3.1/send", body), _lost(parsed)

    def read(self, answer: http.Answer) -> http.Reading:
        return _read_error(answer)

    def _error(self, error: Mapping[str, Any], status: int) -> tuple[Rule, str]:
        code = http.str_or_none(error.get("ErrorCode"))
        rule = http.classify(self.TABLE, int(error.get("StatusCode") or status), code)
        return rule, _error_words(error, status)

    def batches(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Sequence[OutboundRecipient]]:
        """One call per 50 messages (many Bcc recipients alone make many messages)."""
        _, groups = self._groups(message, recipients)
        if len(groups) <= MAX_MESSAGES:
            return [recipients]
        calls = [
            groups[start : start + MAX_MESSAGES] for start in range(0, len(groups), MAX_MESSAGES)
        ]
        return http.regroup(recipients, [[a for g in call for a in g.recipients] for call in calls])

    def settle(
        self,
        message: OutboundMessage,
        recipients: Sequence[OutboundRecipient],
        answer: http.Answer,
        duration: float,
        lost: Sequence[str],
    ) -> list[Outcome]:
        """Per message, and inside a failed message per recipient; one verdict for all
        when the answer has no per-message results."""
        entries = _entries(answer)
        _, groups = self._groups(message, recipients)
        if entries is None or len(entries) != len(groups):
            return self.outcomes(answer, recipients, duration, lost)
        remote = RemoteInfo(mailer=self.name, host=self.host)
        results: dict[str, Outcome] = {}
        for group, entry in zip(groups, entries, strict=True):
            for item in self._read_entry(
                group, entry, status=answer.status, remote=remote, duration=duration, lost=lost
            ):
                results[item.recipient.lower()] = item
        return [results[r.address.lower()] for r in recipients]

    def _read_entry(
        self,
        group: Addressed,
        entry: Mapping[str, Any],
        *,
        status: int,
        remote: RemoteInfo,
        duration: float,
        lost: Sequence[str],
    ) -> list[Outcome]:
        if entry.get("Status") == "success":
            ids = {
                str(item.get("Email", "")).lower(): str(item.get("MessageID", ""))
                for field in ("To", "Cc", "Bcc")
                for item in entry.get(field) or ()
                if isinstance(item, dict)
            }
            suffix = f" (not carried: {'; '.join(lost)})" if lost else ""
            found = []
            for address in group.recipients:
                provider_id = ids.get(address.lower()) or None
                here = RemoteInfo(mailer=self.name, host=self.host, provider_id=provider_id)
                text = f"accepted as {provider_id}{suffix}"
                found.append(
                    jsonapi.outcome(
                        address, http.classify(self.TABLE, 200), text, here, duration=duration
                    )
                )
            return found
        refused: dict[str, tuple[Rule, str]] = {}
        errors = [e for e in entry.get("Errors") or () if isinstance(e, dict)]
        fields = {"To": group.to, "Cc": group.cc, "Bcc": group.bcc}
        for error in errors:
            rule, words = self._error(error, status)
            for related in error.get("ErrorRelatedTo") or ():
                match = _FIELD.match(str(related))
                boxes = fields.get(match.group(1), ()) if match else ()
                if match and int(match.group(2)) < len(boxes):
                    refused[boxes[int(match.group(2))].email.lower()] = (rule, words)
        message_rule, message_words = self._error(errors[0] if errors else {}, status)
        found = []
        for address in group.recipients:
            if address.lower() in refused:
                rule, words = refused[address.lower()]
                found.append(jsonapi.outcome(address, rule, words, remote, duration=duration))
            elif refused:
                words = "not sent: Mailjet refused another recipient of the message"
                found.append(
                    jsonapi.outcome(
                        address, _NOT_SENT, words, remote, duration=duration, failover=False
                    )
                )
            else:
                found.append(
                    jsonapi.outcome(address, message_rule, message_words, remote, duration=duration)
                )
        return found


def _error_words(error: Mapping[str, Any], status: int) -> str:
    parts = (
        f"HTTP {error.get('StatusCode') or status}",
        error.get("ErrorCode"),
        error.get("ErrorMessage"),
    )
    return " ".join(str(p) for p in parts if p)


def _entries(answer: http.Answer) -> list[Mapping[str, Any]] | None:
    """The per-message results of a 200 or 400 answer; None for any other answer."""
    if answer.status not in (200, 400):
        return None
    data = answer.json()
    messages = data.get("Messages") if isinstance(data, dict) else None
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return None
    return messages
