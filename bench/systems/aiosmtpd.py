"""aiosmtpd (pip, own venv): the plain Python baseline, with and without fsync."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.install import aiosmtpd_python
from bench.paths import BENCH
from bench.procs import SetupError, free_port, stop_process, wait_for_greeting
from bench.systems.base import Instance

__all__ = ["AiosmtpdSystem"]

_SERVER = BENCH / "peers" / "aiosmtpd_server.py"


@dataclass
class AiosmtpdSystem:
    fsync: bool  # True: write + fsync per message before 250; False: 250 at once
    name: str = ""
    label: str = ""
    durable: bool = False
    multi_process: bool = False

    def __post_init__(self) -> None:
        self.name = "aiosmtpd-fsync" if self.fsync else "aiosmtpd-null"
        self.label = (
            "aiosmtpd, write + fsync per message"
            if self.fsync
            else "aiosmtpd, stores nothing (250 at once)"
        )
        self.durable = self.fsync

    def start(self, rundir: Path) -> Instance:
        spool = rundir / "spool"
        spool.mkdir(parents=True)
        port = free_port()
        mode = "fsync" if self.fsync else "null"
        argv = [str(aiosmtpd_python()), str(_SERVER), "--port", str(port), "--mode", mode]
        argv += ["--spool", str(spool)]
        log = rundir / "aiosmtpd.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=rundir
            )
        try:
            wait_for_greeting(port, 30, proc, log)
        except SetupError:
            stop_process(proc)
            raise

        def stored() -> int | None:
            return sum(1 for _ in spool.iterdir()) if self.fsync else None

        return Instance(
            port=port, pid=proc.pid, stop=lambda: stop_process(proc), log=log, stored=stored
        )
