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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from postroom.events.catalog import Event
from postroom.events.counts import Durations, ProcessCounts
from postroom.store.models import QueueSummary

# prometheus-client and the registry are loaded at the first scrape (events/exposition.py):
# until then the counts are plain tallies, and a server never scraped carries neither.
if TYPE_CHECKING:
    from postroom.events.exposition import Exposition

__all__ = ["CONTENT_TYPE", "Metrics", "Reported", "Sessions", "WorkerCounts"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Sessions = Callable[[], Mapping[str, int]]  # listener -> connections open now
# The accept workers' ProcessCounts snapshots, asked when scraped.
WorkerCounts = Callable[[], Awaitable[Sequence[Mapping[str, Any]]]]


class Reported:
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


class Metrics:
    """The server's counts, and their text format when scraped (one registry per
    server, no global state); subscribe it to the bus."""

    def __init__(self) -> None:
        self.counts = ProcessCounts()
        self._reported = Reported(self.counts)
        self._exposition: Exposition | None = None  # made at the first scrape

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
        if self._exposition is None:
            from postroom.events.exposition import Exposition

            self._exposition = Exposition(self._reported)
        self._reported.workers = workers
        return self._exposition.render(
            queue=queue, backlog=backlog, sessions=self._reported.sessions(sessions), now=now
        )
