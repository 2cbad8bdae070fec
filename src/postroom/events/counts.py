"""What an accept worker counts of the mail it takes in, for the primary's ``/metrics``
(events/metrics.py adds every worker's to its own). Apart from the metrics so that a
worker, which serves no ``/metrics``, need not load prometheus-client."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Mapping
from typing import Any

from postroom.events.catalog import Event, MessageQueued, SmtpTransaction

__all__ = ["AcceptCounts"]


class AcceptCounts:
    """What one process counts of the mail it takes in (a bus subscriber): messages
    accepted by source, SMTP transactions by listener role and result. ``snapshot``
    gives them, with the sessions open, as JSON for the primary (``merge`` adds one)."""

    def __init__(self) -> None:
        self.accepted: Tally[str] = Tally()
        self.transactions: Tally[tuple[str, str]] = Tally()

    def __call__(self, event: Event) -> None:
        if isinstance(event, MessageQueued):
            self.accepted[event.source] += 1
        elif isinstance(event, SmtpTransaction):
            self.transactions[event.listener, event.result] += 1

    def snapshot(self, sessions: Mapping[str, int]) -> dict[str, Any]:
        return {
            "accepted": dict(self.accepted),
            "transactions": [[*key, count] for key, count in self.transactions.items()],
            "sessions": dict(sessions),
        }
