"""Supervision: long-running tasks that are logged and restarted when they end unexpectedly.

A server's background work (the scheduler, lease renewal, retention, the API server's
loop, the accept-worker watchers) runs for as long as the server does; each returns
only when asked to stop. Should one of them raise, the exception is logged at error
level with its traceback, the
task is named on ``Readiness`` (so ``/readyz`` answers 503), and it is started again
after a pause that doubles while it keeps failing. A task that then runs for
``healthy`` seconds is taken off ``Readiness`` and its pause starts over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from postroom.clock import Clock
from postroom.readiness import Readiness

__all__ = ["TaskSupervisor"]

_log = logging.getLogger("postroom.supervise")

Sleep = Callable[[float], Awaitable[None]]


class TaskSupervisor:
    """Runs named coroutines until ``stop()``, restarting any that raises.

    ``sleep`` waits out the pause before a restart and the ``healthy`` time after it (a
    test passes one that does not wait on the wall clock); ``clock.monotonic()``
    measures how long a run lasted."""

    def __init__(
        self,
        readiness: Readiness,
        clock: Clock,
        *,
        sleep: Sleep = asyncio.sleep,
        first_pause: float = 0.5,
        max_pause: float = 30.0,
        healthy: float = 60.0,
    ) -> None:
        self._readiness = readiness
        self._clock = clock
        self._sleep = sleep
        self._first_pause = first_pause
        self._max_pause = max_pause
        self._healthy = healthy
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run()`` as the task ``name``; call it again whenever it raises."""
        self._tasks.append(asyncio.create_task(self._keep(name, run), name=name))

    async def stop(self) -> None:
        """Cancel every task still running and wait for them (each part's own stop
        comes first, so that they end in order)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _keep(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        pause = self._first_pause
        restarted = False
        while True:
            started = self._clock.monotonic()
            try:
                await self._run_once(name, run, restarted)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.error("task %s failed: restarting in %g s", name, pause, exc_info=exc)
                self._readiness.fail(name, f"{type(exc).__name__}: {exc}")
            else:
                self._readiness.ok(name)
                return
            if self._clock.monotonic() - started >= self._healthy:
                pause = self._first_pause
            await self._sleep(pause)
            pause = min(pause * 2, self._max_pause)
            restarted = True

    async def _run_once(
        self, name: str, run: Callable[[], Awaitable[None]], restarted: bool
    ) -> None:
        if not restarted:
            await run()
            return
        task = asyncio.ensure_future(run())
        healthy = asyncio.ensure_future(self._sleep(self._healthy))
        try:
            await asyncio.wait({task, healthy}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                _log.info("task %s has run for %g s again", name, self._healthy)
                self._readiness.ok(name)
            await task
        finally:
            task.cancel()
            healthy.cancel()
