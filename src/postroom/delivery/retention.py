"""Retention: finished messages (bodies and log entries) are removed after ``retention.days``."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from postroom.clock import Clock
from postroom.config.settings import RetentionSettings
from postroom.store import QueueStore

__all__ = ["Retention"]

_log = logging.getLogger("postroom.retention")
_DAY = 86400.0


class Retention:
    def __init__(self, store: QueueStore, settings: RetentionSettings, clock: Clock) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._stop = asyncio.Event()

    async def run_once(self) -> int:
        removed = await self._store.purge(self._clock.time() - self._settings.days * _DAY)
        if removed:
            _log.info("retention removed %d finished messages", removed)
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
