"""The Store protocols: narrow, use-case methods, one protocol per part of the system.

An engine implements the parts one at a time; ``Store`` is all of them together, which
is what ``open_store`` returns. A consumer names the part it uses (the scheduler a
``QueueStore``, the directory a ``DirectoryStore``, the API's idempotency an
``ApiStore``), so a reader sees what it touches and a new engine sees what a part needs.
Each part has its own contract suite in ``tests/store/`` that every engine passes:

- ``StoreLifecycle``: ``tests/store/test_lifecycle.py``
- ``QueueStore``: ``test_queue.py``, ``test_delivery.py`` and ``test_queue_summary.py``
- ``LogStore``: ``test_log.py``, ``test_provider_events.py``, ``test_mailer_health.py``
- ``DirectoryStore``: ``test_directory.py``
- ``ApiStore``: ``test_api_rows.py``
- ``SuppressionStore``: ``test_suppressions.py``
- ``EventStore``: ``test_outbox.py``
- ``LimitStore``: ``test_limits.py``
- ``AdminStore``: ``test_admin.py``
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol, runtime_checkable

from postroom.mail.events import MailEvent
from postroom.store.models import (
    AdminAction,
    AdminRecord,
    ApiKeyRecord,
    Attempt,
    AttemptCount,
    AttemptTotals,
    Claim,
    IdempotencyRecord,
    LogQuery,
    MailerHealth,
    MessageMeta,
    NewMessage,
    ProviderEventRecord,
    QueueSummary,
    RecipientUpdate,
    StoredMessage,
    Suppression,
    UserRecord,
    WebhookAttempt,
    WebhookDelivery,
    WebhookState,
    Window,
)

__all__ = [
    "PARTS",
    "AdminStore",
    "ApiStore",
    "DirectoryStore",
    "EventRoute",
    "EventStore",
    "LimitStore",
    "LogStore",
    "QueueStore",
    "QueueWatch",
    "Store",
    "StoreLifecycle",
    "SuppressionStore",
    "missing_parts",
]


class StoreLifecycle(Protocol):
    """Opening, closing and naming a store."""

    async def start(self) -> None:
        """Open files and connections, create or migrate the schema."""

    async def aclose(self) -> None:
        """Finish pending commits, then close."""

    async def instance_id(self) -> str:
        """The id this store was given when it was created (the data directory's
        instance-id file names it, so a lost or replaced database is noticed)."""


class QueueStore(Protocol):
    """The queue: durable intake, leased claims for delivery, outcomes, operator
    actions (hold, retry, delete) and retention."""

    async def enqueue(self, message: NewMessage) -> None:
        """Store the message, envelope and DSN parameters; return only when the commit
        that holds them is durable (fsync'ed). Concurrent calls share commits.
        Raises StoreFull (client: 452 4.3.1) or StoreUnavailable (451 4.3.0); then
        nothing of the message remains."""

    async def message(self, message_id: str) -> StoredMessage | None: ...

    async def messages(self, *, limit: int = 100, after: str | None = None) -> list[StoredMessage]:
        """Messages in queue-id (time) order, ``limit`` at most, after ``after``."""

    async def read_body(self, message_id: str) -> bytes | None:
        """The stored bytes (trace headers and body) of a message."""

    async def read_heads(self, ids: Sequence[str], size: int) -> dict[str, bytes]:
        """The first ``size`` stored bytes of each of ``ids`` that has a body (the header
        block, for the log's subjects), without reading the rest."""

    async def count_messages(self) -> int: ...

    async def claim_due(self, now: float, *, limit: int, lease: float) -> list[Claim]:
        """Lease up to ``limit`` messages' due recipients (queued or deferred, next attempt
        at or before ``now``, message not held, no live lease), oldest due first. One
        Claim per message, holding all its due recipients; ``limit`` counts messages.
        A lease is live while ``now < lease_until`` and has ended at ``lease_until``.
        Two processes on one database never lease the same recipient at once.
        ``limit <= 0`` claims nothing; ``lease`` must be positive (ValueError)."""

    async def next_due(self) -> float | None:
        """The earliest next attempt time of any unclaimed, unheld pending recipient, or
        the end of a lease if earlier (a crashed claimer's recipients are due again then);
        None when nothing is pending. ``claim_due(next_due())`` finds something."""

    async def record_outcomes(
        self,
        message_id: str,
        updates: Sequence[RecipientUpdate],
        attempts: Sequence[Attempt],
        events: Sequence[MailEvent] = (),
    ) -> None:
        """In ONE durable transaction: the recipients' new states (their leases end,
        ``attempts`` counts go up by one for those with any attempt rows), the attempt
        rows and the events they caused (the outbox: a crash loses none of them).
        Recipients already final are not changed (a late outcome after another claimer
        settled them), but their attempt rows are still added. ``delay_warned``
        only ever goes from False to True. A message deleted meanwhile: nothing is
        recorded. ValueError for an attempt of another message, or a pending status
        without ``next_attempt_at``."""

    async def release(self, message_id: str, addresses: Sequence[str]) -> None:
        """End leases without an attempt (e.g. shutting down before trying)."""

    async def renew_leases(
        self, leases: Mapping[str, Collection[str]], now: float, *, lease: float
    ) -> int:
        """Extend to ``now + lease`` the live leases of these recipients (message id ->
        addresses), for a delivery still running; the number renewed. A lease that has
        ended (``now >= lease_until``) is left alone: another claimer may hold it now.
        ``lease`` must be positive (ValueError)."""

    async def hold(self, message_id: str) -> bool:
        """Keep the message's pending recipients from being claimed (an attempt already
        in flight still finishes and records); False if unknown."""

    async def release_hold(self, message_id: str) -> bool: ...

    async def hold_all(self, held: bool) -> int:
        """Hold every message that has a pending recipient (``held``: Postfix's
        ``postsuper -h ALL``), or release every held message; how many messages changed.
        Mail queued afterwards is not held (``delivery.paused`` stops all delivery)."""

    async def retry_now(self, message_id: str | None, now: float) -> int:
        """Make pending (queued/deferred) recipients due at ``now``: one message, or all
        when ``message_id`` is None. Held messages and live leases are left alone, and
        a recipient due earlier keeps its time (and place in line). Returns how many
        recipients a claim at ``now`` would now find."""

    async def delete(self, message_id: str) -> bool:
        """Remove a message, its recipients, body and attempts."""

    async def purge(self, before: float) -> int:
        """Retention: remove messages received before ``before`` whose recipients are all
        final (delivered, bounced, expired), with their bodies and attempts. Count removed."""

    async def purge_bodies(self, before: float) -> int:
        """Retention of bodies: of the messages ``purge`` would remove, remove only the
        bodies, keeping the log (the message's envelope, recipients, attempts, provider
        events); ``StoredMessage.body_removed`` then says so. Count removed."""

    async def queue_summary(self) -> QueueSummary:
        """How many recipients wait (queued, deferred, in held messages), in how many
        messages, and the oldest of those messages."""

    async def merge_counters(self) -> int:
        """Fold the counters' per-writer rows (the queue's depth, the attempts per
        slot) into one row per count, changing no count; the rows folded away. Safe
        while other processes write: a row a transaction is writing now is left for the
        next merge. An engine that keeps one row per count has none to fold (0)."""


class LogStore(Protocol):
    """The email log: searching messages, their attempts, providers' callbacks, and
    the mailers' health drawn from them."""

    async def query(self, query: LogQuery) -> list[StoredMessage]:
        """The email log: messages newest first, filtered; continue with cursor=last id.
        ValueError for a status that is neither a RecipientStatus value nor "held"."""

    async def newest_before(self, cursor: str | None, count: int) -> str | None:
        """The id of the ``count``-th newest message older than ``cursor`` (of all when
        None): where a search that reads ``count`` messages ends (``LogQuery.floor``).
        None when fewer are there. ValueError for a count that is not positive."""

    async def attempts(self, message_id: str) -> list[Attempt]:
        """A message's timeline: every attempt in time order."""

    async def record_provider_event(self, event: ProviderEventRecord) -> str | None:
        """Durably keep what a provider's callback said. It belongs to the message whose
        attempt through ``event.mailer`` got ``event.provider_id`` (also matching that id
        in angle brackets), preferring the attempt of ``event.recipient``. Returns that
        message's id; None when no attempt matched (the event is kept all the same).
        A status in the event catalogue (all but ``other``) is written to the outbox in
        the same transaction, as a ``MailEvent`` of origin ``provider``."""

    async def provider_events(self, message_id: str) -> list[ProviderEventRecord]:
        """A message's provider callbacks in the order the provider dated them."""

    async def mailer_health(self, since: float) -> list[MailerHealth]:
        """Per mailer with attempts: its last success and last error, and how many
        messages it delivered at or after ``since``; sorted by mailer name."""

    async def attempt_counts(self, since: float, bucket: float) -> list[AttemptCount]:
        """Attempts counted per ``bucket``-second slot (whole slots, from the one that
        holds ``since``), mailer, sender domain (lower case) and disposition, in that
        order; the overview's chart. Read from counters kept as attempts are recorded,
        not from the log: its cost follows the slots, not the attempts. ValueError for a
        bucket that is not a positive multiple of 300 seconds."""

    async def recent_failures(self, limit: int) -> list[Attempt]:
        """The latest ``limit`` attempts that did not deliver (deferred, bounced),
        newest first."""

    async def attempt_totals(self, since: float, until: float, *, reasons: int) -> AttemptTotals:
        """Attempts started in [``since``, ``until``): counted by mailer, recipient
        domain and disposition; and the ``reasons`` most frequent (code, enhanced code)
        of those that did not deliver, with one reply text each."""


class DirectoryStore(Protocol):
    """Local domains and users (the addresses mail is accepted for, and logins)."""

    async def add_domain(self, name: str, now: float) -> bool:
        """Add a local domain (A-label form); False when it already existed."""

    async def remove_domain(self, name: str) -> bool: ...

    async def domains(self) -> list[str]: ...

    async def is_local_domain(self, name: str) -> bool: ...

    async def recipient(self, domain: str, address: str) -> tuple[bool, bool]:
        """RCPT's lookup in one read: (``domain`` is local, a user ``address`` exists there).
        The second is False whenever the first is."""

    async def add_user(self, user: UserRecord) -> bool:
        """False when a user with that address already exists."""

    async def user(self, address: str) -> UserRecord | None: ...

    async def users(self) -> list[UserRecord]: ...

    async def set_password(self, address: str, password_hash: str) -> bool: ...

    async def set_user_senders(
        self, address: str, sender_domains: Sequence[str], any_sender: bool
    ) -> bool:
        """Replace a user's sender domains; False when there is no such user."""

    async def remove_user(self, address: str) -> bool: ...


class ApiStore(Protocol):
    """The HTTP API's own rows: keys, accepted sends' meta and idempotency answers."""

    async def add_api_key(self, record: ApiKeyRecord) -> bool:
        """False when a key with that name already exists."""

    async def api_key(self, key_id: str) -> ApiKeyRecord | None: ...

    async def api_keys(self) -> list[ApiKeyRecord]:
        """Every API key, sorted by name."""

    async def remove_api_key(self, name: str) -> bool: ...

    async def set_api_key_senders(
        self, name: str, sender_domains: Sequence[str], any_sender: bool
    ) -> bool:
        """Replace a key's sender domains; False when there is no such key."""

    async def save_send(
        self, meta: MessageMeta, answer: IdempotencyRecord | None, *, forget_before: float
    ) -> None:
        """In one durable transaction: an accepted message's meta (nothing when the
        message is gone already) and the answer to replay for its Idempotency-Key;
        answers created before ``forget_before`` are dropped."""

    async def message_meta(self, ids: Sequence[str]) -> dict[str, MessageMeta]:
        """The meta of those of ``ids`` that have any, by queue id."""

    async def idempotent(self, key_name: str, key: str, since: float) -> IdempotencyRecord | None:
        """The answer recorded for (``key_name``, ``key``) at or after ``since``."""


class SuppressionStore(Protocol):
    """The suppression list: addresses postroom does not send to, globally or for the
    senders of one domain. Addresses and scopes are compared without case."""

    async def add_suppression(self, entry: Suppression) -> bool:
        """List ``entry``; True when (address, scope) was not listed. Listed already: the
        reason, source and detail are replaced (the newest cause is the one shown), the
        time it was first listed stays."""

    async def remove_suppression(self, address: str, scope: str) -> bool:
        """False when (address, scope) was not listed."""

    async def suppressions(
        self,
        *,
        scope: str | None = None,
        address: str | None = None,
        limit: int = 100,
        after: tuple[str, str] | None = None,
    ) -> list[Suppression]:
        """Listed entries by (address, scope), ``limit`` at most, after ``after`` (the
        last (address, scope) of the previous page); only one ``scope`` ("" for global)
        and only one ``address`` when given."""

    async def suppressed(
        self, addresses: Collection[str], sender_domain: str | None
    ) -> dict[str, Suppression]:
        """Which of ``addresses`` may not be sent to by a sender of ``sender_domain``
        (None: the null sender or no domain, only global entries count): the entry that
        stops each, by the address as given; a global entry before a domain's."""


# Which configured webhooks want an event (their names); the dispatcher's filter.
EventRoute = Callable[[MailEvent], Sequence[str]]


class EventStore(Protocol):
    """The event outbox and its way out to the configured webhooks.

    Events are written in the transaction of what caused them (``enqueue``,
    ``record_outcomes``, ``record_provider_event``, or ``record_events`` for the rest),
    so what is committed is sent at least once. ``fan_out`` gives each new event a
    delivery row per webhook that wants it; ``claim_webhook_deliveries`` leases due rows
    (one message's events to one webhook in order); ``record_webhook_attempt`` settles
    or reschedules one."""

    async def record_events(self, events: Sequence[MailEvent]) -> None:
        """Durably add events that come from nothing else the store records (returned
        bounces, tracking, unsubscribes). An event id already stored is ignored."""

    async def events(self, queue_id: str) -> list[MailEvent]:
        """A message's events in the order they were recorded, its tags and metadata
        filled in."""

    async def fan_out(self, route: EventRoute | None, *, limit: int, now: float) -> int:
        """Take up to ``limit`` events not yet fanned out (oldest first), give each a
        pending delivery row, due at ``now``, for every name ``route`` returns, and mark it
        fanned out, in one transaction; how many events were taken. Two nodes may run
        it at once: each event is taken once. ``route`` None: no webhook is configured,
        so the events are only marked (as a route naming none would leave them)."""

    async def claim_webhook_deliveries(
        self, now: float, *, limit: int, lease: float
    ) -> list[WebhookDelivery]:
        """Lease up to ``limit`` pending deliveries due at ``now`` and not leased, oldest
        event first, skipping any that has an earlier pending delivery of the same
        message to the same webhook (ordering per message). A lease ends at
        ``now + lease``; an unsettled one (the process died) is due again then."""

    async def record_webhook_attempt(self, attempt: WebhookAttempt) -> None:
        """Settle or reschedule the delivery and end its lease: delivered when ``ok``,
        pending again until ``next_attempt_at`` when that is given, failed when not."""

    async def webhook_deliveries(
        self,
        *,
        webhook: str | None = None,
        state: WebhookState | None = None,
        queue_id: str | None = None,
        limit: int = 100,
    ) -> list[WebhookDelivery]:
        """Delivery history, newest event first: one webhook's or all, one state or all,
        one message's events (``queue_id``) or all."""

    async def purge_events(self, before: float) -> int:
        """Retention: remove events dated before ``before`` that no webhook still waits
        for (fanned out, no pending delivery), with their delivery history; how many."""

    async def webhook_backlog(self) -> dict[str, int]:
        """Pending deliveries per webhook; the key ``""`` counts events not yet fanned
        out."""

    async def complaint_counts(self, since: float, bucket: float) -> list[AttemptCount]:
        """Complaint events (a provider's feedback loop) counted per ``bucket``-second
        slot (whole slots, from the one that holds ``since``), mailer and the message's
        sender domain, as ``attempt_counts`` gives attempts (disposition
        ``"complained"``). Read through the ``events_complained`` index: its cost follows
        the complaints in the window, not the events."""


class LimitStore(Protocol):
    """Counters every process on the store shares, so that a limit holds across all the
    nodes on one database (and the processes of one machine), not per process. Times
    are wall times (``clock.time()``): the nodes' clocks agree, their monotonic ones do
    not. Each call is atomic across processes. Counters are not durable promises: the
    engine may lose them in a crash of the database, never half of one call."""

    async def take_windows(self, windows: Sequence[Window], now: float) -> float | None:
        """Count one in every fixed window (aligned to the epoch: a day is a UTC day) if
        each has room, and return None; else count nothing and return when the last of
        the full windows ends."""

    async def window_usage(self, windows: Sequence[Window], now: float) -> list[int]:
        """How many each window has counted in its current span."""

    async def take_token(self, key: str, now: float, *, per_second: float, burst: int) -> float:
        """A token bucket that holds ``burst`` and refills at ``per_second``: take one
        and return 0, or take none and return the seconds until one is there."""

    async def add_hit(
        self, limits: Sequence[tuple[str, int]], tag: str, now: float, *, window: float
    ) -> bool:
        """A sliding window: when every key of ``limits`` has fewer hits than its limit
        in ``(now - window, now]``, record one hit tagged ``tag`` under each and return
        True; else record nothing and return False."""

    async def forget_hits(self, keys: Sequence[str], tag: str) -> None:
        """Forget the hits tagged ``tag`` under ``keys``."""

    async def hits_below(
        self, limits: Sequence[tuple[str, int]], now: float, *, window: float
    ) -> bool:
        """True when every key of ``limits`` has fewer hits than its limit in
        ``(now - window, now]``, as ``add_hit`` would find; records nothing."""

    async def take_slot(
        self, key: str, limit: int, holder: str, now: float, *, lease: float
    ) -> bool:
        """Hold one of ``key``'s ``limit`` slots for ``holder`` (a process) until
        ``now + lease``; False when all are held, or when another holder waits and
        this one holds its share already (``limit`` over the holders holding or
        waiting, rounded up). A refused holder is marked waiting for a moment
        (``slot_contenders`` counts it; each refused take marks it again). Every slot
        of a holder ends at its lease unless ``renew_slots`` extends it: a holder that
        dies frees its slots."""

    async def slot_contenders(self, holder: str, now: float) -> dict[str, int]:
        """The keys ``holder`` holds slots of for which another holder waits, each with
        how many holders share it (holding or waiting): a holder above its share gives
        slots back as it can, so the waiting ones get theirs."""

    async def renew_slots(self, holder: str, now: float, *, lease: float) -> int:
        """Extend to ``now + lease`` every slot ``holder`` holds that has not ended; how
        many keys it holds slots of. An ended slot stays ended."""

    async def release_slot(self, key: str, holder: str) -> None:
        """Give back one of the slots of ``key`` that ``holder`` holds."""

    async def slot_holders(self, now: float) -> list[str]:
        """Every holder that holds a slot which has not ended, once each."""

    async def drop_slot_holder(self, holder: str) -> int:
        """Give back every slot ``holder`` holds, and its waiting marks (a holder known
        to be dead: its slots need not wait for their lease); how many keys it held."""


class AdminStore(Protocol):
    """The dashboard's administrators (not mail users) and the audit log of their actions."""

    async def add_admin(self, record: AdminRecord) -> bool:
        """False when an administrator of that name already exists."""

    async def admin(self, name: str) -> AdminRecord | None: ...

    async def admins(self) -> list[AdminRecord]:
        """Every administrator, sorted by name."""

    async def remove_admin(self, name: str) -> bool: ...

    async def set_admin_password(self, name: str, password_hash: str) -> bool: ...

    async def end_admin_sessions(self, name: str, at: float) -> bool:
        """Sessions of ``name`` begun at or before ``at`` are over (logout; a password
        change); ``sessions_after`` only moves forward. False when there is no such admin."""

    async def record_admin_action(self, action: AdminAction) -> None:
        """Durably append to the audit log."""

    async def admin_actions(self, *, limit: int, before: float | None = None) -> list[AdminAction]:
        """The audit log, newest first, ``limit`` at most, older than ``before``."""


@runtime_checkable
class QueueWatch(Protocol):
    """An engine shared by several nodes tells each when another committed mail."""

    async def watch_queue(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change`` after every commit (of any node) that adds mail or makes it
        due, until cancelled; raises StoreError when it loses the database."""


class Store(
    StoreLifecycle,
    QueueStore,
    LogStore,
    DirectoryStore,
    ApiStore,
    SuppressionStore,
    EventStore,
    LimitStore,
    AdminStore,
    Protocol,
):
    """Every part: what an engine that implements them all (``open_store``) gives."""


PARTS: dict[str, type] = {
    "lifecycle": StoreLifecycle,
    "queue": QueueStore,
    "log": LogStore,
    "directory": DirectoryStore,
    "api": ApiStore,
    "suppression": SuppressionStore,
    "events": EventStore,
    "limits": LimitStore,
    "admin": AdminStore,
}


def missing_parts(engine: object) -> list[str]:
    """The parts (PARTS' names) of which ``engine`` lacks a method: a server needs all."""
    return [
        part
        for part, protocol in PARTS.items()
        if any(
            not callable(getattr(engine, name, None))
            for name, member in vars(protocol).items()
            if callable(member) and not name.startswith("_")
        )
    ]
