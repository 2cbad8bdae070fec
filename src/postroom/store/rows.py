"""The rows of a new message as every engine stores them (columns in schema order)."""

from __future__ import annotations

from typing import Any

from postroom.mail.envelope import Notify
from postroom.store.models import NewMessage, RecipientStatus

__all__ = ["message_row", "recipient_rows"]


def message_row(message: NewMessage) -> tuple[Any, ...]:
    """The messages row of a new message, in the columns' order (any engine)."""
    env, src = message.envelope, message.source
    return (
        message.id,
        str(env.sender) if env.sender is not None else "",
        env.dsn.ret,
        env.dsn.envid,
        env.body,
        env.smtputf8,
        message.size,
        message.received_at,
        src.kind,
        src.principal,
        src.client_ip,
        src.client_port,
        src.helo,
        src.reverse_dns,
        src.protocol,
        src.tls,
        src.listener,
    )


def recipient_rows(message: NewMessage) -> list[tuple[Any, ...]]:
    """The recipients rows of a new message: queued, due at once (any engine)."""
    queued = RecipientStatus.QUEUED.value
    mid, now = message.id, message.received_at
    return [
        (mid, position, str(rcpt.address), _notify_text(rcpt.notify), rcpt.orcpt, queued, now)
        for position, rcpt in enumerate(message.envelope.recipients)
    ]


_NOTIFY_ORDER = tuple(Notify)


def _notify_text(notify: frozenset[Notify] | None) -> str | None:
    if notify is None:
        return None
    return ",".join(n.value for n in _NOTIFY_ORDER if n in notify)
