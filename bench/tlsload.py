"""The submission load: ``smtp-tls-source`` (bench/loadgen), smtp-source's load with TLS
and AUTH, the same for every system, its CPU counted.

smtp-source speaks neither TLS nor AUTH, so this C program does what it does (sessions as
processes, lockstep commands, no pipelining) plus STARTTLS or implicit TLS and AUTH PLAIN
on every connection, as an application's mail library does. It offers each connection's
TLS session (ticket) on the next, as client libraries that keep sessions do.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.load import CLIENT_NAME, LoadResult

__all__ = ["SubmissionLoad", "run_tls_source"]


@dataclass(frozen=True, slots=True)
class SubmissionLoad:
    messages: int
    sessions: int
    size: int  # body bytes per message
    per_connection: int
    tls: Literal["starttls", "tls"]
    username: str
    password: str
    sender: str
    recipient: str
    resume: bool = True  # offer the previous TLS session on a new connection


def argv(loadgen: Path, port: int, load: SubmissionLoad) -> list[str]:
    command = [str(loadgen), "-s", str(load.sessions), "-m", str(load.messages)]
    command += ["-n", str(load.per_connection), "-l", str(load.size), "-t", load.tls]
    command += ["-a", f"{load.username}:{load.password}", "-f", load.sender]
    command += ["-T", load.recipient, "-M", CLIENT_NAME]
    if load.resume:
        command.append("-r")
    return [*command, f"127.0.0.1:{port}"]


def run_tls_source(
    loadgen: Path, port: int, load: SubmissionLoad, errors: Path, timeout: float
) -> LoadResult:
    """Run the load to its end (or ``timeout``): wall time, and the CPU of the generator
    and its session processes (it waits for them, so wait4 reports them all)."""
    start = time.perf_counter()
    with open(errors, "ab") as err:
        proc = subprocess.Popen(
            argv(loadgen, port, load),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,  # its own process group: a timeout stops every session
        )
        timer = _Killer(proc.pid, timeout)
        assert proc.stdout is not None
        out = proc.stdout.read().decode(errors="replace").strip()
        _, status, usage = os.wait4(proc.pid, 0)
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    failures = []
    if timer.fired:
        failures.append(f"load did not finish within {timeout:.0f}s: stopped")
    if proc.returncode != 0:
        said = errors.read_text(errors="replace").strip().splitlines()[-3:]
        failures += [f"smtp-tls-source exited {proc.returncode}: {out}", *said]
    return LoadResult(
        wall=wall,
        client_cpu=usage.ru_utime + usage.ru_stime,
        invocations=1,
        failures=failures,
        detail=out,
    )


class _Killer:
    """SIGKILL a process group after ``timeout`` seconds unless cancelled."""

    def __init__(self, pid: int, timeout: float) -> None:
        self.fired = False
        self._pid = pid
        self._timer = threading.Timer(timeout, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._pid, signal.SIGKILL)

    def cancel(self) -> None:
        self._timer.cancel()
