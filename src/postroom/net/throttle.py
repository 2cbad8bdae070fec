"""Per-client counters with the clock passed in: AUTH failure throttling and connection counts."""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

from postroom.clock import Clock
from postroom.errors import StoreError

__all__ = ["AuthAttempt", "ConnectionCounter", "FailureThrottle", "HitCounter", "client_key"]

_log = logging.getLogger("postroom.auth")


@functools.lru_cache(maxsize=1024)  # every login asks; parsing the address costs 7 us
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


class HitCounter(Protocol):
    """Sliding windows of hits shared by every process on the store (the store's
    ``LimitStore`` is one)."""

    async def add_hit(
        self, limits: Sequence[tuple[str, int]], tag: str, now: float, *, window: float
    ) -> bool: ...

    async def forget_hits(self, keys: Sequence[str], tag: str) -> None: ...

    async def hits_below(
        self, limits: Sequence[tuple[str, int]], now: float, *, window: float
    ) -> bool: ...


class AuthAttempt:
    """A failure slot taken before the password is checked. It counts as a failure from
    the start, so attempts running at the same time cannot get past the limit, and it
    stays one unless ``succeeded()`` is called: an attempt that errs, is cancelled or
    whose client hangs up mid-check is a failure too."""

    __slots__ = ("_account", "_counter", "_keys")

    def __init__(self, counter: HitCounter, keys: tuple[str, ...], account: str) -> None:
        self._counter = counter
        self._keys = keys
        self._account = account

    async def succeeded(self) -> None:
        """Forget the account's failures; the login stands even when the counts cannot be
        reached (this slot then stays a failure until the window passes)."""
        try:
            await self._counter.forget_hits(self._keys, self._account)
        except StoreError as exc:
            _log.warning("auth: the failure counts could not be updated: %s", exc)


class FailureThrottle:
    """At most ``max_failures`` failed attempts per client and ``max_account_failures``
    per account within ``window`` seconds; then every attempt from that client, or at
    that account, is refused unchecked until the oldest failure leaves the window.

    The failures are counted in ``counter``, shared by every process on the store: the
    accept workers of one machine and every node on one database see the same counts,
    so spreading guesses over them gains nothing. Times are wall times (the nodes'
    clocks agree, their monotonic clocks do not).

    A success forgets only the failures at the account that logged in: an attacker who
    owns one account cannot wipe the count of guesses at another by logging in as
    themself."""

    def __init__(
        self,
        counter: HitCounter,
        clock: Clock,
        *,
        max_failures: int,
        window: float,
        max_account_failures: int | None = None,
    ) -> None:
        self._counter = counter
        self._clock = clock
        self._max_client = max_failures
        self._max_account = max_account_failures or max_failures
        self._window = window

    def _limits(self, client: str, account: str) -> tuple[tuple[str, int], tuple[str, int]]:
        return (
            (f"auth client {client_key(client)}", self._max_client),
            (f"auth account {account}", self._max_account),
        )

    async def begin(self, client: str, account: str) -> AuthAttempt | None:
        """Take a failure slot for ``account`` tried by ``client``; None when either is
        throttled (then the password must not be checked at all). StoreError when the
        counts cannot be reached."""
        limits = self._limits(client, account)
        now = self._clock.time()
        if not await self._counter.add_hit(limits, account, now, window=self._window):
            return None
        return AuthAttempt(self._counter, tuple(key for key, _ in limits), account)

    async def throttled(self, client: str, account: str) -> bool:
        """Whether ``begin`` would refuse now; takes no slot. StoreError as ``begin``."""
        limits = self._limits(client, account)
        return not await self._counter.hits_below(limits, self._clock.time(), window=self._window)


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
