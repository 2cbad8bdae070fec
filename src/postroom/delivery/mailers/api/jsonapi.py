"""Pieces shared by the JSON-only provider modules here (Mailjet, SendLayer, Zoho):
base64 for attachments, and outcomes built one recipient at a time when a provider
answers per message or per recipient (the base's ``outcomes`` gives one verdict to all).
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import httpx

from postroom.delivery.mailers.api.http import Rule, Verdict
from postroom.delivery.outcome import Disposition, Outcome, RemoteInfo
from postroom.smtp.replies import Reply

__all__ = ["b64", "json_body", "outcome", "post_json"]

_log = logging.getLogger("postroom.delivery")

_CODES = {Verdict.ACCEPTED: 250, Verdict.REJECTED: 550}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


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
