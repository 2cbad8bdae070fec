"""The task supervisor: a task that raises is logged with its exception, named on
Readiness and restarted after a pause that doubles; a task that returns is done."""

from __future__ import annotations

import asyncio
import logging

import pytest

from postroom.readiness import Readiness
from postroom.supervise import TaskSupervisor
from tests.conftest import FakeClock

HEALTHY = 600.0


class Pauses:
    """The supervisor's sleep: records each pause before a restart and moves the fake
    clock by it; the healthy time after a restart does not pass unless ``healthy`` is set."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.taken: list[float] = []
        self.healthy = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        if seconds == HEALTHY:
            await self.healthy.wait()
            return
        self.taken.append(seconds)
        self.clock.advance(seconds)


async def test_a_task_that_raises_is_logged_reported_and_restarted_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    readiness = Readiness(clock)
    pauses = Pauses(clock)
    tasks = TaskSupervisor(
        readiness, clock, sleep=pauses, first_pause=1.0, max_pause=4.0, healthy=HEALTHY
    )
    runs = 0
    recovered = asyncio.Event()
    forever = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 4:
            raise OSError(f"boom {runs}")
        recovered.set()
        await forever.wait()

    tasks.start("flaky", flaky)
    await asyncio.wait_for(recovered.wait(), 5)
    assert runs == 5
    assert pauses.taken == [1.0, 2.0, 4.0, 4.0]  # doubling, up to max_pause
    (problem,) = readiness.problems()
    assert (problem.part, problem.reason, problem.failures) == ("flaky", "OSError: boom 4", 4)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 4
    assert all(r.exc_info is not None for r in errors)
    assert "task flaky failed" in errors[0].getMessage()
    await tasks.stop()


async def test_a_restarted_task_that_runs_long_enough_is_ready_again() -> None:
    clock = FakeClock()
    readiness = Readiness(clock)
    pauses = Pauses(clock)
    tasks = TaskSupervisor(readiness, clock, sleep=pauses, healthy=HEALTHY)
    runs = 0
    stop = asyncio.Event()

    async def once_broken() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("first run fails")
        await stop.wait()

    tasks.start("once", once_broken)
    for _ in range(5):
        await asyncio.sleep(0)
    assert (runs, readiness.ready) == (2, False)  # failed, restarted, not yet healthy
    pauses.healthy.set()  # the restarted run has lasted the healthy time
    for _ in range(5):
        await asyncio.sleep(0)
    assert readiness.ready
    stop.set()
    await tasks.stop()
    assert runs == 2 and readiness.ready


def test_faults_are_kept_newest_first_after_their_part_works_again() -> None:
    clock = FakeClock()
    readiness = Readiness(clock)
    readiness.fail("scheduler", "StoreFull: disk full")
    clock.advance(5)
    readiness.fail("retention", "OSError: boom")
    readiness.ok("scheduler")
    readiness.ok("retention")

    assert readiness.ready
    assert [(f.part, f.reason, f.at) for f in readiness.faults()] == [
        ("retention", "OSError: boom", clock.time()),
        ("scheduler", "StoreFull: disk full", clock.time() - 5),
    ]
    for n in range(30):
        readiness.fail("api", f"error {n}")
    assert len(readiness.faults()) == 20  # a bounded history
    assert readiness.faults()[0].reason == "error 29"


async def test_a_task_that_returns_is_done_and_not_restarted() -> None:
    clock = FakeClock()
    readiness = Readiness(clock)
    pauses = Pauses(clock)
    tasks = TaskSupervisor(readiness, clock, sleep=pauses, healthy=HEALTHY)
    runs = 0

    async def finite() -> None:
        nonlocal runs
        runs += 1

    tasks.start("finite", finite)
    for _ in range(10):
        await asyncio.sleep(0)
    await tasks.stop()
    assert runs == 1 and pauses.taken == [] and readiness.ready


def test_a_watched_part_fails_while_its_check_gives_a_reason_and_clears_when_it_does_not() -> None:
    clock = FakeClock()
    readiness = Readiness(clock)
    reason: list[str | None] = [None]
    readiness.watch("listener mx 127.0.0.1:25", lambda: reason[0])
    assert readiness.problems() == []

    reason[0] = "not accepting connections"
    clock.advance(5)
    (problem,) = readiness.problems()
    assert (problem.part, problem.reason, problem.failures) == (
        "listener mx 127.0.0.1:25",
        "not accepting connections",
        1,
    )
    failing = not readiness.ready
    assert failing
    assert readiness.problems()[0].failures == 1  # asking again is not another failure
    assert [f.reason for f in readiness.faults()] == ["not accepting connections"]

    reason[0] = None
    assert readiness.ready and readiness.problems() == []
