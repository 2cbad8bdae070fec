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
from types import MappingProxyType
from typing import Any, Final

import httpx

from postroom.clock import Clock
from postroom.config.providers import MailjetMailerSettings
from postroom.delivery.mailers.api.http import (
    DEFAULT_TABLE,
    Answer,
    HttpMailer,
    NoAnswer,
    Reading,
    Rule,
    Table,
    Verdict,
    classify,
    environ_or,
    resolve_secret,
)
from postroom.delivery.mailers.api.jsonapi import b64, outcome, post_json
from postroom.delivery.mailers.api.mimeparts import Attachment, Mailbox, ParsedMessage, parse
from postroom.delivery.mailers.api.rcptsplit import Addressed, split
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Outcome, RemoteInfo
from postroom.smtp.replies import Reply

__all__ = ["MAX_MESSAGES", "MAX_PER_FIELD", "TABLE", "MailjetMailer", "build_messages"]

MAX_PER_FIELD: Final = 50
MAX_MESSAGES: Final = 50  # per call

TABLE: Final[Table] = MappingProxyType(
    {
        **DEFAULT_TABLE,
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
    return [{"Email": b.email, "Name": b.name} if b.name else {"Email": b.email} for b in boxes]


def _files(parts: Sequence[Attachment], inline: bool) -> list[dict[str, str]]:
    files = []
    for part in parts:
        if part.inline != inline:
            continue
        item = {
            "ContentType": part.content_type,
            "Filename": part.filename or (part.content_id or "attachment"),
            "Base64Content": b64(part.content),
        }
        if inline and part.content_id:
            item["ContentID"] = part.content_id
        files.append(item)
    return files


def build_messages(
    parsed: ParsedMessage, groups: Sequence[Addressed], custom_id: str
) -> list[dict[str, Any]]:
    base: dict[str, Any] = {"Subject": parsed.subject, "CustomID": custom_id}
    if parsed.sender is not None:
        base["From"] = _boxes([parsed.sender])[0]
    if parsed.reply_to:
        base["ReplyTo"] = _boxes(parsed.reply_to)[0]
    if parsed.text is not None:
        base["TextPart"] = parsed.text
    if parsed.html is not None:
        base["HTMLPart"] = parsed.html
    if parsed.headers:
        base["Headers"] = dict(parsed.headers)
    if attachments := _files(parsed.attachments, inline=False):
        base["Attachments"] = attachments
    if inlined := _files(parsed.attachments, inline=True):
        base["InlinedAttachments"] = inlined
    messages = []
    for group in groups:
        message = {**base, "To": _boxes(group.to)}
        if group.cc:
            message["Cc"] = _boxes(group.cc)
        if group.bcc:
            message["Bcc"] = _boxes(group.bcc)
        messages.append(message)
    return messages


def _read_error(answer: Answer) -> Reading:
    """A whole-call error: ``{"ErrorCode": "mj-0002", "ErrorMessage": ...}``, or text (429)."""
    data = answer.json()
    if not isinstance(data, dict):
        return Reading(text=answer.text)
    code = data.get("ErrorCode")
    return Reading(code=str(code) if code else None, text=str(data.get("ErrorMessage") or ""))


def _lost(parsed: ParsedMessage) -> list[str]:
    lost = list(parsed.lost)
    names = [name.lower() for name, _ in parsed.headers]
    if len(set(names)) != len(names):
        lost.append("repeated headers (one of each is sent)")
    if len(parsed.reply_to) > 1:
        lost.append("Reply-To addresses after the first")
    return lost


class MailjetMailer(HttpMailer):
    TABLE = TABLE

    def __init__(
        self,
        settings: MailjetMailerSettings,
        *,
        clock: Clock,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        env = environ_or(environ)
        auth = httpx.BasicAuth(
            resolve_secret(settings, env), resolve_secret(settings, env, value="secret_key")
        )
        super().__init__(settings, clock=clock, auth=auth, transport=transport)

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
        request = post_json(self.client, "/v3.1/send", body)
        return request, tuple(_lost(parsed))

    def read(self, answer: Answer) -> Reading:
        return _read_error(answer)

    def _error(self, error: Mapping[str, Any], status: int) -> tuple[Rule, str]:
        code = str(error.get("ErrorCode") or "") or None
        rule = classify(self.TABLE, int(error.get("StatusCode") or status), code)
        return rule, _error_words(error, status)

    async def deliver(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Outcome]:
        """One call per 50 messages (many Bcc recipients alone make many messages)."""
        _, groups = self._groups(message, recipients)
        if len(groups) <= MAX_MESSAGES:
            return await self._call(message, recipients)
        by_address = {r.address.lower(): r for r in recipients}
        outcomes: list[Outcome] = []
        for start in range(0, len(groups), MAX_MESSAGES):
            batch = groups[start : start + MAX_MESSAGES]
            members = [by_address[a.lower()] for g in batch for a in g.recipients]
            outcomes.extend(await self._call(message, members))
        order = {r.address.lower(): i for i, r in enumerate(recipients)}
        return sorted(outcomes, key=lambda o: order[o.recipient.lower()])

    async def _call(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Outcome]:
        wait_until = self.window.take(self.clock.time())
        if wait_until is not None:
            return self._over_limit(recipients, wait_until)
        started = self.clock.monotonic()
        answer, lost = await self.exchange(message, recipients)
        duration = self.clock.monotonic() - started
        if isinstance(answer, NoAnswer):
            reply = Reply(451, answer.enhanced, f"{self.name}: {answer.text}")
            return [self._deferred(r.address, reply, duration) for r in recipients]
        entries = _entries(answer)
        _, groups = self._groups(message, recipients)
        if entries is None or len(entries) != len(groups):
            return self.outcomes(answer, recipients, duration, lost)  # one verdict for all
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
                    outcome(address, classify(self.TABLE, 200), text, here, duration=duration)
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
                found.append(outcome(address, rule, words, remote, duration=duration))
            elif refused:
                words = "not sent: Mailjet refused another recipient of the message"
                found.append(
                    outcome(address, _NOT_SENT, words, remote, duration=duration, failover=False)
                )
            else:
                found.append(
                    outcome(address, message_rule, message_words, remote, duration=duration)
                )
        return found


def _error_words(error: Mapping[str, Any], status: int) -> str:
    parts = (
        f"HTTP {error.get('StatusCode') or status}",
        error.get("ErrorCode"),
        error.get("ErrorMessage"),
    )
    return " ".join(str(p) for p in parts if p)


def _entries(answer: Answer) -> list[Mapping[str, Any]] | None:
    """The per-message results of a 200 or 400 answer; None for any other answer."""
    if answer.status not in (200, 400):
        return None
    data = answer.json()
    messages = data.get("Messages") if isinstance(data, dict) else None
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return None
    return messages
