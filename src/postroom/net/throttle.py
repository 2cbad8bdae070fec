"""Per-client counters with the clock passed in: AUTH failure throttling and connection counts."""

from __future__ import annotations

import ipaddress
from collections import defaultdict, deque
from dataclasses import dataclass

from postroom.clock import Clock

__all__ = ["AuthAttempt", "ConnectionCounter", "FailureThrottle", "client_key"]


def client_key(ip: str) -> str:
    """What one client is counted as: its IPv4 address, or the /64 of an IPv6 address
    (one host usually holds a whole /64, so counting single addresses would not hold)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(eq=False, slots=True)
class _Failure:
    at: float  # clock.monotonic() when the attempt began
    account: str


class AuthAttempt:
    """A failure slot taken before the password is checked. It counts as a failure from
    the start, so attempts running at the same time cannot get past the limit, and it
    stays one unless ``succeeded()`` is called: an attempt that errs, is cancelled or
    whose client hangs up mid-check is a failure too."""

    __slots__ = ("_failure", "_keys", "_throttle")

    def __init__(self, throttle: FailureThrottle, keys: tuple[str, ...], failure: _Failure) -> None:
        self._throttle = throttle
        self._keys = keys
        self._failure = failure

    def succeeded(self) -> None:
        self._throttle._forget(self._keys, self._failure.account)


class FailureThrottle:
    """At most ``max_failures`` failed attempts per client and ``max_account_failures``
    per account within ``window`` seconds; then every attempt from that client, or at
    that account, is refused unchecked until the oldest failure leaves the window.

    A success forgets only the failures at the account that logged in: an attacker who
    owns one account cannot wipe the count of guesses at another by logging in as
    themself."""

    def __init__(
        self,
        clock: Clock,
        *,
        max_failures: int,
        window: float,
        max_account_failures: int | None = None,
    ) -> None:
        self._clock = clock
        self._max_client = max_failures
        self._max_account = max_account_failures or max_failures
        self._window = window
        self._failures: dict[str, deque[_Failure]] = {}
        self._sweep_at = 1024  # sweep idle keys when there are this many

    def _recent(self, key: str, now: float) -> int:
        failures = self._failures.get(key)
        if failures is None:
            return 0
        horizon = now - self._window
        while failures and failures[0].at <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return len(failures)

    def begin(self, client: str, account: str) -> AuthAttempt | None:
        """Take a failure slot for ``account`` tried by ``client``; None when either is
        throttled (then the password must not be checked at all)."""
        now = self._clock.monotonic()
        keys = (f"client {client_key(client)}", f"account {account}")
        if (
            self._recent(keys[0], now) >= self._max_client
            or self._recent(keys[1], now) >= self._max_account
        ):
            return None
        if len(self._failures) >= self._sweep_at:
            self._sweep(now)
        failure = _Failure(now, account)
        for key in keys:
            self._failures.setdefault(key, deque()).append(failure)
        return AuthAttempt(self, keys, failure)

    def _forget(self, keys: tuple[str, ...], account: str) -> None:
        for key in keys:
            failures = self._failures.get(key)
            if failures is None:
                continue
            kept = deque(f for f in failures if f.account != account)
            if kept:
                self._failures[key] = kept
            else:
                del self._failures[key]

    def _sweep(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)
        self._sweep_at = max(1024, 2 * len(self._failures))


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
