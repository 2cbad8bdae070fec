"""Per-IP counters with the clock passed in: AUTH failure throttling and connection counts."""

from __future__ import annotations

from collections import defaultdict, deque

from postroom.clock import Clock

__all__ = ["ConnectionCounter", "FailureThrottle"]


class FailureThrottle:
    """At most ``max_failures`` failures per key within ``window`` seconds; then blocked
    until the oldest failure leaves the window."""

    def __init__(self, clock: Clock, *, max_failures: int, window: float) -> None:
        self._clock = clock
        self._max = max_failures
        self._window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        horizon = self._clock.monotonic() - self._window
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def blocked(self, key: str) -> bool:
        return len(self._recent(key)) >= self._max

    def record_failure(self, key: str) -> None:
        failures = self._recent(key)
        if key not in self._failures:
            self._failures[key] = failures
        failures.append(self._clock.monotonic())

    def record_success(self, key: str) -> None:
        self._failures.pop(key, None)


class ConnectionCounter:
    """Open connections in total and per client IP (Postfix anvil)."""

    def __init__(self, *, max_total: int, max_per_ip: int) -> None:
        self._max_total = max_total
        self._max_per_ip = max_per_ip
        self._per_ip: defaultdict[str, int] = defaultdict(int)
        self.total = 0

    def try_acquire(self, ip: str) -> bool:
        if self.total >= self._max_total or self._per_ip[ip] >= self._max_per_ip:
            return False
        self.total += 1
        self._per_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self.total -= 1
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]
