"""Pieces shared by the JSON-only provider modules: the blocks every payload has (mailbox
objects, custom headers with the Message-ID, optional fields left out), posting JSON,
and outcomes built one recipient at a time when a provider answers per message or per
recipient (the base's ``outcomes`` gives one verdict to all).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from postroom.delivery.mailers.api.http import Rule, Verdict
from postroom.delivery.mailers.api.mimeparts import Mailbox, ParsedMessage
from postroom.delivery.outcome import Disposition, Outcome, RemoteInfo
from postroom.smtp.replies import Reply

__all__ = [
    "custom_headers",
    "json_body",
    "mailbox_object",
    "mailbox_objects",
    "optional",
    "outcome",
    "post_json",
]

_log = logging.getLogger("postroom.delivery")

_CODES = {Verdict.ACCEPTED: 250, Verdict.REJECTED: 550}
_ABSENT: tuple[object, ...] = (None, [], {})


def mailbox_object(box: Mailbox, email: str = "email", name: str = "name") -> dict[str, str]:
    """``{"email": ..., "name": ...}`` under the provider's keys; no name key without a name."""
    return {email: box.email, name: box.name} if box.name else {email: box.email}


def mailbox_objects(
    boxes: Sequence[Mailbox], email: str = "email", name: str = "name"
) -> list[dict[str, str]]:
    return [mailbox_object(box, email, name) for box in boxes]


def optional(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that have a value: None, empty lists and empty objects are left out
    (APIs refuse an empty ``cc`` or ``headers``); an empty string is a value."""
    return {key: value for key, value in fields.items() if value not in _ABSENT}


def custom_headers(
    parsed: ParsedMessage, provider: str, *, message_id: str | None = None
) -> tuple[dict[str, str], tuple[str, ...]]:
    """The custom headers as one JSON object, and what it could not carry: an object
    holds one value per name (header names are case-insensitive), so a repeated header
    keeps its last value. ``message_id`` is the key the Message-ID goes under, for APIs
    that take it among the headers."""
    # One entry per name in any spelling: the first one's place, the last one's value.
    headers = dict({name.lower(): (name, value) for name, value in parsed.headers}.values())
    lost = (
        (f"repeated custom headers ({provider} keeps one of each)",)
        if len(headers) < len(parsed.headers)
        else ()
    )
    if message_id is not None and parsed.message_id:
        headers[message_id] = parsed.message_id
    return headers, lost


def json_body(data: Any) -> bytes:
    """UTF-8 JSON; text that came from undecodable header bytes (lone surrogates) is
    replaced rather than let the request fail."""
    return json.dumps(data, ensure_ascii=False).encode("utf-8", "replace")


def post_json(client: httpx.AsyncClient, path: str, data: Any) -> httpx.Request:
    return client.build_request(
        "POST", path, content=json_body(data), headers={"Content-Type": "application/json"}
    )


def outcome(
    address: str,
    rule: Rule,
    text: str,
    remote: RemoteInfo,
    *,
    duration: float = 0.0,
    failover: bool | None = None,
) -> Outcome:
    """An outcome by the base's policy: accepted delivers, rejected bounces, the rest
    defers with failover (unless ``failover`` says otherwise); misconfiguration is loud."""
    disposition = {
        Verdict.ACCEPTED: Disposition.DELIVERED,
        Verdict.REJECTED: Disposition.BOUNCED,
    }.get(rule.verdict, Disposition.DEFERRED)
    if rule.verdict is Verdict.MISCONFIG:
        _log.error("mailer %s: %s refused the request: %s", remote.mailer, remote.host, text)
    reply = Reply(_CODES.get(rule.verdict, 451), rule.enhanced, f"{remote.mailer}: {text}"[:500])
    deferred = disposition is Disposition.DEFERRED
    return Outcome(
        address,
        disposition,
        reply,
        remote,
        deferred if failover is None else failover and deferred,
        duration,
    )
