"""The log of a real `postroom serve`: what a refused transaction says, the debug level's
detail, and JSON lines for log shippers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import (
    RunningProcess,
    client_context,
    smtp_client,
    start_process,
    wait_for,
    write_config,
)
from tests.support.servers import run_cli as cli

JSON_DEBUG = '[log]\nlevel = "debug"\nformat = "json"\n'


def serve(tmp_path: Path, log_table: str = "") -> Iterator[RunningProcess]:
    config = write_config(tmp_path / "postroom.toml", tmp_path / "data")
    if log_table:  # the [log] table write_config made, with these keys added
        text = config.read_text().replace("[log]\n", log_table, 1)
        config.write_text(text)
    assert cli(config, "domain", "add", "example.test").returncode == 0
    added = cli(config, "user", "add", "app@example.test", "--password-stdin", stdin="pw-1234\n")
    assert added.returncode == 0, added.stderr
    proc = start_process(config, tmp_path / "postroom.log")
    yield proc
    if proc.process.poll() is None:
        proc.kill()


@pytest.fixture
def json_debug(tmp_path: Path) -> Iterator[RunningProcess]:
    yield from serve(tmp_path, JSON_DEBUG)


@pytest.fixture
def default_log(tmp_path: Path) -> Iterator[RunningProcess]:
    yield from serve(tmp_path)


def json_lines(proc: RunningProcess) -> list[dict[str, Any]]:
    """Every line of the log, each of which must be one JSON object."""
    return [json.loads(line) for line in proc.log.read_text().splitlines()]


def transactions(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("event") == "smtp.transaction"]


def send_one(proc: RunningProcess) -> None:
    with smtp_client(proc.ports["mx"]) as client:
        client.ehlo("client.test")
        client.sendmail("a@elsewhere.test", ["app@example.test"], b"Subject: hi\r\n\r\nhi\r\n")


def test_a_refused_or_aborted_transaction_is_logged_with_its_recipients_and_real_reply(
    json_debug: RunningProcess,
) -> None:
    proc = json_debug
    with smtp_client(proc.ports["mx"]) as client:
        client.ehlo("client.test")
        assert client.mail("a@elsewhere.test")[0] == 250
        assert client.rcpt("app@example.test")[0] == 250
        assert client.rcpt("someone@remote.test")[0] == 550  # relay denied
        client.rset()
    with smtp_client(proc.ports["submission"]) as client:
        client.starttls(context=client_context(proc.log.parent / "data"))
        client.ehlo("client.test")
        client.login("app@example.test", "pw-1234")
        assert client.mail("ceo@other.test")[0] == 553  # refused at MAIL: no transaction
        client.mail("app@example.test")
        client.rcpt("someone@remote.test")
        code, _ = client.data(b"From: ceo@other.test\r\nSubject: x\r\n\r\nbody\r\n")
        assert code == 553
    wait_for(lambda: len(transactions(json_lines(proc))) == 3)
    aborted, at_mail, at_data = transactions(json_lines(proc))

    assert aborted["result"] == "aborted" and aborted["reply"] is None
    assert aborted["recipients"] == ["app@example.test"]
    [[refused, reply]] = aborted["refused"]
    assert refused == "someone@remote.test" and reply.startswith("550 5.7.1 ")

    assert at_mail["result"] == "rejected" and at_mail["sender"] == "ceo@other.test"
    assert at_mail["reply"].startswith("553 5.7.1 ") and at_mail["recipients"] == []
    assert at_mail["auth_user"] == "app@example.test"

    assert at_data["result"] == "rejected" and at_data["queue_id"] is None
    assert at_data["reply"].startswith("553 5.7.1 From")
    assert at_data["recipients"] == ["someone@remote.test"]


def test_json_format_makes_every_line_an_object_and_debug_shows_session_and_delivery(
    json_debug: RunningProcess,
) -> None:
    proc = json_debug
    send_one(proc)
    wait_for(lambda: any(line.get("event") == "delivery.attempt" for line in json_lines(proc)))
    lines = json_lines(proc)
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
    [queued] = [line for line in transactions(lines) if line["result"] == "queued"]
    assert queued["message"] == "smtp.transaction" and queued["level"] == "info"
    assert queued["recipients"] == ["app@example.test"] and queued["reply"].startswith("250")
    debug = [line["message"] for line in lines if line["level"] == "debug"]
    assert any(m.startswith("connect from 127.0.0.1") for m in debug), debug
    for command in ("EHLO -> 250", "MAIL -> 250", "RCPT -> 250", "DATA -> 354"):
        assert any(command in m for m in debug), (command, debug)
    assert any("end of data -> 250" in m for m in debug), debug
    queue_id = queued["queue_id"]
    # local mail: delivered by the process that accepted it, else claimed by the scheduler
    taken = (
        f"delivering {queue_id} at once: 1 recipient(s)",
        f"claimed {queue_id}: 1 recipient(s)",
    )
    assert any(line in debug for line in taken), debug
    assert any(m.startswith(f"{queue_id}: route ") for m in debug), debug
    assert any(m.startswith(f"{queue_id} to app@example.test by mailer ") for m in debug), debug


def test_debug_shows_the_tls_handshake_and_the_auth_mechanism(json_debug: RunningProcess) -> None:
    proc = json_debug
    with smtp_client(proc.ports["submission"]) as client:
        client.starttls(context=client_context(proc.log.parent / "data"))
        client.ehlo("client.test")
        client.login("app@example.test", "pw-1234")
    with smtp_client(proc.ports["submission"]) as client:
        client.starttls(context=client_context(proc.log.parent / "data"))
        client.ehlo("client.test")
        assert client.docmd("AUTH", "PLAIN AGFwcEBleGFtcGxlLnRlc3QAd3Jvbmc=")[0] == 535
    lines = json_lines(proc)
    [failed] = [line for line in lines if line.get("auth") == "failed"]
    assert failed["level"] == "warning" and failed["logger"] == "postroom.smtp"
    assert (failed["client"], failed["account"]) == ("127.0.0.1", "app@example.test")
    assert failed["listener"] == "submission"
    debug = [line["message"] for line in lines if line["level"] == "debug"]
    assert any("submission: STARTTLS -> TLSv1.3" in m for m in debug), debug
    assert any("AUTH PLAIN -> 235 2.7.0" in m for m in debug), debug
    assert any("AUTH PLAIN -> 535 5.7.8" in m for m in debug), debug


def test_the_default_level_writes_no_debug_lines(default_log: RunningProcess) -> None:
    proc = default_log
    send_one(proc)
    wait_for(lambda: "delivery.attempt" in proc.log.read_text())
    text = proc.log.read_text()
    assert '"event":"smtp.transaction"' in text  # the text format: fields as JSON
    assert " DEBUG " not in text
    assert " INFO postroom.mail: {" in text
