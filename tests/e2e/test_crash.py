"""kill -9 under concurrent load: every message that got a 250 is in the queue, whole,
and nothing half-written appears."""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from postroom.store import open_store
from tests.support.depth import examples
from tests.support.servers import start_process, write_config

QUEUED = re.compile(rb"Ok: queued as ([0-9A-Z]{16})")


def payload(worker: int, n: int) -> bytes:
    # Some messages large enough to span many pages of the store.
    size = 300_000 if n % 7 == 0 else 2_000
    token = f"{worker}-{n}".encode()
    filler = hashlib.sha256(token).hexdigest().encode() * (size // 64)
    lines = b"\r\n".join(filler[i : i + 76] for i in range(0, len(filler), 76))
    return b"Subject: crash " + token + b"\r\n\r\n" + lines + b"\r\nEND " + token + b"\r\n"


def sender(
    port: int, worker: int, acked: dict[str, bytes], attempted: set[bytes], stop: threading.Event
) -> None:
    n = 0
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.ehlo("load.test")
                while not stop.is_set():
                    body = payload(worker, n)
                    n += 1
                    attempted.add(hashlib.sha256(body).digest())
                    client.mail("load@elsewhere.test")
                    client.rcpt("postmaster@example.test")
                    code, text = client.data(body)
                    if code == 250 and (m := QUEUED.search(text)):
                        acked[m.group(1).decode()] = body
        except (OSError, smtplib.SMTPException):
            if not stop.is_set():
                time.sleep(0.05)  # the server is gone; the test stops us soon


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(examples(1)))  # each round kills at another moment
def test_kill_9_loses_nothing_acknowledged(tmp_path: Path, round_: int) -> None:
    data = tmp_path / "data"
    config = write_config(tmp_path / "postroom.toml", data)
    for args in (["domain", "add", "example.test"],):
        subprocess.run(
            [sys.executable, "-m", "postroom", "--config", str(config), *args],
            check=True,
            capture_output=True,
        )
    proc = start_process(config, tmp_path / "postroom.log")
    acked: dict[str, bytes] = {}
    attempted: set[bytes] = set()
    stop = threading.Event()
    workers = [
        threading.Thread(target=sender, args=(proc.ports["mx"], w, acked, attempted, stop))
        for w in range(8)
    ]
    for worker in workers:
        worker.start()
    try:
        # wait for a random number of acknowledged messages, then kill at once
        target = random.Random(round_).randint(20, 120)
        deadline = time.monotonic() + 60
        while len(acked) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.kill()
    finally:
        stop.set()
        for worker in workers:
            worker.join(15)
    assert len(acked) >= target
    acked_now = dict(acked)

    async def check() -> None:
        store = await open_store(f"sqlite:///{data / 'postroom.db'}")
        try:
            for queue_id, body in acked_now.items():
                stored = await store.read_body(queue_id)
                assert stored is not None, f"{queue_id} got a 250 but is not in the queue"
                assert stored.endswith(body), f"{queue_id} is not whole"
                message = await store.message(queue_id)
                assert message is not None and len(message.recipients) == 1
            everything = await store.messages(limit=100_000)
            for message in everything:
                stored = await store.read_body(message.id)
                assert stored is not None
                whole = stored[stored.index(b"Subject: crash ") :]
                assert hashlib.sha256(whole).digest() in attempted, f"{message.id} is half-written"
        finally:
            await store.aclose()

    asyncio.run(check())
