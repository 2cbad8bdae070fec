"""Keeping the leases of deliveries in flight: one round every third of
``delivery.lease``, so two renewals may fail in a row before a lease ends. The scheduler
renews its claims this way, and the accepting process what it delivers at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping

from postroom.clock import Clock
from postroom.errors import StoreError
from postroom.store import QueueStore

__all__ = ["keep_renewing", "renew"]

_log = logging.getLogger("postroom.delivery")
_RENEWALS_PER_LEASE = 3


async def keep_renewing(
    lease: float, stopped: asyncio.Event, renew_round: Callable[[], Awaitable[object]]
) -> None:
    """Until ``stopped`` is set: ``renew_round()`` every third of ``lease`` (wall time)."""
    interval = lease / _RENEWALS_PER_LEASE
    while not stopped.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await stopped.wait()
        if not stopped.is_set():
            await renew_round()


async def renew(
    store: QueueStore, leases: Mapping[str, Collection[str]], clock: Clock, lease: float
) -> int:
    """Extend these leases (message id -> addresses) by ``lease`` from now; the number
    renewed. A store error is logged and raised: the next round tries again."""
    if not leases:
        return 0
    try:
        return await store.renew_leases(leases, clock.time(), lease=lease)
    except StoreError as exc:
        _log.error("could not renew the leases of %d messages: %s", len(leases), exc)
        raise
