"""Per-mailer sending limits: fixed windows of a second, an hour and a day (UTC).

``await SendWindow.take(now)`` counts one message if every window has room and returns
None; otherwise it counts nothing and returns the wall time the fullest window ends,
which the mailer hands back as the deferred outcome's ``retry_at``. The counts are the
store's (``LimitStore``), shared by every node on the database: ``per_day = 10`` is ten
a day for the cluster, not ten per node. Built without a store, a window counts in this
process alone (``postroom mailer test``, tests).

A window known full is remembered here until it ends: a full fixed window stays full
for the rest of its span (counts only grow), so a queue waiting on a full day costs the
database nothing until midnight.
"""

from __future__ import annotations

from dataclasses import dataclass

from postroom.config.providers import SendLimits
from postroom.store.base import LimitStore
from postroom.store.models import Window

__all__ = ["SendWindow", "WindowUsage"]

_SPANS = (("per_second", 1), ("per_hour", 3600), ("per_day", 86400))


@dataclass(frozen=True, slots=True)
class WindowUsage:
    span: str  # "per_second", "per_hour", "per_day"
    limit: int
    used: int
    ends_at: float


class SendWindow:
    def __init__(self, limits: SendLimits, mailer: str, counts: LimitStore) -> None:
        self._spans = [
            (span, Window(f"mailer {mailer} {span}", seconds, limit))
            for span, seconds in _SPANS
            if (limit := getattr(limits, span)) is not None
        ]
        self._windows = [window for _, window in self._spans]
        self._counts = counts
        self._full_until = 0.0

    async def take(self, now: float) -> float | None:
        """None when counted; else the time the last full window ends. StoreError when
        the counts cannot be reached."""
        if not self._windows:
            return None
        if now < self._full_until:
            return self._full_until
        until = await self._counts.take_windows(self._windows, now)
        if until is not None:
            self._full_until = until
        return until

    async def usage(self, now: float) -> list[WindowUsage]:
        used = await self._counts.window_usage(self._windows, now)
        return [
            WindowUsage(span, window.limit, count, window.ends_at(now))
            for (span, window), count in zip(self._spans, used, strict=True)
        ]
