"""``/metrics``' registry in the Prometheus text format (prometheus-client), made at the
first scrape by ``events.metrics.Metrics``: the counters and the latency histogram summed
over the server's processes, and the gauges read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Literal

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from postroom.events.metrics import Reported
from postroom.store.models import QueueSummary

__all__ = ["Exposition"]


class _CountsCollector(Collector):
    """The counters and the latency histogram, summed over the processes at scrape
    time."""

    def __init__(self, reported: Reported) -> None:
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


class Exposition:
    """One registry: the processes' counts, and the gauges set from what is read when
    scraped."""

    def __init__(self, reported: Reported) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        registry.register(_CountsCollector(reported))
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

    def render(
        self,
        *,
        queue: QueueSummary,
        backlog: Mapping[str, int],
        sessions: Mapping[str, int],
        now: float,
    ) -> bytes:
        """The text format, with the figures read at scrape time set first (``sessions``:
        every process's)."""
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
