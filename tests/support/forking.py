"""A primary in miniature for tests/test_workers.py, run as its own process
(``python -m tests.support.forking CASE DIR``): workers must be forked before any
thread, event loop or store connection exists, which a pytest process cannot promise.

It forks its two workers as ``runtime.run`` does (``WorkerProcesses.fork``), then makes
what a primary makes afterwards (an SQLite connection, a thread, an event loop), then
starts the workers, whose ``main`` is the CASE, and prints what ``Supervisor.start`` said as JSON:
``{"started": true}`` or ``{"failed": "the reason"}``, with ``"listening"``: what its
listening socket is (``socket:[inode]``), and ``"readiness"``: the problems its
``Readiness`` named before the start and after it.

Cases: ``inventory`` (each worker writes DIR/worker-INDEX.json: its threads and the
targets of its open file descriptors, then says it listens), ``refuses`` (it says why it
cannot start), ``exits`` (it exits with 3 at once), ``silent`` (it never says anything).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from postroom.clock import SystemClock
from postroom.config.settings import Settings
from postroom.net.shares import AcceptShares
from postroom.readiness import Readiness
from postroom.supervise import TaskSupervisor
from postroom.workerprocs import WorkerExited, WorkerProcesses, WorkerSetup, accept_shares
from postroom.workers import Supervisor, bind_listeners, report_start
from tests.support.servers import loopback_settings

__all__ = ["open_fd_targets"]

START_WAIT = 1.0  # the silent case's bound


def open_fd_targets(pid: int | str = "self") -> list[str]:
    """What each open file descriptor of process ``pid`` refers to (a path, or
    ``socket:[inode]``, ``pipe:[inode]``)."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:  # closed since the listing
            continue
    return found


def _inventory(directory: Path) -> Callable[[WorkerSetup], int]:
    def main(setup: WorkerSetup) -> int:
        held = {
            "threads": [thread.name for thread in threading.enumerate()],
            "fds": open_fd_targets(),
        }
        (directory / f"worker-{setup.index}.json").write_text(json.dumps(held))
        report_start(setup.report_fd)
        os.read(setup.command_fd, 1)  # until the primary stops it
        return 0

    return main


def _refuses(setup: WorkerSetup) -> int:
    report_start(setup.report_fd, failed="no certificate\nat all")
    return 1


def _exits(_setup: WorkerSetup) -> int:
    return 3


def _silent(_setup: WorkerSetup) -> int:
    time.sleep(60)
    return 0


async def _start_one(
    processes: WorkerProcesses, settings: Settings, shares: AcceptShares
) -> dict[str, object]:
    clock = SystemClock()
    readiness = Readiness(clock)
    supervisor = Supervisor(settings, processes, shares, start_wait=START_WAIT)
    supervisor.report_to(readiness)
    tasks = TaskSupervisor(readiness, clock)
    before = [f"{p.part}: {p.reason}" for p in readiness.problems()]
    try:
        await supervisor.start(tasks)
        answer: dict[str, object] = {"started": True}
    except WorkerExited as exc:
        answer = {"failed": str(exc)}
    answer["readiness"] = [before, [f"{p.part}: {p.reason}" for p in readiness.problems()]]
    await supervisor.stop(1.0)
    await tasks.stop()
    return answer


def main(case: str, directory: Path) -> None:
    settings = loopback_settings(directory / "data", workers=2)
    sockets = bind_listeners(settings.listeners[:1])
    cases: dict[str, Callable[[WorkerSetup], int]] = {
        "inventory": _inventory(directory),
        "refuses": _refuses,
        "exits": _exits,
        "silent": _silent,
    }
    shares = accept_shares(settings)
    processes = WorkerProcesses.fork(settings, sockets, shares, cases[case])
    # What a primary has once it runs, none of which a worker may inherit.
    database = sqlite3.connect(directory / "primary.db")
    database.execute("CREATE TABLE IF NOT EXISTS t (x)")
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="primary-thread")
    thread.start()
    try:
        answer = asyncio.run(_start_one(processes, settings, shares))
    finally:
        stop.set()
        thread.join()
        database.close()
    answer["listening"] = os.readlink(f"/proc/self/fd/{sockets[0].fileno()}")
    print(json.dumps(answer))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
