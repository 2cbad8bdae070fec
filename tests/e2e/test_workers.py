"""``workers = 2``: a real `postroom serve` with two accept workers sharing its listeners.

A worker's own work is shown by stopping the primary (SIGSTOP): a client still gets its
greeting, so a worker took the connection; its message is committed by the primary's
writer (the shared writer), so it gets its 250 once the primary runs again (SIGCONT), and
the primary delivers it, woken through the wake-up socket rather than by its periodic check.
The workers are the primary's children: forked from it at its start, each started again
as a fresh interpreter (``python -m postroom.workerentry``) when it dies. The primary takes
SMTP only while no worker is up.
"""

from __future__ import annotations

import contextlib
import json
import mailbox
import os
import shutil
import signal
import smtplib
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

from tests.support.forking import open_fd_targets
from tests.support.processes import children, clients_taken_by, clients_taken_while_stopped
from tests.support.servers import (
    RunningProcess,
    free_port,
    port_is_open,
    smtp_client,
    start_process,
    wait_for,
    write_config,
)
from tests.support.servers import cli_out as cli

MESSAGE = b"From: a@remote.test\r\nTo: app@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


def workers_of(primary: int) -> list[int]:
    """The two accept workers of ``primary``: its children."""
    workers = children(primary)
    assert len(workers) == 2, workers
    return workers


def restarted(server: RunningProcess, worker: int) -> int:
    """The worker started in place of ``worker`` once it exited: a fresh interpreter;
    returns once it listens (its primary logs it started)."""
    primary = server.process.pid
    others = set(children(primary)) - {worker}
    wait_for(lambda: len(set(children(primary)) - others - {worker}) == 1, within=10)
    (replacement,) = set(children(primary)) - others - {worker}
    command = Path(f"/proc/{replacement}/cmdline").read_bytes().split(b"\0")
    assert command[1:3] == [b"-m", b"postroom.workerentry"]
    wait_for(lambda: f"started (pid {replacement})" in server.log.read_text(), within=30)
    return replacement


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


def workers_clients(
    primary: int, port: int, count: int = 1
) -> contextlib.AbstractContextManager[list[smtplib.SMTP]]:
    """``count`` connections taken while the primary is stopped, so by a worker."""
    return clients_taken_while_stopped(primary, port, count)


def delivered(home: Path) -> int:
    box = home / "data" / "mail" / "example.test" / "app" / "Maildir"
    return len(mailbox.Maildir(box, create=False)) if box.exists() else 0


def test_a_worker_listens_before_the_ready_line_and_is_restarted_when_killed(
    home: Path,
) -> None:
    server, _ = start(home)  # returns once the ready line is in the log
    primary = server.process.pid
    try:
        worker, other = workers_of(primary)
        before_ready = server.log.read_text().split(" ready: ")[0]
        assert before_ready.count(f"listening on 127.0.0.1:{server.ports['mx']}") == 3
        for pid in (worker, other):
            assert f"started (pid {pid})" in before_ready
        assert "; 3 processes (2 accept workers)" in server.log.read_text()

        # At once after the ready line, with the primary stopped: a worker answers.
        with workers_clients(primary, server.ports["mx"]) as (client,):
            assert client.sendmail("a@remote.test", ["app@example.test"], MESSAGE) == {}
        # The periodic queue check is a minute away: the wake-up socket did this.
        wait_for(lambda: delivered(home) == 1, within=10)

        os.kill(worker, signal.SIGKILL)
        replacement = restarted(server, worker)
        # The fresh interpreter serves on its own too (the others stopped).
        with clients_taken_by(replacement, primary, server.ports["mx"]) as (client,):
            assert client.sendmail("a@remote.test", ["app@example.test"], MESSAGE) == {}
        with ThreadPoolExecutor(8) as pool:
            refused = list(pool.map(lambda _: send(server.ports["mx"]), range(40)))
        assert refused == [{}] * 40
        wait_for(lambda: delivered(home) == 42)
        assert f"(pid {worker}) exited with -9" in server.log.read_text()

        server.signal(signal.SIGTERM)
        assert server.wait() == 0
        wait_for(lambda: not alive(replacement) and not alive(other), within=5)
    finally:
        if server.process.poll() is None:
            server.kill()


def test_a_worker_stops_when_its_primary_is_killed(home: Path) -> None:
    server, config = start(home)
    primary = server.process.pid
    workers = workers_of(primary)
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: send(server.ports["mx"]), range(20))) == [{}] * 20
    server.kill()  # SIGKILL: no chance to stop its workers
    wait_for(lambda: not any(map(alive, workers)), within=10)
    # Everything that got its 250 is in the store, whichever process took it.
    assert len(json.loads(cli(config, "queue", "list", "--json"))) == 20


def test_a_workers_message_in_flight_when_the_primary_is_killed_gets_451_and_is_not_stored(
    home: Path,
) -> None:
    """The worker's message waits for the primary's writer; SIGKILL of the primary then
    must not turn into a 250: the client gets 451 4.3.0, nothing is stored, and the
    worker exits with its primary (its supervision)."""
    server, config = start(home)
    primary = server.process.pid
    worker, _ = workers_of(primary)
    port = server.ports["mx"]
    writes = home / "data" / "write.sock"
    try:
        with (
            clients_taken_by(worker, primary, port, 2) as (first, client),
            ThreadPoolExecutor(1) as pool,
        ):
            stored = first.sendmail("a@remote.test", ["app@example.test"], MESSAGE)
            assert stored == {}  # and the worker's connection to the writer is open now
            os.kill(primary, signal.SIGSTOP)
            answer = pool.submit(client.sendmail, "a@remote.test", ["app@example.test"], MESSAGE)
            wait_for(lambda: _bytes_waiting(writes) > 0)  # the request is at the primary
            server.kill()  # SIGKILL, while it is stopped: it never reads the request
            with pytest.raises(smtplib.SMTPDataError) as refused:
                answer.result(timeout=30)
        assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (451, b"4.3.0")
        wait_for(lambda: not alive(worker), within=10)
    finally:
        if server.process.poll() is None:
            server.kill()
    assert "went away before it answered: 1 write(s) failed" in server.log.read_text()
    assert len(json.loads(cli(config, "queue", "list", "--json"))) == 1  # the first only


def test_a_worker_draining_at_stop_still_commits_through_the_primarys_writer(
    home: Path,
) -> None:
    """At SIGTERM the primary stops listening at once, but keeps its writer for the
    worker, whose open session may still send a message while it drains."""
    server, config = start(home)
    primary = server.process.pid
    try:
        with workers_clients(primary, server.ports["mx"]) as (client,):
            assert client.mail("a@remote.test")[0] == 250
            assert client.rcpt("app@example.test")[0] == 250
            server.signal(signal.SIGTERM)
            # The primary's own stop is under way (its API goes first); it waits for
            # the worker with its writer open.
            api = server.api_port
            assert api is not None
            wait_for(lambda: not port_is_open(api))
            assert client.data(MESSAGE)[0] == 250
        assert server.wait() == 0
    finally:
        if server.process.poll() is None:
            server.kill()
    assert len(json.loads(cli(config, "queue", "list", "--json"))) == 1


def _bytes_waiting(path: Path) -> int:
    """Bytes queued unread on the accepted connections of the Unix socket at ``path``."""
    listed = subprocess.run(
        ["ss", "-xnH", "state", "established", "src", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(int(line.split()[1]) for line in listed.splitlines() if line.strip())


def test_new_connections_go_to_the_worker_holding_fewer(home: Path) -> None:
    """Ten sessions one worker took while the other was stopped stay with it; the next
    ten, opened at once, go to the other until the two hold about as many, not to
    whichever process wakes first, which is what the event loop's own server does. The
    primary, its workers up, takes none."""
    server, _ = start(home)
    primary = server.process.pid
    port = server.ports["mx"]
    try:
        first, second = workers_of(primary)
        with (
            clients_taken_by(first, primary, port, 10),
            ThreadPoolExecutor(10) as pool,
            contextlib.ExitStack() as stack,
        ):
            assert (held_by(first, port), held_by(second, port)) == (10, 0)
            opened = list(
                pool.map(lambda _: smtplib.SMTP("127.0.0.1", port, timeout=10), range(10))
            )
            for client in opened:
                stack.callback(client.close)
            assert held_by(first, port) + held_by(second, port) == 20
            # 9 or 10 (the balance); each process taking its turn would give it about 5.
            assert held_by(second, port) >= 8
            assert held_by(primary, port) == 0
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
    finally:
        if server.process.poll() is None:
            server.kill()


def test_the_primary_takes_smtp_only_while_no_worker_is_up(home: Path) -> None:
    """With its workers up the primary's loop is left to commits and deliveries: it takes
    no connection. Both workers stuck (stopped): within a second it greets new clients
    itself and their mail is accepted; once they run again it leaves new connections to
    them. Both killed: it accepts while they are started again."""
    server, _ = start(home)
    primary = server.process.pid
    port = server.ports["mx"]
    try:
        workers = workers_of(primary)
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(lambda _: send(port), range(20))) == [{}] * 20
        # Both stopped: the clients wait in the backlog until the primary sees no
        # worker's heartbeat, then it takes them.
        with clients_taken_while_stopped(workers, port, 2) as clients:
            assert held_by(primary, port) == 2
            for client in clients:
                assert client.sendmail("a@remote.test", ["app@example.test"], MESSAGE) == {}
        log = server.log.read_text
        leaving = f"an accept worker is up again: this process leaves 127.0.0.1:{port} "
        wait_for(lambda: leaving in log(), within=10)
        taking = f"no accept worker is up: this process accepts on 127.0.0.1:{port} "
        assert log().count(taking) == 1
        with ThreadPoolExecutor(4) as pool, contextlib.ExitStack() as stack:
            opened = list(pool.map(lambda _: smtplib.SMTP("127.0.0.1", port, timeout=10), range(8)))
            for client in opened:
                stack.callback(client.close)
                assert client.ehlo()[0] == 250
            assert held_by(primary, port) == 0
            assert sum(held_by(pid, port) for pid in workers) == 8
        # Killed, both: new mail is taken by the primary until they are back.
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: log().count(taking) == 2, within=10)
        assert send(port) == {}
        wait_for(lambda: len(children(primary)) == 2 and log().count(" started (pid ") >= 4)
        wait_for(lambda: delivered(home) == 23)  # every message taken, by any process
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
    finally:
        if server.process.poll() is None:
            server.kill()


def held_by(pid: int, port: int) -> int:
    """Established TCP connections on local ``port`` that process ``pid`` holds open."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                inodes.add(f"socket:[{fields[9]}]")
    return sum(1 for target in open_fd_targets(pid) if target in inodes)


def serve_with_a_taken_port(
    home: Path, extra: str, ports: dict[str, int], top: str, taken: socket.socket
) -> subprocess.CompletedProcess[str]:
    """`postroom serve` to its exit, while ``taken`` holds a port it wants."""
    try:
        config = write_config(home / "postroom.toml", home / "data", extra, ports=ports, top=top)
        return subprocess.run(
            [sys.executable, "-m", "postroom", "--config", str(config), "serve"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        taken.close()


def taken_port() -> socket.socket:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    return taken


def test_a_taken_port_fails_before_any_worker_starts(home: Path) -> None:
    taken = taken_port()
    port = taken.getsockname()[1]
    done = serve_with_a_taken_port(home, "", {"mx": port}, "workers = 2\n", taken)
    assert done.returncode == 1
    assert done.stderr.startswith(
        "postroom: cannot listen: error while attempting to bind on address"
        f" ('127.0.0.1', {port}): address already in use"
    )
    assert "Traceback" not in done.stderr


def test_a_primary_that_cannot_start_leaves_no_forked_worker_behind(home: Path) -> None:
    """The workers are forked before the primary's start, which here fails (its API port
    is taken): each exits with it, and nothing holds the SMTP port any more."""
    taken = taken_port()
    smtp_port = free_port()
    api = f"[api]\nport = {taken.getsockname()[1]}\n"
    done = serve_with_a_taken_port(home, api, {"mx": smtp_port}, "workers = 3\n", taken)
    assert done.returncode == 1
    assert done.stderr.startswith("postroom: cannot listen:")
    # A worker left waiting would still hold the listening socket.
    wait_for(lambda: not port_is_open(smtp_port), within=5)


def test_metrics_count_what_every_worker_accepted_and_delivered(home: Path) -> None:
    """Mail taken by a worker alone (the others stopped), by the other, and by the
    primary alone (both workers stopped), each delivered by the process that took it
    (local mail): /metrics, served by the primary, counts all, accepted and delivered."""
    server, _ = start(home)
    primary = server.process.pid
    port = server.ports["mx"]
    try:
        first, second = workers_of(primary)
        for taker, count in ((first, 2), (second, 1), (primary, 2)):
            with clients_taken_by(taker, primary, port, count) as clients:
                for client in clients:
                    assert client.sendmail("a@remote.test", ["app@example.test"], MESSAGE) == {}
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


# Written into a directory on PYTHONPATH, so that every process of the server (the
# primary and each worker, forked or started afresh) lists the modules it had when it was forked
# (PID.fork.txt) and when it exits (PID.txt).
_LIST_MODULES = """\
import atexit, os, sys

def _list_modules(suffix="txt"):
    path = os.path.join(os.environ["POSTROOM_TEST_MODULES"], f"{os.getpid()}.{suffix}")
    with open(path, "w") as out:
        out.write("\\n".join(sorted(sys.modules)))

atexit.register(_list_modules)
os.register_at_fork(after_in_child=lambda: _list_modules("fork.txt"))
"""
# What only the primary runs: the scheduler and its mailers, the HTTP API and dashboard and
# their libraries, POP3 and IMAP, alerts. An accept worker that loads them pays their
# memory once more for nothing. (The command line is the primary's before it forks the
# workers: a forked worker has it, in pages it shares and never writes.)
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
)
# What the primary itself loads only at first use, none of which happens in the test
# below (no alert, webhook or provider mailer is configured; no page of the dashboard is
# asked, /metrics is never scraped): each costs the primary memory for nothing until then.
_PRIMARY_AT_FIRST_USE = (
    "httpx",  # and with it the command-line tools httpx loads (rich, pygments)
    "rich",
    "pygments",
    "postroom.delivery.mailers.api.http",
    "postroom.dashboard.app",
    "jinja2",
    "prometheus_client",
    "postroom.events.exposition",
)


# A relay every message is routed to, which refuses connections: the worker relays at
# once (delivery.relay_at_once), and settles the deferral itself.
_RELAYED = (
    '[[mailers]]\nname = "relay"\ntype = "smtp"\nhost = "127.0.0.1"\nport = 1\ntls = "none"\n'
    '[[routes]]\nname = "all"\nmailers = ["relay"]\n'
)


@pytest.mark.parametrize("mailers", ["", _RELAYED], ids=["local", "relay"])
def test_a_worker_loads_only_the_accept_path_and_the_primary_no_optional_part_before_its_use(
    home: Path, monkeypatch: pytest.MonkeyPatch, mailers: str
) -> None:
    hook = home / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_LIST_MODULES)
    listed = home / "modules"
    listed.mkdir()
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.setenv("POSTROOM_TEST_MODULES", str(listed))
    server, config = start(home, extra=f"[inbound_auth]\nenabled = false\n{mailers}")
    primary = server.process.pid
    try:
        worker, _ = workers_of(primary)
        # The worker takes this message: its whole path.
        with clients_taken_by(worker, primary, server.ports["mx"]) as (client,):
            assert client.sendmail("a@remote.test", ["app@example.test"], MESSAGE) == {}
        if mailers:  # its attempt, made and settled by the worker, is in the log
            wait_for(lambda: '"deferred"' in cli(config, "log", "--json"), within=10)
        os.kill(worker, signal.SIGTERM)  # it drains and exits, listing its modules
        wait_for((listed / f"{worker}.txt").exists, within=10)
        # Started again, as a fresh interpreter, which takes the next message.
        replacement = restarted(server, worker)
        with clients_taken_by(replacement, primary, server.ports["mx"]) as (client,):
            assert client.sendmail("a@remote.test", ["app@example.test"], MESSAGE) == {}
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
        wait_for((listed / f"{replacement}.txt").exists, within=10)
    finally:
        if server.process.poll() is None:
            server.kill()

    def loaded(pid: int, when: str = "txt") -> set[str]:
        return set((listed / f"{pid}.{when}").read_text().split())

    def primary_only(modules: set[str]) -> list[str]:
        return sorted(m for m in modules for p in _PRIMARY_ONLY if m == p or m.startswith(p + "."))

    in_worker = loaded(worker)
    accept_path = {"postroom.smtp.server", "postroom.intake", "postroom.store.sqlite.store"}
    if mailers:  # it relayed its message at once: the SMTP client, loaded before the fork
        accept_path |= {"postroom.delivery.mailers.mta.relay", "postroom.delivery.settle"}
    assert accept_path <= in_worker
    assert primary_only(in_worker) == []
    # The fresh interpreter imports the accept path alone, as the forked one has it.
    in_replacement = loaded(replacement)
    assert accept_path <= in_replacement
    assert primary_only(in_replacement) == []
    assert sorted(m for m in _PRIMARY_AT_FIRST_USE if m in in_replacement) == []
    # Every module of postroom and its libraries that it runs was imported before the
    # fork: pages it shares, not its own (a few small standard-library ones may follow).
    imported = in_worker - loaded(worker, "fork.txt")
    assert sorted(m for m in imported if m.split(".")[0] not in sys.stdlib_module_names) == []
    # The primary, which delivers and serves the API, does load them: the lists tell.
    in_primary = loaded(primary)
    assert {"postroom.delivery.scheduler", "starlette", "postroom.api"} <= in_primary
    assert {"postroom.dashboard", "postroom.events.metrics"} <= in_primary  # mounted, counting
    assert sorted(m for m in _PRIMARY_AT_FIRST_USE if m in in_primary) == []
    # The certificate was made and checked in a child of its own: cryptography, whose
    # Rust module maps about 7 MiB at its import, is in none of the server's processes.
    assert [pid for pid in (primary, worker, replacement) if "cryptography" in loaded(pid)] == []
