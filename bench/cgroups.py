"""CPU shares for benchmark processes (cgroup v1's cpu controller), so that N nodes on one
host can stand for N machines of a fixed size: each node's process gets its own group
with a hard cap (``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``), and "one node" means
one node-sized share however many cores the host has.

A cap is a ceiling, not a reservation: on a host busy with other work a capped process
may get less than its share (the scheduler is fair between groups and other processes),
and the harness shows the host's load beside the figures.

The period is 10 ms, not the kernel's default 100 ms. A quota is spent within its
period: a node at 0.3 CPU that has work for a burst runs 30 ms, then stands still 70 ms,
and every round trip it is part of (a commit's answer, the sink's reply, another node's
wait for a lease) waits out that stall, though its average stays below the cap. With a
10 ms period the same 0.3 CPU is 3 ms in every 10: the stalls are 7 ms at most, as on a
machine of 0.3 of a core's speed, which is what the cap stands for. ``throttled``
reports how often a group was held back (``cpu.stat``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from bench.procs import SetupError

__all__ = ["CPU_ROOT", "PERIOD_US", "CpuGroups"]

CPU_ROOT = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 10_000  # cpu.cfs_period_us: see above


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
            (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (path / "cpu.cfs_quota_us").write_text(str(round(share * PERIOD_US)))
            (path / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            raise SetupError(f"cannot cap CPU with {CPU_ROOT} (cgroup v1, as root): {exc}") from exc
        self._made.append(path)

    def throttled(self, name: str) -> tuple[int, int]:
        """(periods the group ran in, periods it was held back in) so far."""
        stat = dict(
            line.split()
            for line in (CPU_ROOT / f"{self._prefix}-{name}" / "cpu.stat").read_text().splitlines()
        )
        return int(stat["nr_periods"]), int(stat["nr_throttled"])

    def remove(self) -> None:
        for path in self._made:
            with contextlib.suppress(OSError):
                for pid in (path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (CPU_ROOT / "cgroup.procs").write_text(pid)
                path.rmdir()
        self._made.clear()
