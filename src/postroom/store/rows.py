"""Rows as every engine stores and reads them (columns in schema order), and the checks
of arguments every engine refuses alike: the SQL differs by engine, the rows do not."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from postroom.mail.envelope import Notify
from postroom.store.models import (
    ApiKeyRecord,
    Attempt,
    AttemptCount,
    IdempotencyRecord,
    LogQuery,
    MessageMeta,
    NewMessage,
    RecipientState,
    RecipientStatus,
    RecipientUpdate,
    StoredMessage,
    UserRecord,
)

__all__ = [
    "ATTEMPT_FIELDS",
    "CLAIM_BODY_MAX",
    "HAS_BODY",
    "HELD",
    "MESSAGE_FIELDS",
    "STATUS_FILTERS",
    "STORED_COLUMNS",
    "answer_row",
    "api_key_params",
    "api_key_row",
    "attempt_count_of",
    "attempt_counts_sql",
    "check_lease",
    "check_outcomes",
    "check_query",
    "message_row",
    "meta_of",
    "meta_row",
    "notify_text",
    "outcome_rows",
    "recipient_rows",
    "recipient_state",
    "rollup_params",
    "stored_message",
    "user_params",
    "user_row",
]

# The messages columns as StoredMessage names its fields.
MESSAGE_FIELDS = (
    "id", "sender", "ret", "envid", "body_type", "smtputf8", "size", "received_at",
    "source_kind", "principal", "client_ip", "client_port", "helo", "reverse_dns", "protocol",
    "tls", "listener", "dsn_of", "held",
)  # fmt: skip
# A claimed message up to this size comes with its body, read in the claim's
# transaction: a read (a transaction, a reader thread's round trip) fewer per message.
# At most a claim's limit of them at a time in memory (100 x 64 KiB by default).
CLAIM_BODY_MAX = 64 << 10
# Retention may remove a finished message's body before the rest (retention.bodies_days).
HAS_BODY = "EXISTS (SELECT 1 FROM message_bodies b WHERE b.id = m.id)"
# What a StoredMessage is read from (messages as m): its row, then whether the body is gone.
STORED_COLUMNS = ", ".join((*(f"m.{field}" for field in MESSAGE_FIELDS), f"NOT {HAS_BODY}"))
ATTEMPT_FIELDS = (
    "message_id", "recipient", "at", "mailer", "disposition", "code", "enhanced", "text",
    "host", "ip", "port", "tls", "provider_id", "duration", "route", "route_reason",
)  # fmt: skip
HELD = "held"
STATUS_FILTERS = frozenset({*(s.value for s in RecipientStatus), HELD})


def message_row(message: NewMessage) -> tuple[Any, ...]:
    """The messages row of a new message, in the columns' order (any engine), plain
    values only (no enum members: the row may cross to another process)."""
    env, src = message.envelope, message.source
    return (
        message.id,
        str(env.sender) if env.sender is not None else "",
        None if env.dsn.ret is None else env.dsn.ret.value,
        env.dsn.envid,
        env.body,
        env.smtputf8,
        message.size,
        message.received_at,
        src.kind.value,
        src.principal,
        src.client_ip,
        src.client_port,
        src.helo,
        src.reverse_dns,
        src.protocol,
        src.tls,
        src.listener,
        src.dsn_of,
    )


def recipient_rows(message: NewMessage) -> list[tuple[Any, ...]]:
    """The recipients rows of a new message: queued, due at once, or rejected at
    queueing with their reply and never due (any engine); the columns are (message_id,
    position, address, notify, orcpt, status, next_attempt_at, last_reply,
    claimed_until): a recipient in ``message.leased`` is stored claimed until
    ``message.lease_until``."""
    queued, rejected = RecipientStatus.QUEUED.value, RecipientStatus.REJECTED.value
    refused = dict(message.rejected)
    mid, now = message.id, message.received_at
    leased, until = message.leased, message.lease_until
    rows: list[tuple[Any, ...]] = []
    for position, rcpt in enumerate(message.envelope.recipients):
        address = str(rcpt.address)
        reply = refused.get(address)
        state = (queued, now) if reply is None else (rejected, None)
        claimed = until if reply is None and address in leased else None
        rows.append(
            (mid, position, address, notify_text(rcpt.notify), rcpt.orcpt, *state, reply, claimed)
        )
    return rows


_NOTIFY_ORDER = tuple(Notify)


def notify_text(notify: frozenset[Notify] | None) -> str | None:
    if notify is None:
        return None
    return ",".join(n.value for n in _NOTIFY_ORDER if n in notify)


def stored_message(row: Sequence[Any], recipients: tuple[RecipientState, ...]) -> StoredMessage:
    """A row of STORED_COLUMNS and its recipients as a StoredMessage."""
    *columns, body_removed = row
    fields = dict(zip(MESSAGE_FIELDS, columns, strict=True))
    fields["smtputf8"] = bool(fields["smtputf8"])
    fields["held"] = bool(fields["held"])
    return StoredMessage(recipients=recipients, body_removed=bool(body_removed), **fields)


def recipient_state(r: Sequence[Any]) -> RecipientState:
    """A recipients row from address on: address, status, notify, orcpt, attempts,
    next_attempt_at, last_reply, delay_warned."""
    return RecipientState(r[0], RecipientStatus(r[1]), r[2], r[3], r[4], r[5], r[6], bool(r[7]))


def outcome_rows(
    message_id: str, updates: Sequence[RecipientUpdate], attempts: Sequence[Attempt]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """record_outcomes' parameters: per update (status, next_attempt_at, last_reply,
    delay_warned, 1 if it has an attempt row else 0, message_id, address), and the
    attempt rows in ATTEMPT_FIELDS order."""
    tried = {a.recipient for a in attempts}
    recipient_params = [
        (
            u.status.value,
            u.next_attempt_at,
            u.last_reply,
            u.delay_warned,
            1 if u.address in tried else 0,
            message_id,
            u.address,
        )
        for u in updates
    ]
    return recipient_params, [tuple(getattr(a, f) for f in ATTEMPT_FIELDS) for a in attempts]


def meta_row(meta: MessageMeta) -> tuple[Any, ...]:
    """(id, message_id, subject, tags JSON, metadata JSON), then the id once more for the
    check that the message still exists."""
    # Most messages have neither: their JSON is a constant, not two encodings a message.
    tags = json.dumps(list(meta.tags)) if meta.tags else "[]"
    metadata = json.dumps(dict(meta.metadata)) if meta.metadata else "{}"
    return (meta.id, meta.message_id, meta.subject, tags, metadata, meta.id)


ANSWER_COLUMNS = "key_name, key, request_hash, status, body, created_at"  # answer_row's order


def answer_of(row: Sequence[Any]) -> IdempotencyRecord:
    """An idempotency row read as ANSWER_COLUMNS."""
    key_name, key, request_hash, status, body, created_at = row
    return IdempotencyRecord(key_name, key, request_hash, status, bytes(body), created_at)


def answer_row(answer: IdempotencyRecord) -> tuple[Any, ...]:
    return (
        answer.key_name,
        answer.key,
        answer.request_hash,
        answer.status,
        answer.body,
        answer.created_at,
    )


# -- arguments every engine refuses alike -----------------------------------------------
def check_lease(lease: float) -> None:
    if lease <= 0:
        raise ValueError(f"a lease must be positive, not {lease}")


def check_outcomes(
    message_id: str, updates: Sequence[RecipientUpdate], attempts: Sequence[Attempt]
) -> None:
    for attempt in attempts:
        if attempt.message_id != message_id:
            raise ValueError(f"attempt of {attempt.message_id} recorded for {message_id}")
    for update in updates:
        if not update.status.is_final and update.next_attempt_at is None:
            raise ValueError(f"{update.address}: {update.status} needs a next attempt time")


def check_query(query: LogQuery) -> None:
    if query.status is not None and query.status not in STATUS_FILTERS:
        raise ValueError(f"unknown status filter {query.status!r}")


def user_row(row: Sequence[Any]) -> UserRecord:
    address, password_hash, domains, created_at, any_sender = row
    return UserRecord(
        address,
        password_hash,
        tuple(filter(None, domains.split(","))),
        created_at,
        any_sender=bool(any_sender),
    )


def api_key_row(row: Sequence[Any]) -> ApiKeyRecord:
    name, key_id, secret_hash, domains, created_at, scopes, any_sender = row
    return ApiKeyRecord(
        name,
        key_id,
        secret_hash,
        tuple(filter(None, domains.split(","))),
        created_at,
        tuple(filter(None, scopes.split(","))),
        any_sender=bool(any_sender),
    )


def api_key_params(record: ApiKeyRecord) -> tuple[Any, ...]:
    return (
        record.name,
        record.key_id,
        record.secret_hash,
        ",".join(record.sender_domains),
        record.created_at,
        ",".join(record.scopes),
        record.any_sender,
    )


def user_params(user: UserRecord) -> tuple[Any, ...]:
    domains = ",".join(user.sender_domains)
    return (user.address, user.password_hash, domains, user.created_at, user.any_sender)


def meta_of(row: Sequence[Any]) -> MessageMeta:
    """A message_meta row (id, message_id, subject, tags JSON, metadata JSON)."""
    queue_id, message_id, subject, tags, metadata = row
    return MessageMeta(
        queue_id, message_id, subject, tuple(json.loads(tags)), tuple(json.loads(metadata).items())
    )


# The periods attempt_rollups keeps (schema.sql); a bucket is a whole number of one.
ROLLUP_PERIODS = (3600, 300)


def attempt_counts_sql(mark: str) -> str:
    """``LogStore.attempt_counts``' query for either engine (``mark``: its placeholder),
    summing the rollup rows of one period into buckets; parameters from ``rollup_params``."""
    return (
        f"SELECT slot / {mark} * {mark}, mailer, sender_domain, disposition, sum(count)"
        f" FROM attempt_rollups WHERE period = {mark} AND slot >= {mark}"
        " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
    )


def rollup_params(since: float, bucket: float) -> tuple[int, int, int, int]:
    """(bucket, bucket, period, first slot) for ``attempt_counts_sql``: whole buckets from
    the one that holds ``since``, each summed from the longest period that divides it."""
    whole = int(bucket)
    period = next((p for p in ROLLUP_PERIODS if whole == bucket and whole % p == 0), None)
    if period is None or whole <= 0:
        raise ValueError(f"bucket must be a positive multiple of {min(ROLLUP_PERIODS)} seconds")
    return whole, whole, period, int(since // whole) * whole


def attempt_count_of(row: Sequence[Any]) -> AttemptCount:
    return AttemptCount(float(row[0]), row[1], row[2], row[3], int(row[4]))
