"""A server's processes from outside: its children (the accept workers), and connections
taken by the one that is not stopped (SIGSTOP) while they are made."""

from __future__ import annotations

import contextlib
import os
import signal
import smtplib
from collections.abc import Iterator
from pathlib import Path

from tests.support.servers import smtp_client

__all__ = ["children", "clients_taken_while_stopped"]


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
    stopped: int, port: int, count: int = 1
) -> Iterator[list[smtplib.SMTP]]:
    """``count`` connections taken while process ``stopped`` is stopped, so by another
    process sharing the listener (each greeted and EHLO answered); ``stopped`` runs
    again before they are used."""
    with contextlib.ExitStack() as stack:
        os.kill(stopped, signal.SIGSTOP)
        try:
            clients = [stack.enter_context(smtp_client(port)) for _ in range(count)]
            for client in clients:
                assert client.ehlo()[0] == 250  # only another process can have answered
        finally:
            os.kill(stopped, signal.SIGCONT)
        yield clients
