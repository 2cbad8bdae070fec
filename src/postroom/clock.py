"""Time, passed in: wall time for records, monotonic time for timeouts and rates."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch (wall time, for what is stored and shown)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for timeouts and rate windows)."""


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
