"""The load: Postfix's smtp-source, the same for every system, its CPU counted.

smtp-source does not pipeline and speaks neither TLS nor AUTH. ``-d`` keeps one
connection for all of an invocation's messages, so "N messages per connection" is run as
lanes: each of the S concurrent lanes runs ``smtp-source -s 1 -d -m N`` again and again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.paths import SMTP_SOURCE
from bench.systems.base import RECIPIENT, SENDER

__all__ = ["Load", "LoadResult", "lanes", "run_lanes", "run_smtp_source"]

CLIENT_NAME = "client.test"


@dataclass(frozen=True, slots=True)
class Load:
    messages: int
    sessions: int
    size: int  # payload bytes per message (smtp-source -l), headers not included
    per_connection: int = 1  # messages sent over one connection


@dataclass
class LoadResult:
    wall: float  # seconds from the first smtp-source start to the last one's exit
    client_cpu: float  # user + system seconds of every smtp-source process
    invocations: int
    failures: list[str] = field(default_factory=list)
    detail: str = ""  # what the load generator said at the end, if anything


def _argv(port: int, *, sessions: int, messages: int, size: int, keep: bool) -> list[str]:
    argv = [str(SMTP_SOURCE), "-s", str(sessions), "-m", str(messages), "-l", str(size)]
    argv += ["-r", "1", "-f", SENDER, "-t", RECIPIENT, "-M", CLIENT_NAME]
    if keep:
        argv.append("-d")
    return [*argv, f"127.0.0.1:{port}"]


def lanes(port: int, load: Load) -> list[list[list[str]]]:
    """smtp-source command lines, lane by lane; lanes run side by side."""
    if load.per_connection <= 1:
        one = _argv(
            port, sessions=load.sessions, messages=load.messages, size=load.size, keep=False
        )
        return [[one]]
    result: list[list[list[str]]] = []
    base, extra = divmod(load.messages, load.sessions)
    for lane in range(load.sessions):
        remaining = base + (1 if lane < extra else 0)
        commands = []
        while remaining > 0:
            chunk = min(load.per_connection, remaining)
            commands.append(_argv(port, sessions=1, messages=chunk, size=load.size, keep=True))
            remaining -= chunk
        if commands:
            result.append(commands)
    return result


class _Lane(threading.Thread):
    def __init__(self, commands: list[list[str]], errors: Path) -> None:
        super().__init__(daemon=True)
        self.commands = commands
        self.errors = errors
        self.cpu = 0.0
        self.ran = 0
        self.failures: list[str] = []
        self.current: int | None = None
        self.stopped = False

    def run(self) -> None:
        with open(self.errors, "ab") as err:
            for argv in self.commands:
                if self.stopped:
                    return
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
                )
                self.current = proc.pid
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                self.current = None
                self.ran += 1
                self.cpu += usage.ru_utime + usage.ru_stime
                if proc.returncode != 0:
                    self.failures.append(f"smtp-source exited {proc.returncode}")
                    return


def run_lanes(plan: list[list[list[str]]], errors: Path, timeout: float) -> LoadResult:
    """Run every lane to its end (or ``timeout``); wall time and client CPU."""
    workers = [_Lane(commands, errors) for commands in plan]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    deadline = start + timeout
    for worker in workers:
        worker.join(max(0.0, deadline - time.perf_counter()))
    wall = time.perf_counter() - start
    failures: list[str] = []
    if any(worker.is_alive() for worker in workers):
        failures.append(f"load did not finish within {timeout:.0f}s: stopped")
        for worker in workers:
            worker.stopped = True
            if worker.current is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.current, signal.SIGKILL)
        for worker in workers:
            worker.join(10)
    for worker in workers:
        failures.extend(worker.failures)
    if failures and errors.exists():
        said = errors.read_text(errors="replace").strip().splitlines()[-3:]
        failures.extend(said)
    return LoadResult(
        wall=wall,
        client_cpu=sum(worker.cpu for worker in workers),
        invocations=sum(worker.ran for worker in workers),
        failures=failures,
    )


def run_smtp_source(port: int, load: Load, errors: Path, timeout: float) -> LoadResult:
    return run_lanes(lanes(port, load), errors, timeout)
