"""A server's processes from outside: its children (the accept workers), connections
taken by the one that is not stopped (SIGSTOP) while they are made, and all of them
killed at once amid a load."""

from __future__ import annotations

import contextlib
import os
import signal
import smtplib
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

from tests.support.servers import RunningProcess, smtp_client

__all__ = [
    "children",
    "clients_taken_by",
    "clients_taken_while_stopped",
    "descendants",
    "kill_all_amid_load",
    "one_per_connection",
]


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


@contextlib.contextmanager
def clients_taken_while_stopped(
    stopped: int | Collection[int], port: int, count: int = 1
) -> Iterator[list[smtplib.SMTP]]:
    """``count`` connections taken while process(es) ``stopped`` are stopped, so by
    another process sharing the listener (each greeted and EHLO answered); ``stopped``
    run again before they are used."""
    pids = [stopped] if isinstance(stopped, int) else list(stopped)
    with contextlib.ExitStack() as stack:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            clients = [stack.enter_context(smtp_client(port)) for _ in range(count)]
            for client in clients:
                assert client.ehlo()[0] == 250  # only another process can have answered
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        yield clients


def clients_taken_by(
    taker: int, primary: int, port: int, count: int = 1
) -> contextlib.AbstractContextManager[list[smtplib.SMTP]]:
    """``count`` connections taken by process ``taker`` of the server whose primary is
    ``primary`` (the primary or one of its accept workers): every other one is stopped
    while they are made. (The primary takes SMTP once it sees no worker up, within a
    second.)"""
    others = [pid for pid in (primary, *children(primary)) if pid != taker]
    return clients_taken_while_stopped(others, port, count)


def descendants(pid: int) -> list[int]:
    """Its children, theirs, and so on (the workers it forked or started)."""
    return [each for child in children(pid) for each in (child, *descendants(child))]


Sender = Callable[[int, set[str], threading.Event], None]


def one_per_connection(port: int, submit: Callable[[smtplib.SMTP, str], None]) -> Sender:
    """A sender for ``kill_all_amid_load``: one message per connection, as applications
    and MX peers send, each ``submit(client, token)`` (raising unless it got its 250)."""

    def send(number: int, acked: set[str], stop: threading.Event) -> None:
        n = 0
        while not stop.is_set():
            token = f"{number}-{n}"
            n += 1
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                    submit(client, token)
                    acked.add(token)
            except (OSError, smtplib.SMTPException):
                if not stop.is_set():
                    time.sleep(0.05)  # the server is gone; the test stops us soon

    return send


def kill_all_amid_load(
    server: RunningProcess, send: Sender, *, senders: int, target: int, within: float = 60.0
) -> set[str]:
    """Load from ``senders`` threads (``send(number, acked, stop)`` adds the token of
    each message that got its 250 to ``acked`` until ``stop``) until ``target`` are
    acknowledged, then SIGKILL the server and every process it started, all at once:
    deliveries are in flight in each. The tokens acknowledged."""
    acked: set[str] = set()
    stop = threading.Event()
    threads = [threading.Thread(target=send, args=(n, acked, stop)) for n in range(senders)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + within
        while len(acked) < target and time.monotonic() < deadline:
            time.sleep(0.002)
        for pid in [*descendants(server.process.pid), server.process.pid]:
            os.kill(pid, signal.SIGKILL)
        server.process.wait()
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    return acked
