"""Processes and ports: CPU and memory of a server's process tree, readiness, stopping."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = [
    "SetupError",
    "free_port",
    "log_tail",
    "pid_alive",
    "stop_process",
    "tree_cpu",
    "tree_peak_rss",
    "tree_pss",
    "tree_rss",
    "wait_for_greeting",
    "wait_pid_gone",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")


class SetupError(RuntimeError):
    """A peer could not be installed, configured or started."""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of it and its reaped children) of ``pid``."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    # after the name: state ppid ... utime(12) stime(13) cutime(14) cstime(15), 0-based from state
    ppid = int(fields[1])
    ticks = sum(int(v) for v in fields[11:15])
    return ppid, ticks / CLK_TCK


def _descendants(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                parents.setdefault(stat[0], []).append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def tree_cpu(root: int) -> float:
    """CPU seconds used by ``root`` and its descendants, the exited ones included.

    A child that exited and was reaped is in its parent's cutime/cstime; a live child is
    counted on its own, so differences of two readings are consistent.
    """
    total = 0.0
    for pid in _descendants(root):
        stat = _stat(pid)
        if stat is not None:
            total += stat[1]
    return total


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and its live descendants (shared pages counted twice)."""
    return sum(_status_kib(pid, "VmRSS") for pid in _descendants(root)) * 1024


def tree_pss(root: int) -> int:
    """Proportional set size of ``root`` and its live descendants: each page shared by
    several processes counts a share in each, so the sum is what the tree uses in all
    (its processes' shared libraries once, not once per process)."""
    return sum(_pss_kib(pid) for pid in _descendants(root)) * 1024


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_peak_rss(root: int) -> int:
    """Peak resident bytes (VmHWM) of ``root`` plus its live descendants."""
    return sum(_status_kib(pid, "VmHWM") for pid in _descendants(root)) * 1024


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[:1]
    return state != ["Z"]


def wait_pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_for_greeting(
    port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> None:
    """Wait until 127.0.0.1:``port`` answers with an SMTP ``220`` greeting."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_tail(log) if log else ""
            raise SetupError(f"server exited with {proc.returncode} before listening\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                greeting = sock.recv(512)
                if greeting.startswith(b"220"):
                    with contextlib.suppress(OSError):
                        sock.sendall(b"QUIT\r\n")
                        sock.recv(512)
                    return
                last = greeting.decode("ascii", "replace").strip()
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    tail = log_tail(log) if log else ""
    raise SetupError(f"no SMTP greeting on port {port} within {timeout:.0f}s: {last}\n{tail}")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM, wait, then SIGKILL the one process we started."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
