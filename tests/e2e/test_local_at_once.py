"""kill -9 while local mail is being delivered by the processes that accepted it
(``workers = 2``): after a restart every acknowledged message is in the Maildir, and
a second copy exists only of a message whose delivery was not yet recorded when the
processes died (the window docs/architecture.md names, as Postfix has one)."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import smtplib
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from postroom.store import RecipientStatus, open_store
from tests.support.depth import examples
from tests.support.servers import RunningProcess, run_cli, start_process, wait_for, write_config

SUBJECT = re.compile(rb"^Subject: at-once (\S+)$", re.MULTILINE)
RECIPIENT = "rcpt@example.test"


def send(port: int, worker: int, acked: set[str], stop: threading.Event) -> None:
    """One message per connection, as applications and MX peers send; ``acked``: the
    token of every message that got its 250."""
    n = 0
    while not stop.is_set():
        token = f"{worker}-{n}"
        n += 1
        body = f"Subject: at-once {token}\r\n\r\nhello {token}\r\n".encode()
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.sendmail("someone@remote.test", [RECIPIENT], body)  # raises unless 250
                acked.add(token)
        except (OSError, smtplib.SMTPException):
            if not stop.is_set():
                time.sleep(0.05)  # the server is gone; the test stops us soon


def descendants(pid: int) -> list[int]:
    """Its children, theirs, and so on (the workers it forked or started)."""
    found = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [each for child in found for each in (child, *descendants(child))]


def in_new(maildir: Path) -> Counter[str]:
    """How many copies of each token are in ``new/``."""
    copies: Counter[str] = Counter()
    for path in (maildir / "new").iterdir():
        match = SUBJECT.search(path.read_bytes())
        assert match is not None, path
        copies[match.group(1).decode()] += 1
    return copies


async def unsettled(db: Path) -> set[str]:
    """Tokens of the messages whose recipient is not yet recorded delivered."""
    store = await open_store(f"sqlite:///{db}")
    try:
        pending: set[str] = set()
        for message in await store.messages(limit=100_000):
            if message.recipients[0].status is not RecipientStatus.DELIVERED:
                data = await store.read_body(message.id)
                assert data is not None
                match = SUBJECT.search(data.replace(b"\r\n", b"\n"))
                assert match is not None
                pending.add(match.group(1).decode())
        return pending
    finally:
        await store.aclose()


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(examples(1)))  # each round kills at another moment
def test_kill_9_during_local_delivery_loses_nothing_and_repeats_only_the_unrecorded(
    tmp_path: Path, round_: int
) -> None:
    data = tmp_path / "data"
    # A short lease: the restarted server takes over what the dead one held within it.
    config = write_config(
        tmp_path / "postroom.toml", data, "[delivery]\nlease = 2.0\n", top="workers = 2\n"
    )
    for args in (("domain", "add", "example.test"), ("user", "add", RECIPIENT, "--password-stdin")):
        assert run_cli(config, *args, stdin="a long password\n").returncode == 0
    proc: RunningProcess = start_process(config, tmp_path / "postroom.log")
    acked: set[str] = set()
    stop = threading.Event()
    senders = [
        threading.Thread(target=send, args=(proc.ports["mx"], w, acked, stop)) for w in range(8)
    ]
    for sender in senders:
        sender.start()
    try:
        target = random.Random(round_).randint(40, 160)
        deadline = time.monotonic() + 60
        while len(acked) < target and time.monotonic() < deadline:
            time.sleep(0.002)
        pids = [*descendants(proc.process.pid), proc.process.pid]
        for pid in pids:  # every process at once: deliveries in flight in each
            os.kill(pid, signal.SIGKILL)
        proc.process.wait()
    finally:
        stop.set()
        for sender in senders:
            sender.join(15)
    assert len(acked) >= target
    maildir = data / "mail" / "example.test" / "rcpt" / "Maildir"
    not_recorded = asyncio.run(unsettled(data / "postroom.db"))

    restarted = start_process(config, tmp_path / "postroom.log")
    try:
        wait_for(lambda: set(acked) <= set(in_new(maildir)), within=60)
        wait_for(lambda: not asyncio.run(unsettled(data / "postroom.db")), within=60)
    finally:
        restarted.signal(signal.SIGTERM)
        restarted.wait()
    copies = in_new(maildir)
    assert set(acked) <= set(copies), "an acknowledged message is missing"
    repeated = {token for token, count in copies.items() if count > 1}
    assert max(copies.values()) <= 2
    assert repeated <= not_recorded, "a message recorded as delivered was delivered again"
