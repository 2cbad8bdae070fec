"""``postroom status``: a running in-process server answers over its control socket (pid,
uptime, listeners, failing parts, faults), the store gives the queue, the mailers and the
latest failures, and the exit code says running and ready (0), failing (1) or not
running (3)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from postroom.cli import main
from postroom.cli import status as status_module
from postroom.cli.render import format_size
from postroom.store import RecipientStatus, Store, open_store
from tests.conftest import FakeClock
from tests.store.factories import attempt, deferred, final, new_message, to
from tests.support.servers import write_config
from tests.support.thread import ServerThread

RELAY = (
    '[[mailers]]\nname = "relay"\ntype = "smtp"\nhost = "127.0.0.1"\nport = 9\ntls = "none"\n'
    '[[routes]]\nname = "all"\nmailers = ["relay"]\n'
)
MakeServer = Callable[..., ServerThread]


def status(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), "status", *args])


def status_json(config: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = status(config, "--json", *args)
    return result.exit_code, json.loads(result.stdout)


async def seed(store: Store, now: float) -> tuple[str, str]:
    """A deferred message with a failed attempt through relay, and a held one."""
    waiting = new_message(at=now - 90, recipients=to("a@remote.test", "b@remote.test"))
    held = new_message(at=now - 30, recipients=to("c@remote.test"))
    await store.enqueue(waiting)
    await store.enqueue(held)
    await store.record_outcomes(
        waiting.id,
        [deferred("a@remote.test", now + 300), final("b@remote.test", RecipientStatus.BOUNCED)],
        [
            attempt(waiting.id, "a@remote.test", now - 60, "deferred", mailer="relay",
                    code=451, text="4.4.1 Connection refused by 127.0.0.1:9"),
            attempt(waiting.id, "b@remote.test", now - 50, "bounced", mailer="relay",
                    code=550, text="5.1.1 no such user"),
        ],
    )  # fmt: skip
    assert await store.hold(held.id)
    return waiting.id, held.id


def test_status_of_a_running_server_with_its_queue_mailers_failures_and_faults(
    make_server: MakeServer, tmp_path: Path
) -> None:
    clock = FakeClock()
    srv = make_server(clock=clock, data_dir=tmp_path / "data")
    config = write_config(tmp_path / "postroom.toml", srv.data_dir, RELAY)
    waiting, _ = srv.call(seed(srv.store, clock.time()))
    srv.server.readiness.fail("retention", "OSError: disk hiccup")  # failed, then recovered
    srv.server.readiness.ok("retention")
    clock.advance(3725)

    code, report = status_json(config)

    assert code == 0
    assert (report["running"], report["ready"], report["problem"]) == (True, True, None)
    server = report["server"]
    assert server["pid"] == os.getpid()
    assert server["uptime_seconds"] == 3725
    assert server["data_dir"] == str(srv.data_dir)
    assert [(lst["role"], lst["port"], lst["tls"]) for lst in server["listeners"]] == [
        ("mx", srv.ports["mx"], "starttls"),
        ("submission", srv.ports["submission"], "starttls"),
        ("submissions", srv.ports["submissions"], "implicit"),
    ]
    assert server["api"] == {"address": "127.0.0.1", "port": srv.api_port}
    assert report["failing"] == []
    assert report["delivery"] == {"paused": False, "in_flight": 0}
    queue = report["queue"]
    assert (queue["queued"], queue["deferred"], queue["held"], queue["messages"]) == (0, 1, 1, 2)
    assert queue["oldest"]["id"] == waiting
    [relay] = [m for m in report["mailers"] if m["name"] == "relay"]
    assert relay["last_error"] == "5.1.1 no such user" and relay["last_success_at"] is None
    assert [(f["recipient"], f["reply"]["code"]) for f in report["recent_failures"]] == [
        ("b@remote.test", 550),
        ("a@remote.test", 451),
    ]
    assert [(f["part"], f["reason"]) for f in report["faults"]] == [
        ("retention", "OSError: disk hiccup")
    ]
    assert report["warnings"] == ["1 recipient waits in held messages (postroom queue release)"]

    text = status(config)
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    assert lines[0] == f"postroom {server['version']}: running (pid {os.getpid()}, up 1h 2m), ready"
    assert f"127.0.0.1:{srv.ports['submissions']} submissions (TLS)" in text.stdout
    assert f"0 queued, 1 deferred, 1 held in 2 messages; oldest {waiting}" in text.stdout
    assert "warning: 1 recipient waits in held messages" in text.stdout
    assert "4.4.1 Connection refused by 127.0.0.1:9" in text.stdout
    assert "OSError: disk hiccup" in text.stdout


def test_a_failing_part_and_paused_delivery_exit_1(make_server: MakeServer, tmp_path: Path) -> None:
    srv = make_server(data_dir=tmp_path / "data", delivery={"paused": True})
    config = write_config(tmp_path / "postroom.toml", srv.data_dir)
    srv.server.readiness.fail("scheduler", "StoreFull: storage is full")

    code, report = status_json(config)

    assert code == 1
    assert (report["running"], report["ready"]) == (True, False)
    [failing] = report["failing"]
    assert (failing["part"], failing["failures"]) == ("scheduler", 1)
    assert report["delivery"]["paused"] is True
    text = status(config)
    assert text.exit_code == 1
    assert "not ready" in text.stdout.splitlines()[0]
    assert "failing: scheduler (1 times since " in text.stdout
    assert "StoreFull: storage is full" in text.stdout
    assert "warning: delivery is paused (delivery.paused)" in text.stdout


async def _seeded_store(data_dir: Path) -> None:
    store = await open_store(f"sqlite:///{data_dir / 'postroom.db'}")
    try:
        await seed(store, 1_800_000_000.0)
    finally:
        await store.aclose()


def test_no_server_exits_3_and_still_shows_the_queue_and_the_disk(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config = write_config(tmp_path / "postroom.toml", data_dir, RELAY)
    data_dir.mkdir()
    asyncio.run(_seeded_store(data_dir))

    code, report = status_json(config, "--min-free", "1PB")  # more than any disk here

    assert code == 3
    assert (report["running"], report["ready"], report["server"]) == (False, False, None)
    assert report["problem"] == f"not running (no server answers at {data_dir}/control.sock)"
    assert report["queue"]["deferred"] == 1 and report["queue"]["held"] == 1
    disk = report["disk"]
    assert disk["low"] is True and disk["min_free_bytes"] == 10**15
    assert disk["free_bytes"] > 0 and disk["path"] == str(data_dir)
    # the warning names the free space as the report holds it, rounded as everywhere else
    assert report["warnings"][0].startswith(f"only {format_size(disk['free_bytes'])} free")
    assert "less than 1.0 PB" in report["warnings"][0]


def test_a_control_socket_left_by_a_killed_server_is_not_a_running_server(
    make_server: MakeServer, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(data_dir / "control.sock"))  # bound, never listening: as after SIGKILL
    left.close()
    config = write_config(tmp_path / "postroom.toml", data_dir)

    result = status(config)
    assert result.exit_code == 3
    assert "was left by a server that did not stop cleanly" in result.stdout.splitlines()[0]
    assert "warning: no store at sqlite:///" in result.stdout

    make_server(data_dir=data_dir)  # the next start replaces the socket file
    assert status(config).exit_code == 0


def test_a_server_that_accepts_but_does_not_answer_is_running_and_not_ready(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = write_config(tmp_path / "postroom.toml", data_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as hung:
        hung.bind(str(data_dir / "control.sock"))
        hung.listen()

        def close_unanswered() -> None:
            hung.accept()[0].close()

        closer = threading.Thread(target=close_unanswered)
        closer.start()
        code, report = status_json(config)
        closer.join(5)

    assert code == 1
    assert (report["running"], report["ready"], report["server"]) == (True, False, None)
    assert report["problem"].startswith(f"no answer from the server at {data_dir}/control.sock")


@pytest.mark.parametrize("size", ["lots", "-1"])
def test_a_bad_min_free_is_a_usage_error(tmp_path: Path, size: str) -> None:
    result = status(write_config(tmp_path / "postroom.toml", tmp_path / "data"), "--min-free", size)
    assert result.exit_code == 2
    assert "is not a size such as 500MB or 2GiB" in result.stderr


def test_mailbox_listeners_are_shown_under_their_own_protocols() -> None:
    def listener(port: int, role: str, tls: str) -> dict[str, object]:
        return {"address": "127.0.0.1", "port": port, "role": role, "tls": tls}

    report: dict[str, Any] = {
        "config": None,
        "server": {
            "listeners": [
                listener(2525, "mx", "starttls"),
                listener(2110, "pop3", "starttls"),
                listener(2995, "pop3s", "implicit"),
                listener(2143, "imap", "starttls"),
            ],
            "api": None,
            "workers": 1,
        },
        "delivery": {"paused": False, "in_flight": 0},
        "queue": None,
        "disk": {"free_bytes": 1024**3, "total_bytes": 2 * 1024**3, "path": "/srv"},
    }
    fields = dict(status_module._fields(report))
    assert fields["SMTP"] == "127.0.0.1:2525 mx (STARTTLS)"
    assert fields["POP3"] == "127.0.0.1:2110 pop3 (STLS), 127.0.0.1:2995 pop3s (TLS)"
    assert fields["IMAP"] == "127.0.0.1:2143 imap (STARTTLS)"
