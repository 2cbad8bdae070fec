"""The machine: what it is, how busy it is, and its limits."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CpuTimes",
    "QuietWait",
    "describe_machine",
    "durable_write_costs",
    "raise_fd_limit",
    "read_cpu_times",
    "wait_for_quiet",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """Host-wide CPU seconds from /proc/stat, summed over all cores."""

    busy: float
    iowait: float
    softirq: float  # inside busy: mostly loopback TCP, which no process is charged for
    total: float

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(
            self.busy - other.busy,
            self.iowait - other.iowait,
            self.softirq - other.softirq,
            self.total - other.total,
        )


def read_cpu_times() -> CpuTimes:
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    busy = user + nice + system + irq + softirq + steal
    return CpuTimes(
        busy / CLK_TCK, iowait / CLK_TCK, softirq / CLK_TCK, (busy + idle + iowait) / CLK_TCK
    )


def busy_fraction(seconds: float = 1.0) -> float:
    """How busy the whole host was (0..1 of all cores) over the next ``seconds``."""
    before = read_cpu_times()
    time.sleep(seconds)
    delta = read_cpu_times() - before
    return delta.busy / delta.total if delta.total > 0 else 0.0


@dataclass(frozen=True, slots=True)
class QuietWait:
    busy: float  # the last sample, 0..1
    waited: float  # seconds
    quiet: bool  # False: gave up waiting


def wait_for_quiet(threshold: float, max_wait: float) -> QuietWait:
    """Wait until the host is under ``threshold`` busy (0..1) for one second."""
    start = time.monotonic()
    while True:
        busy = busy_fraction(1.0)
        waited = time.monotonic() - start
        if busy < threshold:
            return QuietWait(busy, waited, True)
        if waited >= max_wait:
            return QuietWait(busy, waited, False)


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise this process's open-file limit (children inherit it); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def _meminfo_total() -> int:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mount_of(path: Path) -> tuple[str, str, str, str]:
    """(device, mount point, fs type, options) of the file system holding ``path``."""
    best = ("?", "/", "?", "")
    real = str(path.resolve())
    with open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            device, point, fstype, options = line.split()[:4]
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best[1]):
                best = (device, point, fstype, options)
    return best


def _ext_features(device: str) -> str | None:
    tune2fs = shutil.which("tune2fs") or "/usr/sbin/tune2fs"
    if not Path(tune2fs).exists() or not device.startswith("/dev/"):
        return None
    try:
        out = subprocess.run(
            [tune2fs, "-l", device], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        if line.startswith("Filesystem features:"):
            return line.split(":", 1)[1].strip()
    return None


def _has_journal(device: str, features: str | None) -> bool | None:
    """Whether the ext file system on ``device`` keeps a journal; None: not known. Where
    tune2fs may not read the device (a virtual machine's disk, say), a mounted file
    system's journal shows in /proc/fs/jbd2 as ``<device>-<inode>``."""
    if features is not None:
        return "has_journal" in features.split()
    try:
        journals = os.listdir("/proc/fs/jbd2")
    except OSError:
        return None
    name = os.path.basename(device)
    return any(journal.rsplit("-", 1)[0] == name for journal in journals)


def durable_write_costs(directory: Path, count: int = 50) -> dict[str, float]:
    """What a durable write costs on the disk holding ``directory``, in ms, medians of
    ``count``: 4 KiB appended to one file and fsync'ed (a queue file's commit, as
    postroom's SQLite WAL does it), and a new 4 KiB file written and fsync'ed (one file
    per message, as Postfix and the fsync peers write). Between two hosts the ratios of
    systems that write differently move with these."""
    block = b"x" * 4096

    def write_and_sync(fd: int) -> None:
        os.write(fd, block)
        os.fsync(fd)

    def new_file(path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            write_and_sync(fd)
        finally:
            os.close(fd)

    with tempfile.TemporaryDirectory(dir=directory, prefix="fsync-") as scratch:
        log = os.open(os.path.join(scratch, "append"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            appended = _median_ms(lambda _: write_and_sync(log), count)
        finally:
            os.close(log)
        created = _median_ms(lambda i: new_file(os.path.join(scratch, str(i))), count)
    return {"append_fsync_ms": appended, "new_file_fsync_ms": created}


def _median_ms(action: Callable[[int], None], count: int) -> float:
    times = []
    for index in range(count):
        start = time.perf_counter()
        action(index)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 3)


def describe_machine(workdir: Path) -> dict[str, object]:
    """What the figures were measured on: cores, memory, disk (and what a durable write
    costs on it), Python, kernel."""
    device, point, fstype, options = _mount_of(workdir)
    features = _ext_features(device) if fstype.startswith("ext") else None
    usage = shutil.disk_usage(workdir)
    return {
        "cores": NCPU,
        "cpu_model": _cpu_model(),
        "memory_bytes": _meminfo_total(),
        "disk": {
            "workdir": str(workdir),
            "device": device,
            "mount_point": point,
            "fs_type": fstype,
            "mount_options": options,
            "fs_features": features,
            "journal": _has_journal(device, features) if fstype.startswith("ext") else None,
            "size_bytes": usage.total,
            "free_bytes": usage.free,
            **durable_write_costs(workdir),
        },
        "python": sys.version.split()[0],
        "kernel": platform.release(),
        "os": _os_release(),
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()
