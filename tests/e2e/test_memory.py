"""Memory stays bounded: a hundred concurrent large messages are spooled, not held whole."""

from __future__ import annotations

import base64
import json
import select
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.e2e.test_smtp_session import QUEUED, Raw
from tests.support.servers import cli_out, start_process, write_config

MIB = 1024 * 1024
CONNECTIONS = 100
# Sixteen times the body bytes a transaction may keep in memory (limits.spool_memory,
# 256 KiB): held whole, a hundred of them would show; spooled, they cost next to nothing.
MESSAGE_SIZE = 4 * MIB
# Delivery into Maildir runs meanwhile, its in-flight budget in proportion to these sizes.
DELIVERY_INFLIGHT = 8 * MIB


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
        extra=(
            "[limits]\nmax_connections_per_ip = 200\n"
            f"[delivery]\nmax_inflight_bytes = {DELIVERY_INFLIGHT}\n"
        ),
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
        # 400 MiB went in at once. Held whole, that would be 400 MiB more; the server
        # spools to disk instead, and delivery (into Maildir, as it runs here) holds at
        # most delivery.max_inflight_bytes (8 MiB) of messages at a time (a few copies each).
        total = CONNECTIONS * MESSAGE_SIZE
        assert grown < total / 4, f"peak RSS grew by {grown / MIB:.0f} MiB"
    finally:
        proc.kill()


API_BODIES = 8
API_BODY_SIZE = 33 * MIB


def _post(port: int, head: bytes, body: bytes, chunked: bool) -> int | None:
    """POST over a raw socket with ``Expect: 100-continue``; the body goes only after
    "100 Continue", in 1 MiB pieces, stopping when the server answers. The status, or
    None when the server closed the connection before its answer could be read."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(head)
        first = sock.recv(65536)
        if not first.startswith(b"HTTP/1.1 100"):
            return int(first.split(b" ", 2)[1])
        try:
            for start in range(0, len(body), MIB):
                piece = body[start : start + MIB]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                if select.select([sock], [], [], 0)[0]:
                    break  # answered before the end: stop sending
            else:
                sock.sendall(b"0\r\n\r\n" if chunked else b"")
            reply = sock.recv(65536)
        except ConnectionError:
            return None
        return int(reply.split(b" ", 2)[1]) if reply else None


def _all_at_once(port: int, head: bytes, body: bytes, *, chunked: bool) -> list[int | None]:
    with ThreadPoolExecutor(API_BODIES) as pool:
        return list(pool.map(lambda _: _post(port, head, body, chunked), range(API_BODIES)))


def _json_send(attachment_size: int) -> bytes:
    content = base64.b64encode(b"y" * attachment_size).decode()
    document = {
        "from": "a@example.com",
        "to": "b@example.net",
        "text": "big",
        "attachments": [{"content": content, "filename": "big.bin"}],
    }
    return json.dumps(document).encode()


def test_eight_concurrent_33_mib_api_bodies_stay_under_300_mib(tmp_path: Path) -> None:
    """Eight at once, four ways: raw messages of unknown and of declared length (413 at
    the 25 MiB limit, or at once), JSON over the message limit (413 without building
    it), and JSON of the largest message that fits (one at a time, the others 503)."""
    config = write_config(tmp_path / "postroom.toml", tmp_path / "data")
    proc = start_process(config, tmp_path / "postroom.log")
    try:
        token = cli_out(config, "apikey", "create", "load", "--any-sender").splitlines()[-1]
        port = proc.api_port
        assert port is not None

        def send(content_type: str, framing: str, body: bytes) -> list[int | None]:
            head = (
                f"POST /api/v1/messages?rcpt=b@example.net HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: {content_type}\r\n"
                f"Expect: 100-continue\r\n{framing}\r\n"
            ).encode()
            chunked = framing.startswith("Transfer-Encoding")
            return _all_at_once(port, head, body, chunked=chunked)

        raw = b"From: a@example.com\r\n\r\n" + b"x" * (API_BODY_SIZE - 23)
        statuses = send("message/rfc822", "Transfer-Encoding: chunked\r\n", raw)
        assert set(statuses) <= {413, None} and 413 in statuses, statuses
        statuses = send("message/rfc822", f"Content-Length: {len(raw)}\r\n", raw)
        assert statuses == [413] * API_BODIES
        too_big = _json_send(24 * MIB)  # 32 MiB of base64: a message over 25 MiB
        assert API_BODY_SIZE - MIB < len(too_big) < API_BODY_SIZE + MIB
        statuses = send("application/json", f"Content-Length: {len(too_big)}\r\n", too_big)
        assert set(statuses) <= {413, 503} and 413 in statuses, statuses
        largest = _json_send(18 * MIB)  # composed: just under 25 MiB
        statuses = send("application/json", f"Content-Length: {len(largest)}\r\n", largest)
        assert set(statuses) <= {202, 503} and 202 in statuses, statuses
        peak = peak_rss(proc.process.pid)
        assert peak < 300 * MIB, f"peak RSS {peak / MIB:.0f} MiB"
    finally:
        proc.kill()
