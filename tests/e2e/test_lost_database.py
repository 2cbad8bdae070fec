"""The data directory knows its store: `postroom serve` (a real process) refuses, with one
line, a database that was truncated, deleted, replaced or damaged, and starts a new one
only in a new directory or when asked (--init). `postroom db check/backup`, `status`."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import (
    RunningProcess,
    cli_out,
    run_cli,
    smtp_client,
    start_process,
    write_config,
)

BODY = b"Subject: received\r\n\r\n" + (b"x" * 70 + b"\r\n") * 600


def serve(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`postroom serve` that is expected to refuse: it must end by itself."""
    return subprocess.run(
        [sys.executable, "-m", "postroom", "serve", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def stop(proc: RunningProcess) -> None:
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0


@pytest.fixture
def used(tmp_path: Path) -> tuple[Path, Path]:
    """A data directory a server has run in, with 10 messages received; the server stopped."""
    data = tmp_path / "data"
    config = write_config(tmp_path / "postroom.toml", data)
    cli_out(config, "domain", "add", "example.test")
    proc = start_process(config, tmp_path / "postroom.log")
    with smtp_client(proc.ports["mx"]) as client:
        for _ in range(10):
            client.sendmail("a@elsewhere.test", ["postmaster@example.test"], BODY)
    stop(proc)
    return config, data


def one_line_refusal(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("postroom: ")
    return lines[0]


def test_a_fresh_directory_starts_and_records_its_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = write_config(tmp_path / "postroom.toml", data)
    stop(start_process(config, tmp_path / "postroom.log"))
    marker = (data / "instance-id").read_text().strip()
    with sqlite3.connect(data / "postroom.db") as conn:
        assert conn.execute("SELECT id FROM instance").fetchall() == [(marker,)]
    stop(start_process(config, tmp_path / "postroom.log"))  # and starts again


def test_serve_refuses_a_truncated_database_of_a_used_directory(used: tuple[Path, Path]) -> None:
    config, data = used
    (data / "postroom.db").write_bytes(b"")  # truncate -s 0
    line = one_line_refusal(serve(config))
    assert "postroom.db is empty" in line and "--init" in line
    assert (data / "postroom.db").stat().st_size == 0  # nothing was made in its place
    # the CLI and postroom-sendmail do not make a new store there either
    assert "is empty" in one_line_refusal(run_cli(config, "domain", "add", "other.test"))
    sendmail = subprocess.run(
        [str(Path(sys.executable).with_name("postroom-sendmail")), "postmaster@example.test"],
        input=b"Subject: lost\n\nhi\n",
        capture_output=True,
        env={**os.environ, "POSTROOM_CONFIG": str(config)},
        timeout=60,
        check=False,
    )
    assert sendmail.returncode == 75  # EX_TEMPFAIL: the caller keeps the message
    assert b"is empty" in sendmail.stderr
    assert (data / "postroom.db").stat().st_size == 0


def test_serve_refuses_a_deleted_database_and_init_starts_a_new_one(
    used: tuple[Path, Path], tmp_path: Path
) -> None:
    config, data = used
    old = (data / "instance-id").read_text()
    (data / "postroom.db").unlink()
    line = one_line_refusal(serve(config))
    assert "postroom.db is missing" in line
    assert not (data / "postroom.db").exists()
    proc = start_process(config, tmp_path / "postroom.log", serve_args=["--init"])
    stop(proc)
    assert (data / "instance-id").read_text() != old
    assert cli_out(config, "queue", "list").count("queued") == 0
    stop(start_process(config, tmp_path / "postroom.log"))  # the new store is its own now


def test_serve_refuses_another_stores_database(used: tuple[Path, Path]) -> None:
    config, data = used
    (data / "instance-id").write_text("0123456789abcdef0123456789abcdef\n")
    line = one_line_refusal(serve(config))
    assert "belongs to store 0123456789abcdef0123456789abcdef" in line


def test_a_damaged_database_is_refused_at_start_and_named_by_db_check(
    used: tuple[Path, Path],
) -> None:
    config, data = used
    db = data / "postroom.db"
    assert run_cli(config, "db", "check").returncode == 0
    size = db.stat().st_size
    with db.open("r+b") as f:
        f.seek(size // 2)
        f.write(random.Random(11).randbytes(8192))
    line = one_line_refusal(serve(config))
    assert "is damaged" in line and "postroom db check" in line
    done = run_cli(config, "db", "check")
    assert done.returncode == 1
    problems = done.stdout.strip().splitlines()
    assert problems and all(p.startswith(f"{db}: ") for p in problems)
    assert not any(p.endswith(": ok") for p in problems)


def test_db_backup_copies_a_running_servers_store(used: tuple[Path, Path], tmp_path: Path) -> None:
    config, _ = used
    proc = start_process(config, tmp_path / "postroom.log")
    try:
        with smtp_client(proc.ports["mx"]) as client:
            client.sendmail("a@elsewhere.test", ["postmaster@example.test"], BODY)
        dest = tmp_path / "copy.db"
        assert "checked" in cli_out(config, "db", "backup", str(dest))
        assert "exists" in one_line_refusal(run_cli(config, "db", "backup", str(dest)))
    finally:
        stop(proc)
    with sqlite3.connect(dest) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (11,)
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert dest.stat().st_mode & 0o077 == 0  # password hashes: the owner's only


def test_status_asks_the_running_server(tmp_path: Path) -> None:
    config = write_config(tmp_path / "postroom.toml", tmp_path / "data")
    idle = run_cli(config, "status")
    assert idle.returncode == 3
    assert idle.stdout.startswith("postroom: not running")
    proc = start_process(config, tmp_path / "postroom.log")
    try:
        headline = cli_out(config, "status").splitlines()[0]
        assert f"running (pid {proc.process.pid}, up " in headline
        assert headline.endswith("ready")
    finally:
        stop(proc)
