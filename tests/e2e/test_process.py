"""The real `postroom serve` process: CLI changes at run time, signals, swaks, the log."""

from __future__ import annotations

import json
import signal
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_smtp_session import Raw, queued_id
from tests.support.servers import (
    RunningProcess,
    client_context,
    port_is_open,
    smtp_client,
    start_process,
    write_config,
)
from tests.support.servers import run_cli as cli


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "postroom.toml", tmp_path / "data")


@pytest.fixture
def running(config: Path, tmp_path: Path) -> Iterator[RunningProcess]:
    proc = start_process(config, tmp_path / "postroom.log")
    yield proc
    if proc.process.poll() is None:
        proc.kill()


def test_users_and_domains_take_effect_without_restart(
    config: Path, running: RunningProcess
) -> None:
    with smtp_client(running.ports["mx"]) as client:
        client.ehlo("client.test")
        client.mail("a@elsewhere.test")
        assert client.rcpt("app@example.test")[0] == 550  # not a local domain yet: relay denied
    assert cli(config, "domain", "add", "example.test").returncode == 0
    added = cli(config, "user", "add", "app@example.test", "--password-stdin", stdin="pw-1234\n")
    assert added.returncode == 0, added.stderr
    with smtp_client(running.ports["mx"]) as client:
        client.ehlo("client.test")
        client.mail("a@elsewhere.test")
        assert client.rcpt("app@example.test")[0] == 250
        queue_id = queued_id(client.data(b"Subject: hi\r\n\r\nhi\r\n"))
    listed = cli(config, "queue", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert queue_id in listed.stdout
    shown = cli(config, "queue", "show", queue_id, "--json")
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["sender"] == "a@elsewhere.test"
    assert cli(config, "user", "remove", "app@example.test").returncode == 0
    with smtp_client(running.ports["mx"]) as client:
        client.ehlo("client.test")
        client.mail("a@elsewhere.test")
        assert client.rcpt("app@example.test")[0] == 550


def test_swaks_starttls_auth_submission(
    config: Path, running: RunningProcess, tmp_path: Path
) -> None:
    cli(config, "domain", "add", "example.test")
    cli(config, "user", "add", "app@example.test", "--password-stdin", stdin="pw-1234\n")
    result = subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{running.ports['submission']}",
            "--tls",
            "--tls-verify",
            "--tls-ca-path",
            str(tmp_path / "data" / "tls" / "cert.pem"),
            "--tls-sni",
            "localhost",
            "--auth",
            "PLAIN",
            "--auth-user",
            "app@example.test",
            "--auth-password",
            "pw-1234",
            "--from",
            "app@example.test",
            "--to",
            "friend@far-away.test",
            "--helo",
            "client.test",
            "--header",
            "Subject: swaks",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Ok: queued as" in result.stdout
    log_lines = [
        json.loads(line.split("postroom.mail: ", 1)[1])
        for line in running.log.read_text().splitlines()
        if "postroom.mail: " in line
    ]
    (entry,) = [e for e in log_lines if e.get("result") == "queued"]
    assert entry["auth_user"] == "app@example.test"
    assert entry["recipients"] == ["friend@far-away.test"]
    assert entry["tls"].startswith("TLSv1.")
    assert entry["client_ip"] == "127.0.0.1"
    assert entry["size"] > 0 and entry["queue_id"]


def test_sigterm_drains_transactions_and_refuses_new_commands(
    config: Path, running: RunningProcess
) -> None:
    cli(config, "domain", "add", "example.test")
    cli(config, "user", "add", "app@example.test", "--password-stdin", stdin="pw-1234\n")
    idle = Raw(running.ports["mx"])
    busy = Raw(running.ports["mx"])
    try:
        idle.command(b"EHLO idle.test")
        busy.command(b"EHLO busy.test")
        busy.command(b"MAIL FROM:<a@elsewhere.test>")
        busy.command(b"RCPT TO:<app@example.test>")
        assert busy.command(b"DATA")[0] == 354
        busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
        running.signal(signal.SIGTERM)
        code, lines = idle.reply()  # the idle session is told at once
        assert (code, lines[0][:5]) == (421, b"4.3.2")
        assert not port_is_open(running.ports["mx"])  # no longer accepting
        busy.send(b"second half\r\n.\r\n")
        code, lines = busy.reply()
        assert code == 250, lines  # the transaction in flight completes
        code, lines = busy.command(b"MAIL FROM:<a@elsewhere.test>")
        assert (code, lines[0][:5]) == (421, b"4.3.2")
    finally:
        idle.close()
        busy.close()
    assert running.wait() == 0
    listed = json.loads(cli(config, "queue", "list", "--json").stdout)
    assert len(listed) == 1


def test_sigint_exits_zero(running: RunningProcess) -> None:
    running.signal(signal.SIGINT)
    assert running.wait() == 0


def test_port_in_use_is_one_line(config: Path, running: RunningProcess, tmp_path: Path) -> None:
    second = write_config(
        tmp_path / "second.toml", tmp_path / "data2", ports={"mx": running.ports["mx"]}
    )
    result = subprocess.run(
        [sys.executable, "-m", "postroom", "serve", "--config", str(second)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "cannot listen" in result.stderr


def test_submission_starttls_login_with_smtplib(
    config: Path, running: RunningProcess, tmp_path: Path
) -> None:
    cli(config, "domain", "add", "example.test")
    cli(config, "user", "add", "app@example.test", "--password-stdin", stdin="pw-1234\n")
    with smtplib.SMTP("localhost", running.ports["submission"], timeout=10) as client:
        client.starttls(context=client_context(tmp_path / "data"))
        client.login("app@example.test", "pw-1234")
        refused = client.sendmail(
            "app@example.test", ["x@far-away.test"], b"Subject: a\r\n\r\nb\r\n"
        )
        assert refused == {}
