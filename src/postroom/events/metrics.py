"""What ``/metrics`` reports, in the Prometheus text format (prometheus-client).

Two kinds of figures. Counters and the attempt-latency histogram are counted by each
process of the server as it works (``ProcessCounts``, a bus subscriber): messages
accepted by source, SMTP transactions by listener and result, delivery attempts and
finished recipients by mailer, and how long attempts took. The queue, its oldest
message, the webhook backlog and the SMTP sessions open are read when scraped: the
queue and the backlog from the store (so they are the same whichever node is asked),
the sessions from the listeners.

With ``workers = N`` the accept workers are other processes, and they deliver too
(local mail is delivered by the process that accepted it). The primary asks every
worker for its ``ProcessCounts`` snapshot when it is scraped
(``workers.Supervisor.counts``, over the pipes it holds to each) and adds them to its
own: the figures cover every process. A worker that is restarted starts from zero,
which Prometheus reads as a counter reset, as for a restarted server.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from postroom.events.catalog import Event
from postroom.events.counts import Durations, ProcessCounts
from postroom.store.models import QueueSummary

__all__ = ["CONTENT_TYPE", "Metrics", "Sessions", "WorkerCounts"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Sessions = Callable[[], Mapping[str, int]]  # listener -> connections open now
# The accept workers' ProcessCounts snapshots, asked when scraped.
WorkerCounts = Callable[[], Awaitable[Sequence[Mapping[str, Any]]]]


class _Reported:
    """The figures of every process: this one's, and what the workers last reported."""

    def __init__(self, own: ProcessCounts) -> None:
        self.own = own
        self.workers: Sequence[Mapping[str, Any]] = ()

    def accepted(self) -> Tally[str]:
        total = Tally(self.own.accepted)
        for report in self.workers:
            total.update({str(k): int(v) for k, v in report.get("accepted", {}).items()})
        return total

    def pairs(
        self, name: Literal["transactions", "attempts", "finished"]
    ) -> Tally[tuple[str, str]]:
        """A tally keyed by two labels, summed over the processes."""
        total = Tally(getattr(self.own, name))
        for report in self.workers:
            for first, second, count in report.get(name, []):
                total[str(first), str(second)] += int(count)
        return total

    def latency(self) -> dict[str, Durations]:
        total: dict[str, Durations] = {}
        for mailer, own in self.own.latency.items():
            total.setdefault(mailer, Durations()).add(own.counts, own.total)
        for report in self.workers:
            for mailer, (counts, seconds) in report.get("latency", {}).items():
                total.setdefault(str(mailer), Durations()).add(counts, seconds)
        return total

    def sessions(self, own: Mapping[str, int]) -> dict[str, int]:
        total = Tally(own)
        for report in self.workers:
            total.update({str(k): int(v) for k, v in report.get("sessions", {}).items()})
        return dict(total)


class _CountsCollector(Collector):
    """The counters and the latency histogram, summed over the processes at scrape
    time."""

    def __init__(self, reported: _Reported) -> None:
        self._reported = reported

    def collect(self) -> Iterator[Metric]:
        reported = self._reported
        accepted = CounterMetricFamily(
            "postroom_messages_accepted",
            "Messages committed to the queue by the server's processes, by source.",
            labels=["source"],
        )
        for source, count in sorted(reported.accepted().items()):
            accepted.add_metric([source], count)
        yield accepted
        for name, help_text, labels, key in _PAIR_COUNTERS:
            family = CounterMetricFamily(name, help_text, labels=list(labels))
            for pair, count in sorted(reported.pairs(key).items()):
                family.add_metric(list(pair), count)
            yield family
        latency = HistogramMetricFamily(
            "postroom_delivery_attempt_seconds",
            "How long one attempt for one recipient took, by mailer.",
            labels=["mailer"],
        )
        for mailer, durations in sorted(reported.latency().items()):
            latency.add_metric([mailer], durations.buckets(), durations.total)
        yield latency


_PAIR_COUNTERS: tuple[
    tuple[str, str, tuple[str, str], Literal["transactions", "attempts", "finished"]], ...
] = (
    (
        "postroom_smtp_transactions",
        "SMTP transactions by listener role and result (queued, rejected, aborted).",
        ("listener", "result"),
        "transactions",
    ),
    (
        "postroom_delivery_attempts",
        "Delivery attempts by mailer and result (delivered, deferred, bounced).",
        ("mailer", "result"),
        "attempts",
    ),
    (
        "postroom_recipients_finished",
        "Recipients that reached a final state (delivered, bounced, expired), by mailer.",
        ("mailer", "status"),
        "finished",
    ),
)


class Metrics:
    """One registry per server (no global state); subscribe it to the bus."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.counts = ProcessCounts()
        self._reported = _Reported(self.counts)
        registry.register(_CountsCollector(self._reported))
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
        the accept workers' ``ProcessCounts.snapshot``s, added to this process's."""
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
