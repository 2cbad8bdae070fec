"""Store rows -> the API's answer models (times as RFC 3339 UTC strings)."""

from __future__ import annotations

import email.policy
from datetime import UTC, datetime
from email.errors import MessageError
from email.parser import BytesHeaderParser

from postroom.api.schemas import (
    AttemptOut,
    MessageDetail,
    MessageSummary,
    RecipientOut,
    SourceOut,
)
from postroom.store.models import Attempt, MessageMeta, StoredMessage

__all__ = ["detail", "header_meta", "rfc3339", "summary"]

_HEADER_BYTES = 64 * 1024  # enough for any sane header block


def rfc3339(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def header_meta(queue_id: str, data: bytes) -> MessageMeta:
    """Message-ID and Subject read from a stored message (one not sent through the API)."""
    end = data.find(b"\r\n\r\n", 0, _HEADER_BYTES)
    head = data[: end + 2] if end >= 0 else data[:_HEADER_BYTES]
    try:
        parsed = BytesHeaderParser(policy=email.policy.default).parsebytes(head)
        message_id, subject = parsed.get("Message-ID"), parsed.get("Subject")
    except (MessageError, AttributeError, IndexError, TypeError, ValueError):  # parser trips
        return MessageMeta(queue_id, None, None)
    return MessageMeta(
        queue_id,
        None if message_id is None else str(message_id).strip(),
        None if subject is None else str(subject),
    )


def _reply(a: Attempt) -> str:
    words = [str(a.code) if a.code is not None else "", a.enhanced or "", a.text]
    return " ".join(w for w in words if w)


def _attempt(a: Attempt) -> AttemptOut:
    return AttemptOut(
        at=rfc3339(a.at),
        recipient=a.recipient,
        mailer=a.mailer,
        status=a.disposition,  # type: ignore[arg-type]
        reply=_reply(a),
        remote_host=a.host,
        remote_ip=a.ip,
        provider_id=a.provider_id,
        duration=a.duration,
        route=a.route,
        route_reason=a.route_reason,
    )


def summary(m: StoredMessage, meta: MessageMeta | None) -> MessageSummary:
    return MessageSummary(
        id=m.id,
        message_id=meta.message_id if meta else None,
        sender=m.sender,
        subject=meta.subject if meta else None,
        received_at=rfc3339(m.received_at),
        size=m.size,
        held=m.held,
        source=SourceOut(kind=m.source_kind, principal=m.principal, dsn_of=m.dsn_of),
        tags=list(meta.tags) if meta else [],
        metadata=dict(meta.metadata) if meta else {},
        recipients=[
            RecipientOut(
                address=r.address,
                status=r.status.value,
                attempts=r.attempts,
                next_attempt_at=None if r.next_attempt_at is None else rfc3339(r.next_attempt_at),
                last_reply=r.last_reply,
            )
            for r in m.recipients
        ],
    )


def detail(m: StoredMessage, meta: MessageMeta | None, attempts: list[Attempt]) -> MessageDetail:
    return MessageDetail(
        **dict(summary(m, meta)),
        attempts=[_attempt(a) for a in attempts],
        body_removed=m.body_removed,
    )
