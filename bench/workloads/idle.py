"""Idle connections: open N SMTP connections that say nothing after the greeting, read the
server's memory, and check that one more client still gets a message through.

Memory is the PSS of the server's process tree (every process's proportional set size,
summed): a page shared by the processes, such as a shared library's code, counts once
in all, as it is in memory once. The sum of RSS is shown too; it counts such a page once
per process, so it overstates a server of several processes."""

from __future__ import annotations

import contextlib
import selectors
import socket
import time

from bench.context import Context
from bench.figures import Metric, Sample
from bench.procs import tree_pss, tree_rss
from bench.systems.base import RECIPIENT, SENDER, System

__all__ = ["IDLE_METRICS", "run_idle", "send_one"]

MIB = 1024 * 1024
BATCH = 50  # connections opened at once: stays inside every server's listen backlog

IDLE_METRICS = [
    Metric("pss_idle_mib", "memory with them open MiB (PSS)", higher_is_better=False),
    Metric("pss_base_mib", "memory before MiB (PSS)", higher_is_better=False),
    Metric("rss_idle_mib", "sum of RSS with them open MiB", higher_is_better=False),
    Metric("kib_per_conn", "KiB per idle connection", higher_is_better=False, digits=1),
    Metric("greeted", "connections greeted", higher_is_better=True),
    Metric("new_client_ms", "new client's message ms", higher_is_better=False, digits=1),
]


def _open_batch(port: int, count: int, timeout: float) -> tuple[list[socket.socket], int]:
    """Open ``count`` connections and read each greeting; (sockets, how many were greeted)."""
    selector = selectors.DefaultSelector()
    opened: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        selector.register(sock, selectors.EVENT_READ, sock)
        opened.append(sock)
    greeted = 0
    deadline = time.monotonic() + timeout
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(0.2):
            sock = key.data
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if data.startswith(b"220"):
                greeted += 1
            selector.unregister(sock)
    selector.close()
    return opened, greeted


def _reply(sock: socket.socket) -> bytes:
    buf = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
        lines = buf.split(b"\r\n")
        complete = [line for line in lines[:-1] if line]
        if complete and (len(complete[-1]) == 3 or complete[-1][3:4] == b" "):
            return complete[-1]


def send_one(port: int, timeout: float = 15.0) -> float:
    """One whole SMTP transaction on a new connection; seconds, or raises."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        steps = [
            (b"", b"220"),
            (b"EHLO client.test\r\n", b"250"),
            (f"MAIL FROM:<{SENDER}>\r\n".encode(), b"250"),
            (f"RCPT TO:<{RECIPIENT}>\r\n".encode(), b"250"),
            (b"DATA\r\n", b"354"),
            (b"Subject: still served\r\n\r\nhello\r\n.\r\n", b"250"),
        ]
        for command, expected in steps:
            if command:
                sock.sendall(command)
            reply = _reply(sock)
            if not reply.startswith(expected):
                raise RuntimeError(f"new client got {reply.decode(errors='replace')!r}")
        elapsed = time.perf_counter() - start
        with contextlib.suppress(OSError):
            sock.sendall(b"QUIT\r\n")
    return elapsed


def _settled_pss(pid: int, within: float = 20.0) -> int:
    """The tree's PSS once it stops growing (a server's first seconds allocate)."""
    deadline = time.monotonic() + within
    last = tree_pss(pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = tree_pss(pid)
        if abs(now - last) < 0.01 * last:
            return now
        last = now
    return last


def run_idle(ctx: Context, system: System, connections: int, label: str) -> Sample:
    warnings = ctx.wait_quiet()
    rundir = ctx.new_rundir(f"{label}-{system.name}")
    instance = system.start(rundir)
    sockets: list[socket.socket] = []
    try:
        base = _settled_pss(instance.pid)
        greeted = 0
        while len(sockets) < connections:
            batch, ok = _open_batch(instance.port, min(BATCH, connections - len(sockets)), 20)
            sockets += batch
            greeted += ok
        time.sleep(1.0)
        idle = tree_pss(instance.pid)
        idle_rss = tree_rss(instance.pid)
        new_client: float | None = None
        try:
            new_client = send_one(instance.port)
        except (OSError, RuntimeError) as exc:
            warnings.append(f"a new client was not served: {exc}")
    finally:
        for sock in sockets:
            sock.close()
        instance.stop()
    ctx.put_aside(rundir)
    if greeted < connections:
        warnings.append(f"only {greeted} of {connections} idle connections were greeted")
    metrics = {
        "pss_base_mib": base / MIB,
        "pss_idle_mib": idle / MIB,
        "rss_idle_mib": idle_rss / MIB,
        "kib_per_conn": (idle - base) / 1024 / max(connections, 1),
        "greeted": greeted,
        "served": 0.0 if new_client is None else 1.0,
    }
    if new_client is not None:
        metrics["new_client_ms"] = new_client * 1000
    return Sample(metrics, warnings)
