"""What one process counts as it works, for ``/metrics`` (``events.metrics``): kept
apart from prometheus-client so an accept worker, which only reports these figures to
its primary, does not load it."""

from __future__ import annotations

import bisect
import itertools
from collections import Counter as Tally
from collections.abc import Mapping, Sequence
from typing import Any

from postroom.events.catalog import DeliveryAttempt, Event, MessageQueued, SmtpTransaction

__all__ = ["LATENCY_BUCKETS", "Durations", "ProcessCounts"]

# Seconds: a local Maildir write to a slow remote MX with TLS.
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ProcessCounts:
    """What one process counts as it works (a bus subscriber): messages accepted by
    source, SMTP transactions by listener role and result, delivery attempts by mailer
    and result, finished recipients by mailer and status, and the attempts' durations
    by mailer (histogram buckets). ``snapshot`` gives them, with the sessions open, as
    JSON for the primary, which adds every worker's to its own."""

    def __init__(self) -> None:
        self.accepted: Tally[str] = Tally()
        self.transactions: Tally[tuple[str, str]] = Tally()
        self.attempts: Tally[tuple[str, str]] = Tally()
        self.finished: Tally[tuple[str, str]] = Tally()
        self.latency: dict[str, Durations] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, MessageQueued):
            self.accepted[event.source] += 1
        elif isinstance(event, SmtpTransaction):
            self.transactions[event.listener, event.result] += 1
        elif isinstance(event, DeliveryAttempt):
            self.attempts[event.mailer, event.disposition] += 1
            if event.status in ("delivered", "bounced", "expired"):
                self.finished[event.mailer, event.status] += 1
            self.latency.setdefault(event.mailer, Durations()).observe(event.duration)

    def snapshot(self, sessions: Mapping[str, int]) -> dict[str, Any]:
        return {
            "accepted": dict(self.accepted),
            "transactions": [[*key, count] for key, count in self.transactions.items()],
            "attempts": [[*key, count] for key, count in self.attempts.items()],
            "finished": [[*key, count] for key, count in self.finished.items()],
            "latency": {
                mailer: [durations.counts, durations.total]
                for mailer, durations in self.latency.items()
            },
            "sessions": dict(sessions),
        }


class Durations:
    """One mailer's attempt durations: a count per bucket (the last one above every
    bound) and their sum, as a Prometheus histogram keeps them."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def add(self, counts: Sequence[int], total: float) -> None:
        for at, count in enumerate(counts[: len(self.counts)]):
            self.counts[at] += int(count)
        self.total += float(total)

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts under each bound, ``+Inf`` last."""
        bounds = [*map(str, LATENCY_BUCKETS), "+Inf"]
        return list(zip(bounds, itertools.accumulate(self.counts), strict=True))
