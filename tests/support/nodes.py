"""Several `postroom serve` nodes on one PostgreSQL database, as real processes, and the
load that goes through them.

Every node reads the same configuration (``shared``: the database, the mailers and
routes, the limits); per node only what must differ on one machine: its listeners'
ports (ephemeral here), its data directory and its host name (its name in greetings,
EHLO and Received: lines, so a delivery tells which node made it).

``Load`` submits numbered messages over SMTP (several smtplib connections) and the HTTP
API from threads, each recipient address unique (``r<n>x<k>@remote.test``), and keeps
what each node answered: the messages acknowledged (250, 202) by Message-ID (``<n@load.test>``
over SMTP, the one the API answers) with their recipients, and every other answer by
code ("451 4.3.0", "503"; "disconnected", "timeout" when a server stopped answering).
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import re
import signal
import smtplib
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.servers import RunningProcess, start_process, write_config

__all__ = ["Load", "Node", "shared_config", "start_nodes"]

SENDER = "app@example.test"
_QUEUED = re.compile(r"queued as ([0-9A-Z]+)")


def shared_config(
    database: str, sink_port: int, *, lease: float = 60.0, database_timeout: float | None = None
) -> tuple[str, str]:
    """(top-level keys, tables) of the one configuration every node reads: the database,
    mail for everyone relayed to the sink on ``sink_port``, loopback clients may relay;
    ``delivery.lease`` and ``database.timeout`` (None: the default)."""
    top = f'storage = "{database}"\nrelay_networks = ["127.0.0.0/8"]\n'
    timeout = "" if database_timeout is None else f"[database]\ntimeout = {database_timeout}\n"
    tables = (
        timeout + "[api]\nport = 0\nrate_limit = 0\n"
        f"[delivery]\nlease = {lease}\n"
        "[inbound_auth]\nenabled = false\n"
        "[limits]\nmax_connections_per_ip = 200\n"
        f'[[mailers]]\nname = "sink"\ntype = "smtp"\nhost = "127.0.0.1"\nport = {sink_port}\n'
        'tls = "none"\ntimeout = 10\n'
        '[[routes]]\nname = "everything"\nmailers = ["sink"]\n'
    )
    return top, tables


@dataclass
class Node:
    name: str  # also its host name: <name>.mail.test
    config: Path
    process: RunningProcess

    @property
    def smtp_port(self) -> int:
        return self.process.ports["mx"]

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.process.api_port}"

    @property
    def helo(self) -> str:
        return f"{self.name}.mail.test"

    def kill(self) -> None:
        self.process.kill()

    def stop(self) -> None:
        if self.process.process.poll() is None:
            self.process.signal(signal.SIGTERM)
            self.process.wait(60)


def start_nodes(root: Path, count: int, top: str, tables: str) -> list[Node]:
    """``count`` nodes, started together, each ready (its ready line) when this returns."""

    def start(index: int) -> Node:
        name = f"node{index + 1}"
        home = root / name
        home.mkdir(parents=True)
        config = write_config(
            home / "postroom.toml", home / "data", tables, top=top, hostname=f"{name}.mail.test"
        )
        return Node(name, config, start_process(config, home / "postroom.log", timeout=60))

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(start, range(count)))


def message(number: int, recipients: Sequence[str]) -> bytes:
    return (
        f"From: {SENDER}\r\nTo: {', '.join(recipients)}\r\nSubject: load {number}\r\n"
        f"Message-ID: <{number}@load.test>\r\n\r\nmessage {number}\r\n"
    ).encode()


@dataclass
class Load:
    """Numbered messages of 1 to 3 recipients through the nodes, from threads."""

    total: int | None = None  # stop after this many submissions (None: until stop())
    acked: dict[str, tuple[str, ...]] = field(default_factory=dict)  # Message-ID -> rcpts
    answers: Counter[str] = field(default_factory=Counter)  # "451 4.3.0", "503", "timeout"
    first_ack_after: dict[str, float] = field(default_factory=dict)  # door -> monotonic
    slowest: float = 0.0  # seconds: the longest a submission waited for its answer
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _mark: float = 0.0

    def _take(self) -> int | None:
        if self._stop.is_set():
            return None
        with self._lock:
            number = next(self._numbers)
        return number if self.total is None or number <= self.total else None

    def _recipients(self, number: int) -> tuple[str, ...]:
        return tuple(f"r{number}x{k}@remote.test" for k in range(1 + number % 3))

    def _ack(self, door: str, message_id: str, recipients: tuple[str, ...]) -> None:
        with self._lock:
            self.acked[message_id] = recipients
            self.answers["ok"] += 1
            if self._mark and door not in self.first_ack_after:
                self.first_ack_after[door] = time.monotonic()

    def _answer(self, what: str) -> None:
        with self._lock:
            self.answers[what] += 1

    def _timed(self, submit: Callable[[], None]) -> None:
        started = time.monotonic()
        try:
            submit()
        finally:
            took = time.monotonic() - started
            with self._lock:
                self.slowest = max(self.slowest, took)

    def mark(self) -> None:
        """From now on, note the first acknowledgement of each door (recovery)."""
        with self._lock:
            self._mark = time.monotonic()
            self.first_ack_after.clear()

    # -- SMTP ----------------------------------------------------------------------------
    def smtp(self, nodes: Sequence[Node], connections: int) -> None:
        """``connections`` threads, spread over the nodes; a thread whose node stops
        answering moves on to the next node."""
        for index in range(connections):
            ports = [nodes[(index + k) % len(nodes)].smtp_port for k in range(len(nodes))]
            self._spawn([functools.partial(self._smtp_session, port) for port in ports])

    def _smtp_session(self, port: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
            client.ehlo("load.test")
            while (number := self._take()) is not None:
                self._timed(functools.partial(self._smtp_one, client, number, f"smtp:{port}"))

    def _smtp_one(self, client: smtplib.SMTP, number: int, door: str) -> None:
        recipients = self._recipients(number)
        code, text = client.mail(SENDER)
        if code == 250:
            for rcpt in recipients:
                code, text = client.rcpt(rcpt)
                if code != 250:
                    break
        if code == 250:
            code, text = client.data(message(number, recipients))
        if code == 250 and _QUEUED.search(text.decode()):
            self._ack(door, f"<{number}@load.test>", recipients)
            return
        self._answer(f"{code} {text.decode().split(' ', 1)[0]}")
        client.rset()
        time.sleep(0.05)  # a client waits after a 4xx (a real one: minutes)

    # -- the HTTP API --------------------------------------------------------------------
    def api(self, nodes: Sequence[Node], token: str, clients: int) -> None:
        for index in range(clients):
            urls = [nodes[(index + k) % len(nodes)].api_url for k in range(len(nodes))]
            self._spawn([functools.partial(self._api_session, url, token) for url in urls])

    def _api_session(self, url: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=20) as client:
            while (number := self._take()) is not None:
                self._timed(functools.partial(self._api_one, client, number, f"api:{url}"))

    def _api_one(self, client: httpx.Client, number: int, door: str) -> None:
        recipients = self._recipients(number)
        answer = client.post(
            "/api/v1/messages",
            json={
                "from": SENDER,
                "to": list(recipients),
                "subject": f"load {number}",
                "text": f"message {number}",
            },
        )
        if answer.status_code == 202:
            self._ack(door, answer.json()["message_id"], recipients)
            return
        kind = answer.headers.get("content-type", "")
        self._answer(f"{answer.status_code}{'' if kind.startswith('application/') else ' !'}")
        time.sleep(0.05)

    # -- life ------------------------------------------------------------------------------
    def _spawn(self, sessions: list[Callable[[], None]]) -> None:
        """A thread that runs the first session (a client that sends until there is no
        more to send) and, whenever one's server stops answering, the next."""
        thread = threading.Thread(target=self._sender, args=(sessions,), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _sender(self, sessions: list[Callable[[], None]]) -> None:
        for session in itertools.cycle(sessions):
            try:
                session()
                return
            except (OSError, smtplib.SMTPException, httpx.TransportError) as exc:
                timeout = isinstance(exc, socket.timeout | httpx.TimeoutException)
                self._answer("timeout" if timeout else "disconnected")
                if self._stop.is_set():
                    return
                time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def join(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "a sender hangs"
