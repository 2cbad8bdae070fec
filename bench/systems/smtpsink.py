"""Postfix's smtp-sink: answers SMTP in C and stores nothing. The ceiling."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.paths import SMTP_SINK
from bench.procs import SetupError, free_port, stop_process, wait_for_greeting
from bench.systems.base import Instance

__all__ = ["SmtpSinkSystem", "sink_messages", "start_sink"]

_COUNTER = re.compile(rb"mesg=(\d+)")


def start_sink(rundir: Path, *, count: bool) -> tuple[subprocess.Popen[bytes], int, Path]:
    """smtp-sink on a free loopback port; with ``count`` it prints running counters."""
    port = free_port()
    out = rundir / "smtp-sink.out"
    # -u: it refuses to run as root without a user to switch to; -m: up to 5000 sessions
    argv = [str(SMTP_SINK), "-u", "nobody", "-m", "5000"]
    if count:
        argv.append("-c")
    argv += [f"127.0.0.1:{port}", "1024"]
    with open(out, "wb") as sink_out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink_out, stderr=sink_out)
    try:
        wait_for_greeting(port, 20, proc, out)
    except SetupError:
        stop_process(proc)
        raise
    return proc, port, out


def sink_messages(out: Path, *, tail: bool = False) -> int | None:
    """The last message counter smtp-sink -c printed (``tail``: read only the file's end)."""
    try:
        with open(out, "rb") as counters:
            if tail:
                counters.seek(max(0, counters.seek(0, 2) - 256))
            found = _COUNTER.findall(counters.read())
    except OSError:
        return None
    return int(found[-1]) if found else None


@dataclass
class SmtpSinkSystem:
    name: str = "smtp-sink"
    label: str = "smtp-sink (stores nothing; the ceiling)"
    durable: bool = False
    multi_process: bool = False

    def start(self, rundir: Path) -> Instance:
        proc, port, out = start_sink(rundir, count=False)
        return Instance(port=port, pid=proc.pid, stop=lambda: stop_process(proc), log=out)
