"""Retention: finished messages (bodies and log entries) are removed after ``retention.days``;
their bodies alone after ``retention.bodies_days``, when that is shorter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from postroom.clock import Clock
from postroom.config.settings import RetentionSettings
from postroom.store import QueueStore
from postroom.store.base import EventStore

__all__ = ["Retention", "RetentionStore"]


class RetentionStore(QueueStore, EventStore, Protocol):
    """Messages and their events: both are kept for ``retention.days``."""


_log = logging.getLogger("postroom.retention")
_DAY = 86400.0


class Retention:
    def __init__(self, store: RetentionStore, settings: RetentionSettings, clock: Clock) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._stop = asyncio.Event()

    async def run_once(self) -> int:
        """One cleanup; the number of messages removed (whole, not only their bodies)."""
        now = self._clock.time()
        removed = await self._store.purge(now - self._settings.days * _DAY)
        if removed:
            _log.info("retention removed %d finished messages", removed)
        events = await self._store.purge_events(now - self._settings.days * _DAY)
        if events:
            _log.info("retention removed %d events sent to the webhooks", events)
        # The counters' rows of every writer that ever counted, folded (on an engine
        # that keeps such rows): readers add up fewer rows.
        folded = await self._store.merge_counters()
        if folded:
            _log.debug("retention folded %d counter rows", folded)
        if self._settings.bodies_days is not None:
            bodies = await self._store.purge_bodies(now - self._settings.bodies_days * _DAY)
            if bodies:
                _log.info(
                    "retention removed the bodies of %d finished messages (their log stays)",
                    bodies,
                )
        return removed

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception:  # cleanup must never take the server down
                _log.exception("retention cleanup failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.interval):
                    await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()
