"""Memory stays bounded: a hundred concurrent large messages are spooled, not held whole."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from tests.e2e.test_smtp_session import QUEUED, Raw
from tests.support.servers import start_process, write_config

CONNECTIONS = 100
MESSAGE_SIZE = 16 * 1024 * 1024
MIB = 1024 * 1024


def peak_rss(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_hundred_concurrent_large_messages(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "postroom.toml",
        tmp_path / "data",
        extra="[limits]\nmax_connections_per_ip = 200\n",
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "postroom",
            "--config",
            str(config),
            "domain",
            "add",
            "example.test",
        ],
        check=True,
        capture_output=True,
    )
    proc = start_process(config, tmp_path / "postroom.log")
    line = b"x" * 998 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * (MESSAGE_SIZE // len(line)) + b".\r\n"
    try:
        sessions = [Raw(proc.ports["mx"]) for _ in range(CONNECTIONS)]
        for raw in sessions:
            raw.command(b"EHLO client.test")
            raw.command(b"MAIL FROM:<a@elsewhere.test>")
            raw.command(b"RCPT TO:<postmaster@example.test>")
            assert raw.command(b"DATA")[0] == 354
        baseline = peak_rss(proc.process.pid)
        threads = [threading.Thread(target=raw.send, args=(body,)) for raw in sessions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        replies = [raw.reply() for raw in sessions]
        for raw in sessions:
            raw.close()
        assert all(code == 250 and QUEUED.match(text[0]) for code, text in replies)
        grown = peak_rss(proc.process.pid) - baseline
        # 1,600 MiB went in at once. Held whole, that would be 1,600 MiB more; the server
        # spools to disk instead, and delivery (into Maildir, as it runs here) holds at
        # most delivery.max_inflight_bytes (64 MiB) of messages at a time (a few copies each).
        total = CONNECTIONS * MESSAGE_SIZE
        assert grown < total / 4, f"peak RSS grew by {grown / MIB:.0f} MiB"
    finally:
        proc.kill()
