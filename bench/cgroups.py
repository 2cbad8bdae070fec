"""CPU shares for benchmark processes (cgroup v1's cpu controller), so that N nodes on one
host can stand for N machines of a fixed size: each node's process gets its own group
with a hard cap (``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``), and "one node" means
one node-sized share however many cores the host has.

A cap is a ceiling, not a reservation: on a host busy with other work a capped process
may get less than its share (the scheduler is fair between groups and other processes),
and the harness shows the host's load beside the figures.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from bench.procs import SetupError

__all__ = ["CPU_ROOT", "CpuGroups"]

CPU_ROOT = Path("/sys/fs/cgroup/cpu")


class CpuGroups:
    """Groups made under ``CPU_ROOT`` for one run, removed at its end."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._made: list[Path] = []

    def place(self, name: str, pid: int, share: float) -> None:
        """Put process ``pid`` (all its threads, and the children it starts later) in a
        group of its own capped at ``share`` CPUs."""
        path = CPU_ROOT / f"{self._prefix}-{name}"
        try:
            path.mkdir()
            period = int((path / "cpu.cfs_period_us").read_text())
            (path / "cpu.cfs_quota_us").write_text(str(round(share * period)))
            (path / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            raise SetupError(f"cannot cap CPU with {CPU_ROOT} (cgroup v1, as root): {exc}") from exc
        self._made.append(path)

    def remove(self) -> None:
        for path in self._made:
            with contextlib.suppress(OSError):
                for pid in (path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (CPU_ROOT / "cgroup.procs").write_text(pid)
                path.rmdir()
        self._made.clear()
