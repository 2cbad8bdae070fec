"""FETCH streams: serving a 20 MiB message grows the server's peak memory by less than
10 MiB (the message is never held whole, neither for its structure nor for its octets)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.mailbox import Maildir

MIB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


def _big_message() -> bytes:
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123\r\n"
    body = line * (20 * MIB // len(line))
    return (
        b"From: big@example.org\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\nsmall part\r\n--b\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n" + body + b"--b--\r\n"
    )


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.file = self.sock.makefile("rb")
        self.file.readline()
        self.count = 0

    def command(self, text: str) -> None:
        """Send ``text``; read the answer to its OK, throwing literals away in chunks."""
        self.count += 1
        tag = f"t{self.count}".encode()
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        while True:
            line = self.file.readline()
            if line.startswith(tag + b" "):
                assert line.startswith(tag + b" OK"), line
                return
            if line.rstrip(b"\r\n").endswith(b"}"):
                left = int(line.rsplit(b"{", 1)[1].rstrip(b"}\r\n"))
                while left:
                    left -= len(self.file.read(min(left, 64 * 1024)))

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    mailboxes = Maildir(data_dir / "mail", hostname="mail.test")
    for message in (b"Subject: small\r\n\r\nsmall\r\n", _big_message()):
        mailboxes.deliver_sync(
            "example.test", "ann", message, sender="s@example.org", recipient="ann@example.test"
        )
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.imap.serve_harness", str(data_dir)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    port = int(process.stdout.readline())
    yield process, port
    process.stdin.close()
    process.wait(30)
    process.stdout.close()


def test_fetching_a_20_mib_message_grows_peak_memory_by_under_10_mib(
    served: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = served
    client = Client(port)
    try:
        client.command("LOGIN ann@example.test ann-pass")
        client.command("SELECT INBOX")
        client.command("FETCH 1 (BODYSTRUCTURE BODY.PEEK[] BODY.PEEK[1])")  # warm every path
        before = _peak_kib(process.pid)
        client.command("FETCH 2 (BODYSTRUCTURE ENVELOPE BODY.PEEK[1] BODY.PEEK[2]<0.100>)")
        client.command("FETCH 2 BODY.PEEK[]")
        client.command("FETCH 2 BODY.PEEK[2]")
        client.command("FETCH 2 BODY.PEEK[TEXT]")
        growth = _peak_kib(process.pid) - before
    finally:
        client.close()
    assert growth < 10 * 1024, f"peak memory grew by {growth} KiB"
