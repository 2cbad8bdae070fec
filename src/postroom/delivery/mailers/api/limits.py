"""Per-mailer sending limits: fixed windows of a second, an hour and a day (UTC).

``SendWindow.take(now)`` counts one message if every window has room and returns None;
otherwise it counts nothing and returns the wall time the fullest window ends, which
the mailer hands back as the deferred outcome's ``retry_at``. Counts live in memory,
per process: a restart starts the windows afresh (a provider's own 429 still guards
its cap). Pure: the caller passes the time.
"""

from __future__ import annotations

from dataclasses import dataclass

from postroom.config.providers import SendLimits

__all__ = ["SendWindow", "WindowUsage"]

_SPANS = (("per_second", 1), ("per_hour", 3600), ("per_day", 86400))


@dataclass(frozen=True, slots=True)
class WindowUsage:
    span: str  # "per_second", "per_hour", "per_day"
    limit: int
    used: int
    ends_at: float


class SendWindow:
    def __init__(self, limits: SendLimits) -> None:
        self._windows = [
            (span, seconds, limit)
            for span, seconds in _SPANS
            if (limit := getattr(limits, span)) is not None
        ]
        self._counts: dict[str, tuple[int, int]] = {}  # span -> (window index, count)

    def take(self, now: float) -> float | None:
        full = [
            (index + 1) * seconds
            for span, seconds, limit in self._windows
            if self._count(span, index := int(now // seconds)) >= limit
        ]
        if full:
            return float(max(full))
        for span, seconds, _ in self._windows:
            index = int(now // seconds)
            self._counts[span] = (index, self._count(span, index) + 1)
        return None

    def usage(self, now: float) -> list[WindowUsage]:
        return [
            WindowUsage(span, limit, self._count(span, int(now // s)), (int(now // s) + 1) * s)
            for span, s, limit in self._windows
        ]

    def _count(self, span: str, index: int) -> int:
        current, count = self._counts.get(span, (index, 0))
        return count if current == index else 0
