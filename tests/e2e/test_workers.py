"""``workers = 2``: a real `postroom serve` with an accept worker sharing its listeners.

The worker's own work is shown by stopping the primary (SIGSTOP): a client still gets its
250, so the worker accepted and committed the message itself; after SIGCONT the primary
delivers it, woken through the wake-up socket rather than by its periodic check.
"""

from __future__ import annotations

import json
import mailbox
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import RunningProcess, smtp_client, start_process, wait_for, write_config
from tests.support.servers import cli_out as cli

MESSAGE = b"From: a@remote.test\r\nTo: app@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


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


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def home() -> Iterator[Path]:
    # The wake-up socket's path must fit a socket address (about 108 bytes).
    path = Path(tempfile.mkdtemp(prefix="pr-w-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start(home: Path, workers: int = 2, extra: str = "") -> tuple[RunningProcess, Path]:
    config = write_config(
        home / "postroom.toml", home / "data", extra, top=f"workers = {workers}\n"
    )
    cli(config, "domain", "add", "example.test")
    cli(config, "user", "add", "app@example.test", "--password-stdin", stdin="pw\n")
    return start_process(config, home / "postroom.log"), config


def send(port: int) -> dict[str, tuple[int, bytes]]:
    with smtp_client(port) as client:
        return client.sendmail("a@remote.test", ["app@example.test"], MESSAGE)


def delivered(home: Path) -> int:
    box = home / "data" / "mail" / "example.test" / "app" / "Maildir"
    return len(mailbox.Maildir(box, create=False)) if box.exists() else 0


def test_a_worker_accepts_on_its_own_and_is_restarted_when_it_dies(home: Path) -> None:
    server, _ = start(home)
    primary = server.process.pid
    try:
        wait_for(lambda: len(children(primary)) == 1)
        (worker,) = children(primary)

        os.kill(primary, signal.SIGSTOP)
        try:
            assert send(server.ports["mx"]) == {}  # only the worker can have answered
        finally:
            os.kill(primary, signal.SIGCONT)
        # The periodic queue check is a minute away: the wake-up socket did this.
        wait_for(lambda: delivered(home) == 1, within=10)

        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: any(pid != worker for pid in children(primary)))
        with ThreadPoolExecutor(8) as pool:
            refused = list(pool.map(lambda _: send(server.ports["mx"]), range(40)))
        assert refused == [{}] * 40
        wait_for(lambda: delivered(home) == 41)
        assert "worker 1 (pid" in server.log.read_text()

        (replacement,) = children(primary)
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
        wait_for(lambda: not alive(replacement), within=5)
    finally:
        if server.process.poll() is None:
            server.kill()


def test_a_worker_stops_when_its_primary_is_killed(home: Path) -> None:
    server, config = start(home)
    primary = server.process.pid
    wait_for(lambda: len(children(primary)) == 1)
    (worker,) = children(primary)
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: send(server.ports["mx"]), range(20))) == [{}] * 20
    server.kill()  # SIGKILL: no chance to stop its workers
    wait_for(lambda: not alive(worker), within=10)
    # Everything that got its 250 is in the store, whichever process took it.
    assert len(json.loads(cli(config, "queue", "list", "--json"))) == 20


def test_a_taken_port_fails_before_any_worker_starts(home: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        config = write_config(
            home / "postroom.toml", home / "data", ports={"mx": port}, top="workers = 2\n"
        )
        done = subprocess.run(
            [sys.executable, "-m", "postroom", "--config", str(config), "serve"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        taken.close()
    assert done.returncode == 1
    assert done.stderr.startswith(
        "postroom: cannot listen: error while attempting to bind on address"
        f" ('127.0.0.1', {port}): address already in use"
    )
    assert "Traceback" not in done.stderr


def test_metrics_count_what_every_worker_accepted_and_delivered(home: Path) -> None:
    """Mail taken by the worker alone (primary stopped) and by the primary alone (worker
    stopped), each delivered by the process that took it (local mail): /metrics, served
    by the primary, counts both, accepted and delivered."""
    server, _ = start(home)
    primary = server.process.pid
    try:
        wait_for(lambda: len(children(primary)) == 1)
        (worker,) = children(primary)
        for stopped, count in ((primary, 3), (worker, 2)):
            os.kill(stopped, signal.SIGSTOP)
            try:
                for _ in range(count):
                    assert send(server.ports["mx"]) == {}
            finally:
                os.kill(stopped, signal.SIGCONT)
        wait_for(lambda: delivered(home) == 5)
        answer = httpx.get(f"http://127.0.0.1:{server.api_port}/metrics", timeout=30)
        found = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text)
            for sample in family.samples
        }
        assert found[("postroom_messages_accepted_total", (("source", "smtp"),))] == 5
        queued = (("listener", "mx"), ("result", "queued"))
        assert found[("postroom_smtp_transactions_total", queued)] == 5
        attempts = {
            dict(labels)["mailer"]: value
            for (name, labels), value in found.items()
            if name == "postroom_delivery_attempts_total" and ("result", "delivered") in labels
        }
        assert sum(attempts.values()) == 5, attempts
        (mailer,) = attempts
        assert found[("postroom_delivery_attempt_seconds_count", (("mailer", mailer),))] == 5
        finished = (("mailer", mailer), ("status", "delivered"))
        assert found[("postroom_recipients_finished_total", finished)] == 5
        assert (
            "postroom_smtp_sessions",
            (("listener", f"mx 127.0.0.1:{server.ports['mx']}"),),
        ) in found
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
    finally:
        if server.process.poll() is None:
            server.kill()


# Written into a directory on PYTHONPATH, so that every interpreter of the server (the
# primary and each worker it starts) lists the modules it loaded when it exits.
_LIST_MODULES_AT_EXIT = """\
import atexit, os, sys

def _list_modules():
    path = os.path.join(os.environ["POSTROOM_TEST_MODULES"], f"{os.getpid()}.txt")
    with open(path, "w") as out:
        out.write("\\n".join(sorted(sys.modules)))

atexit.register(_list_modules)
"""
# What only the primary runs: the scheduler and its mailers, the HTTP API and dashboard and
# their libraries, POP3 and IMAP, alerts, the command line. An accept worker that loads
# them pays their memory once more for nothing.
_PRIMARY_ONLY = (
    # delivery, but for the local mail a worker delivers at once (delivery.direct)
    "postroom.delivery.scheduler",
    "postroom.delivery.mailers.build",
    "postroom.delivery.mailers.api",
    "postroom.delivery.mailers.mta.mx",
    "postroom.delivery.retention",
    "postroom.api",
    "postroom.dashboard",
    "postroom.imap",
    "postroom.pop3",
    "postroom.alerts",
    "postroom.events.dispatcher",
    "postroom.events.metrics",  # a worker counts (events.counts); the primary renders
    "prometheus_client",
    "starlette",
    "uvicorn",
    "httpx",
    "jinja2",
    "postroom.cli",  # the command line: a worker is started straight into the server
    "click",
)


def test_an_accept_worker_loads_no_delivery_api_or_mailbox_code(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = home / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_LIST_MODULES_AT_EXIT)
    listed = home / "modules"
    listed.mkdir()
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.setenv("POSTROOM_TEST_MODULES", str(listed))
    server, _ = start(home, extra="[inbound_auth]\nenabled = false\n")
    primary = server.process.pid
    try:
        wait_for(lambda: len(children(primary)) == 1)
        (worker,) = children(primary)
        os.kill(primary, signal.SIGSTOP)  # the worker takes this message: its whole path
        try:
            assert send(server.ports["mx"]) == {}
        finally:
            os.kill(primary, signal.SIGCONT)
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
        wait_for((listed / f"{worker}.txt").exists, within=10)
    finally:
        if server.process.poll() is None:
            server.kill()

    def loaded(pid: int) -> set[str]:
        return set((listed / f"{pid}.txt").read_text().split())

    def primary_only(modules: set[str]) -> list[str]:
        return sorted(m for m in modules for p in _PRIMARY_ONLY if m == p or m.startswith(p + "."))

    in_worker = loaded(worker)
    assert {"postroom.smtp.server", "postroom.intake", "postroom.store.sqlite.store"} <= in_worker
    assert primary_only(in_worker) == []
    # The primary, which delivers and serves the API, does load them: the lists tell.
    assert {"postroom.delivery.scheduler", "starlette", "postroom.api"} <= loaded(primary)
