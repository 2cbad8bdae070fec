"""What ``/metrics`` reports, in the Prometheus text format (prometheus-client).

Two kinds of figures. Counters and the attempt-latency histogram are kept in this
process by a bus subscriber: the primary process runs delivery, so what delivery does
is counted whole. The queue, its oldest message, the webhook backlog and the SMTP
sessions open are read when scraped: the queue and the backlog from the store (so
they are the same whichever node is asked), the sessions from the primary's listeners.

With ``workers = N`` the accept workers are other processes: the primary counts the
mail it accepted itself (API, DSNs, its own share of SMTP connections), not theirs.
What they commit is in the store and shows in the queue figures; count accepted mail
across all processes from the store-derived figures or from the log lines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from postroom.events.catalog import DeliveryAttempt, Event, MessageQueued, SmtpTransaction
from postroom.store.models import QueueSummary

__all__ = ["CONTENT_TYPE", "Metrics", "Sessions"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: a local Maildir write to a slow remote MX with TLS.
Sessions = Callable[[], Mapping[str, int]]  # listener -> connections open now
_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """One registry per server (no global state); subscribe it to the bus."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self._accepted = Counter(
            "postroom_messages_accepted",
            "Messages committed to the queue by this process, by source.",
            ["source"],
            registry=registry,
        )
        self._attempts = Counter(
            "postroom_delivery_attempts",
            "Delivery attempts by mailer and result (delivered, deferred, bounced).",
            ["mailer", "result"],
            registry=registry,
        )
        self._finished = Counter(
            "postroom_recipients_finished",
            "Recipients that reached a final state (delivered, bounced, expired), by mailer.",
            ["mailer", "status"],
            registry=registry,
        )
        self._latency = Histogram(
            "postroom_delivery_attempt_seconds",
            "How long one attempt for one recipient took, by mailer.",
            ["mailer"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self._transactions = Counter(
            "postroom_smtp_transactions",
            "SMTP transactions by listener role and result (queued, rejected, aborted).",
            ["listener", "result"],
            registry=registry,
        )
        self._sessions = Gauge(
            "postroom_smtp_sessions",
            "SMTP connections open now on this process's listeners.",
            ["listener"],
            registry=registry,
        )
        self._queue = Gauge(
            "postroom_queue_recipients",
            "Recipients waiting, by state (queued, deferred, held).",
            ["state"],
            registry=registry,
        )
        self._queue_messages = Gauge(
            "postroom_queue_messages", "Messages with a recipient waiting.", registry=registry
        )
        self._oldest = Gauge(
            "postroom_queue_oldest_age_seconds",
            "Age of the oldest message with a recipient waiting (0 when none).",
            registry=registry,
        )
        self._backlog = Gauge(
            "postroom_webhook_backlog",
            'Events waiting to be sent, by webhook ("": not yet given to any).',
            ["webhook"],
            registry=registry,
        )

    def __call__(self, event: Event) -> None:
        if isinstance(event, MessageQueued):
            self._accepted.labels(event.source).inc()
        elif isinstance(event, DeliveryAttempt):
            self._attempts.labels(event.mailer, event.disposition).inc()
            self._latency.labels(event.mailer).observe(event.duration)
            if event.status in ("delivered", "bounced", "expired"):
                self._finished.labels(event.mailer, event.status).inc()
        elif isinstance(event, SmtpTransaction):
            self._transactions.labels(event.listener, event.result).inc()

    def render(
        self,
        *,
        queue: QueueSummary,
        backlog: Mapping[str, int],
        sessions: Mapping[str, int],
        now: float,
    ) -> bytes:
        """The text format, with the figures read at scrape time set first."""
        for state, count in (
            ("queued", queue.queued),
            ("deferred", queue.deferred),
            ("held", queue.held),
        ):
            self._queue.labels(state).set(count)
        self._queue_messages.set(queue.messages)
        oldest = queue.oldest_received_at
        self._oldest.set(max(0.0, now - oldest) if oldest is not None else 0.0)
        _set_all(self._backlog, backlog)
        _set_all(self._sessions, sessions)
        return generate_latest(self.registry)


def _set_all(gauge: Gauge, values: Mapping[str, int]) -> None:
    gauge.clear()  # a webhook or listener gone since the last scrape is gone here too
    for label, value in values.items():
        gauge.labels(label).set(value)
