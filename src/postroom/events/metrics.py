"""What ``/metrics`` reports, in the Prometheus text format (prometheus-client).

Two kinds of figures. Counters and the attempt-latency histogram are kept in this
process by a bus subscriber: the primary process runs delivery, so what delivery does
is counted whole. The queue, its oldest message, the webhook backlog and the SMTP
sessions open are read when scraped: the queue and the backlog from the store (so
they are the same whichever node is asked), the sessions from the primary's listeners.

With ``workers = N`` the accept workers are other processes. Each keeps its own
``AcceptCounts`` (messages accepted by source, SMTP transactions by listener and
result, and its sessions open), and the primary asks every worker for them when it is
scraped (``workers.Supervisor.counts``, over the pipes it holds to each) and adds them
to its own: the figures cover every process. A worker that is restarted starts from
zero, which Prometheus reads as a counter reset, as for a restarted server.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from postroom.events.catalog import DeliveryAttempt, Event
from postroom.events.counts import AcceptCounts
from postroom.store.models import QueueSummary

__all__ = ["CONTENT_TYPE", "AcceptCounts", "Metrics", "Sessions", "WorkerCounts"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: a local Maildir write to a slow remote MX with TLS.
Sessions = Callable[[], Mapping[str, int]]  # listener -> connections open now
# The accept workers' AcceptCounts snapshots, asked when scraped.
WorkerCounts = Callable[[], Awaitable[Sequence[Mapping[str, Any]]]]
_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class _Reported:
    """The figures of every process: this one's, and what the workers last reported."""

    def __init__(self, own: AcceptCounts) -> None:
        self.own = own
        self.workers: Sequence[Mapping[str, Any]] = ()

    def accepted(self) -> Tally[str]:
        total = Tally(self.own.accepted)
        for report in self.workers:
            total.update({str(k): int(v) for k, v in report.get("accepted", {}).items()})
        return total

    def transactions(self) -> Tally[tuple[str, str]]:
        total = Tally(self.own.transactions)
        for report in self.workers:
            for listener, result, count in report.get("transactions", []):
                total[str(listener), str(result)] += int(count)
        return total

    def sessions(self, own: Mapping[str, int]) -> dict[str, int]:
        total = Tally(own)
        for report in self.workers:
            total.update({str(k): int(v) for k, v in report.get("sessions", {}).items()})
        return dict(total)


class _AcceptCollector(Collector):
    """The accept counters, summed over the processes at scrape time."""

    def __init__(self, reported: _Reported) -> None:
        self._reported = reported

    def collect(self) -> Iterator[CounterMetricFamily]:
        accepted = CounterMetricFamily(
            "postroom_messages_accepted",
            "Messages committed to the queue by the server's processes, by source.",
            labels=["source"],
        )
        for source, count in sorted(self._reported.accepted().items()):
            accepted.add_metric([source], count)
        yield accepted
        transactions = CounterMetricFamily(
            "postroom_smtp_transactions",
            "SMTP transactions by listener role and result (queued, rejected, aborted).",
            labels=["listener", "result"],
        )
        for labels, count in sorted(self._reported.transactions().items()):
            transactions.add_metric(list(labels), count)
        yield transactions


class Metrics:
    """One registry per server (no global state); subscribe it to the bus."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.counts = AcceptCounts()
        self._reported = _Reported(self.counts)
        registry.register(_AcceptCollector(self._reported))
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
        self._sessions = Gauge(
            "postroom_smtp_sessions",
            "SMTP connections open now on the listeners, every process's.",
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
        if isinstance(event, DeliveryAttempt):
            self._attempts.labels(event.mailer, event.disposition).inc()
            self._latency.labels(event.mailer).observe(event.duration)
            if event.status in ("delivered", "bounced", "expired"):
                self._finished.labels(event.mailer, event.status).inc()
        else:
            self.counts(event)

    def render(
        self,
        *,
        queue: QueueSummary,
        backlog: Mapping[str, int],
        sessions: Mapping[str, int],
        now: float,
        workers: Sequence[Mapping[str, Any]] = (),
    ) -> bytes:
        """The text format, with the figures read at scrape time set first; ``workers``:
        the accept workers' ``AcceptCounts.snapshot``s, added to this process's."""
        self._reported.workers = workers
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
        _set_all(self._sessions, self._reported.sessions(sessions))
        return generate_latest(self.registry)


def _set_all(gauge: Gauge, values: Mapping[str, int]) -> None:
    gauge.clear()  # a webhook or listener gone since the last scrape is gone here too
    for label, value in values.items():
        gauge.labels(label).set(value)
