"""Rows the store takes and gives back."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from postroom.mail.envelope import Envelope, Source
from postroom.mail.events import MailEvent, iso_time
from postroom.mail.spool import SpooledBody

__all__ = [
    "GLOBAL_SCOPE",
    "AdminAction",
    "AdminRecord",
    "ApiKeyRecord",
    "Attempt",
    "AttemptCount",
    "AttemptTally",
    "AttemptTotals",
    "Claim",
    "FailureReason",
    "IdempotencyRecord",
    "LogQuery",
    "MailerHealth",
    "MessageMeta",
    "NewMessage",
    "ProviderEventRecord",
    "QueueSummary",
    "RecipientState",
    "RecipientStatus",
    "RecipientUpdate",
    "StoredMessage",
    "Suppression",
    "SuppressionReason",
    "UserRecord",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookState",
    "Window",
]


class RecipientStatus(StrEnum):
    QUEUED = "queued"  # waiting for its first attempt
    DEFERRED = "deferred"  # an attempt failed temporarily; next_attempt_at says when again
    DELIVERED = "delivered"
    BOUNCED = "bounced"  # a permanent failure (5xx); a DSN went to the sender
    EXPIRED = "expired"  # deferred past the queue lifetime, then bounced
    REJECTED = "rejected"  # refused at queueing (suppressed): never attempted, no DSN

    @property
    def is_final(self) -> bool:
        return self not in (RecipientStatus.QUEUED, RecipientStatus.DEFERRED)


# Bodies (trace headers included) above this many bytes leave the row where an engine
# has somewhere better for them (PostgreSQL: large objects); ``database.inline_body_max``.
DEFAULT_INLINE_BODY_MAX = 1 << 20
# PostgreSQL: seconds a call may go unanswered ([database] timeout; store/postgres/guard.py).
DEFAULT_DATABASE_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class NewMessage:
    """What intake hands the store: the stored bytes are ``header`` then ``body``."""

    id: str
    envelope: Envelope
    source: Source
    received_at: float
    header: bytes  # prepended trace headers (Received:), CRLF-terminated
    body: SpooledBody
    # Recipients refused at queueing (the suppression list): address -> the reply kept
    # as their last_reply; they are stored REJECTED, never claimed.
    rejected: tuple[tuple[str, str], ...] = ()
    # Events committed with the message (queued, rejected): the outbox, see EventStore.
    events: tuple[MailEvent, ...] = ()
    # Submitted mail: its Message-ID and the tags and metadata given at send time.
    meta: MessageMeta | None = None
    # Recipients stored already claimed until ``lease_until`` (a claim's lease): the
    # accepting process delivers them itself once this commit is durable, and the
    # scheduler takes them only if that lease ends unsettled (the process died).
    leased: frozenset[str] = frozenset()
    lease_until: float | None = None

    @property
    def size(self) -> int:
        return len(self.header) + self.body.size


@dataclass(frozen=True, slots=True)
class RecipientState:
    address: str
    status: RecipientStatus
    notify: str | None  # comma-separated NOTIFY values, None when not given
    orcpt: str | None
    attempts: int
    next_attempt_at: float | None
    last_reply: str | None
    delay_warned: bool = False


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: str
    sender: str  # "" for the null reverse-path
    recipients: tuple[RecipientState, ...]
    ret: str | None
    envid: str | None
    body_type: str
    smtputf8: bool
    size: int
    received_at: float
    source_kind: str
    principal: str | None
    client_ip: str | None
    helo: str | None
    protocol: str | None
    tls: str | None
    held: bool
    client_port: int | None = None
    reverse_dns: str | None = None
    listener: str | None = None
    dsn_of: str | None = None  # a DSN postroom made: the queue id of the message it reports on
    body_removed: bool = False  # retention.bodies_days removed it; the log stays


@dataclass(frozen=True, slots=True)
class UserRecord:
    address: str  # the lookup key: Address.key
    password_hash: str
    sender_domains: tuple[str, ...]  # A-labels, besides the user's own domain
    created_at: float
    any_sender: bool = False  # may send as any domain


@dataclass(frozen=True, slots=True)
class Claim:
    """Due recipients of one message, leased to this process until ``lease_until``.

    A claim that is not settled by ``record_outcomes`` (the process died) becomes due
    again when the lease runs out: delivery is at least once.

    ``body``: the message's stored bytes when the claim read them with it (an engine
    may, for small messages: one read fewer per message); None: ``read_body``."""

    message: StoredMessage
    recipients: tuple[RecipientState, ...]
    lease_until: float
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One delivery attempt for one recipient: a row of the email log."""

    message_id: str
    recipient: str
    at: float  # when the attempt started
    mailer: str
    disposition: str  # delivered | deferred | bounced
    code: int | None
    enhanced: str | None
    text: str
    host: str | None = None
    ip: str | None = None
    port: int | None = None
    tls: str | None = None
    provider_id: str | None = None
    duration: float = 0.0
    # The route taken and why, as the router decided then (None: recorded before
    # postroom kept it).
    route: str | None = None
    route_reason: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptTally:
    """Attempts of one period by mailer, recipient domain and disposition."""

    mailer: str
    domain: str  # the recipient's domain, lower case
    disposition: str  # delivered | deferred | bounced
    count: int


@dataclass(frozen=True, slots=True)
class FailureReason:
    """Failed attempts of one period with the same reply code and enhanced code."""

    code: int | None
    enhanced: str | None
    count: int
    example: str  # one of their reply texts


@dataclass(frozen=True, slots=True)
class AttemptTotals:
    """What the email log says of a period (the summary report)."""

    counts: tuple[AttemptTally, ...]  # sorted by mailer, domain, disposition
    reasons: tuple[FailureReason, ...]  # the most frequent first


@dataclass(frozen=True, slots=True)
class MailerHealth:
    """One mailer as the email log saw it (``postroom mailer status``)."""

    mailer: str
    last_success_at: float | None
    last_success: str | None  # the reply text
    last_error_at: float | None  # the last attempt that was not a delivery
    last_error: str | None
    sent_since: int  # messages it delivered since the time asked about


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """What waits in the queue (``postroom status``): recipients not yet final, by state."""

    queued: int  # waiting for their first attempt, not held
    deferred: int  # waiting for a retry, not held
    held: int  # queued or deferred, in held messages
    messages: int  # messages with any such recipient, held or not (see more_messages)
    oldest_id: str | None  # the oldest of those messages
    oldest_received_at: float | None
    # More than ``messages`` wait: they are counted up to a bound (store.totals), while
    # the recipients are counted exactly.
    more_messages: bool = False


@dataclass(frozen=True, slots=True)
class RecipientUpdate:
    """The new state of one claimed recipient after an attempt."""

    address: str
    status: RecipientStatus
    next_attempt_at: float | None  # for DEFERRED; None for final states
    last_reply: str
    delay_warned: bool = False  # a delay DSN has now been sent for it


@dataclass(frozen=True, slots=True)
class LogQuery:
    """Filters of the email log (CLI ``postroom log`` and later the HTTP API)."""

    status: str | None = None  # a RecipientStatus value, or "held"
    # a recipient address, the start of one, or of its domain ("@example.net": the domain
    # only), without regard to case
    to: str | None = None
    sender: str | None = None  # substring of the sender address
    since: float | None = None  # received at or after
    limit: int = 100
    cursor: str | None = None  # a message id: continue after it (newest first)
    # Only messages from this source kind ("api"), and this principal (an API key's name).
    source_kind: str | None = None
    principal: str | None = None
    until: float | None = None  # received before
    mailer: str | None = None  # some attempt went through this mailer
    subject: str | None = None  # substring of the Subject intake recorded (message meta)
    tag: str | None = None  # one of the tags recorded (the API's, or X-Postroom-Tag)
    # A message id: only it and newer messages (a search bounded to the messages between
    # cursor and floor; LogStore.newest_before finds where such a bound falls).
    floor: str | None = None
    dsn_of: str | None = None  # the DSNs postroom made about this message (by queue id)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An HTTP API key at rest: ``key_id`` finds it, ``secret_hash`` checks it."""

    name: str
    key_id: str
    secret_hash: str  # hex SHA-256 of the secret part
    sender_domains: tuple[str, ...]  # A-labels, besides the local domains
    created_at: float
    scopes: tuple[str, ...] = ("send", "read")  # what the key may do (directory.apikeys.Scope)
    any_sender: bool = False  # may send as any domain


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """What intake records of every message beside the envelope (the log, the dashboard
    and the events read it): its Message-ID, Subject, tags and metadata."""

    id: str  # the queue id
    message_id: str | None  # the Message-ID header value
    subject: str | None
    tags: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The first answer to a request with an Idempotency-Key, kept for replay."""

    key_name: str  # the API key's name: Idempotency-Keys are per API key
    key: str
    request_hash: str
    status: int
    body: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class ProviderEventRecord:
    """What a provider's callback said about a message sent through its API."""

    mailer: str
    provider_id: str  # the provider's message id, as in the attempt's provider_id
    recipient: str
    status: str  # delivered | bounced | deferred | complained | opened | clicked | other
    kind: str  # the provider's own event name
    at: float  # when the provider says it happened
    detail: str
    received_at: float
    message_id: str | None = None  # the message it belongs to; None when none matched


class SuppressionReason(StrEnum):
    HARD_BOUNCE = "hard_bounce"  # a permanent failure: our delivery, a DSN, a provider
    COMPLAINT = "complaint"  # marked as spam (a provider's feedback loop)
    UNSUBSCRIBE = "unsubscribe"  # List-Unsubscribe, or a provider's unsubscribe event
    MANUAL = "manual"  # added by an operator or an application


GLOBAL_SCOPE = ""
"""A suppression's scope: every sender (``""``), or one sender domain (its A-label)."""


@dataclass(frozen=True, slots=True)
class Suppression:
    """An address postroom does not send to: from any sender (``scope`` ``""``), or
    from senders of the domain ``scope``. ``address`` and ``scope`` are lower case."""

    address: str
    scope: str
    reason: SuppressionReason
    source: str  # what added it: "delivery QUEUEID", "provider NAME", "api key NAME", "cli"
    created_at: float
    detail: str = ""  # the reply or the provider's words that caused it

    def as_json(self) -> dict[str, object]:
        """As the CLI's --json and the API show it."""
        return {
            "address": self.address,
            "scope": self.scope,
            "reason": self.reason.value,
            "source": self.source,
            "created_at": iso_time(self.created_at),
            "detail": self.detail,
        }


class WebhookState(StrEnum):
    PENDING = "pending"  # not yet taken by the receiver; tried again at next_attempt_at
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # given up (the retry period ended)


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One event on its way to one configured webhook (``[[webhooks]]`` name)."""

    webhook: str
    event: MailEvent
    state: WebhookState
    attempts: int
    created_at: float  # when the event was given to this webhook: retries count from it
    next_attempt_at: float | None  # None once delivered or failed
    last_attempt_at: float | None = None
    last_status: int | None = None  # the receiver's HTTP status; None: no answer
    last_error: str = ""  # why the last attempt failed ("" when it did not)

    def as_json(self) -> dict[str, object]:
        """As the CLI's --json and the API show it."""
        return {
            "webhook": self.webhook,
            "state": self.state.value,
            "attempts": self.attempts,
            "next_attempt_at": _iso_or_none(self.next_attempt_at),
            "last_attempt_at": _iso_or_none(self.last_attempt_at),
            "last_status": self.last_status,
            "last_error": self.last_error,
            "event": self.event.as_json(),
        }


def _iso_or_none(at: float | None) -> str | None:
    return None if at is None else iso_time(at)


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """What one POST of ``event_id`` to ``webhook`` came to. ``next_attempt_at``: when to
    try again (None: delivered when ``ok``, else given up)."""

    webhook: str
    event_id: str
    at: float
    ok: bool
    status: int | None
    error: str
    next_attempt_at: float | None


@dataclass(frozen=True, slots=True)
class Window:
    """A fixed window of a shared limit: at most ``limit`` in each ``seconds`` span,
    spans aligned to the epoch (so a day is a UTC day)."""

    key: str
    seconds: int
    limit: int

    def ends_at(self, now: float) -> float:
        return float((int(now // self.seconds) + 1) * self.seconds)


@dataclass(frozen=True, slots=True)
class AttemptCount:
    """Attempts in one time slot by one mailer for one sender domain with one outcome."""

    slot: float  # the slot's start
    mailer: str
    sender_domain: str  # "" for the null sender
    disposition: str
    count: int


@dataclass(frozen=True, slots=True)
class AdminRecord:
    """A dashboard administrator: a login of its own, never a mail user."""

    name: str
    password_hash: str  # argon2id, as users' passwords
    created_at: float
    sessions_after: float = 0.0  # sessions begun at or before this (a logout) are over


@dataclass(frozen=True, slots=True)
class AdminAction:
    """One thing an administrator did in the dashboard, for the audit log."""

    at: float
    admin: str
    action: str  # "hold", "login", "apikey create", ...
    target: str  # what it was done to: a queue id, a key name, "" for none
    client: str  # the client address the request came from
