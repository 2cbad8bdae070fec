"""CPU between two instants: the host, a server's process tree, this harness."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field

from bench.host import NCPU, CpuTimes, read_cpu_times
from bench.procs import tree_cpu

__all__ = ["Meter", "Reading"]

OTHERS_LIMIT = 0.10  # of the host: more than this used by other processes makes a warning


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True, slots=True)
class Reading:
    wall: float
    host: CpuTimes
    server: float
    harness: float


@dataclass
class Meter:
    pids: list[int]  # roots of the server's process trees
    _start: tuple[float, CpuTimes, float, float] | None = field(default=None, init=False)

    def _server(self) -> float:
        return sum(tree_cpu(pid) for pid in self.pids)

    def start(self) -> None:
        self._start = (time.perf_counter(), read_cpu_times(), self._server(), _self_cpu())

    def stop(self) -> Reading:
        assert self._start is not None, "start() first"
        server = self._server()
        now, host, harness = time.perf_counter(), read_cpu_times(), _self_cpu()
        t0, host0, server0, harness0 = self._start
        return Reading(now - t0, host - host0, server - server0, harness - harness0)


def cpu_metrics(reading: Reading, client_cpu: float) -> tuple[dict[str, float], list[str]]:
    """CPU figures of a run, and a warning when other processes used the host meanwhile."""
    capacity = max(reading.wall * NCPU, 1e-9)
    host = reading.host
    others = host.busy - host.softirq - reading.server - client_cpu - reading.harness
    metrics = {
        "client_cpu_s": client_cpu,
        "server_cpu_s": reading.server,
        "host_busy_pct": 100 * reading.host.busy / capacity,
        "iowait_pct": 100 * reading.host.iowait / capacity,
        "softirq_cpu_s": reading.host.softirq,
        "others_cpu_s": max(others, 0.0),
        "others_pct": max(100 * others / capacity, 0.0),
    }
    warnings = []
    if reading.wall >= 2.0 and others / capacity > OTHERS_LIMIT:  # short runs: start-up noise
        warnings.append(f"other processes used {100 * others / capacity:.0f}% of the host")
    return metrics, warnings
