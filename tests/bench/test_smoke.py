"""A tiny run of the benchmark harness (bench/), so that it cannot rot.

200 messages, 4 sessions, postroom and smtp-sink only, one run: the harness must produce a
table with numbers and ratios, and JSON that says the same. Needs Postfix's smtp-source and
smtp-sink (Debian package ``postfix``, which CI installs); skipped without them outside CI.
The run holds postroom's default API port (127.0.0.1:8025), so the harness cannot come to
depend on a fixed port being free.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.config.settings import ApiSettings

ROOT = Path(__file__).resolve().parents[2]
TOOLS = (Path("/usr/sbin/smtp-source"), Path("/usr/sbin/smtp-sink"))
DEFAULT_API = ApiSettings()  # where `postroom serve` puts the API unless told


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    if not all(tool.exists() for tool in TOOLS):
        if os.environ.get("CI"):
            pytest.fail("smtp-source/smtp-sink missing: CI must install the postfix package")
        pytest.skip("Postfix's smtp-source/smtp-sink are not installed (apt-get install postfix)")
    with holding_the_default_api_port():
        return _run_smoke(tmp_path_factory)


@contextlib.contextmanager
def holding_the_default_api_port() -> Iterator[None]:
    """The harness must not depend on postroom's default API port being free: hold it
    while the harness runs (if something else already holds it, that proves as much)."""
    with socket.socket() as holder:
        with contextlib.suppress(OSError):
            holder.bind((DEFAULT_API.address, DEFAULT_API.port))
            holder.listen()
        yield


def _run_smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    out = tmp_path_factory.mktemp("bench-out")
    argv = [
        sys.executable,
        str(ROOT / "bench" / "run.py"),
        "--only=accept",
        "--systems=postroom,smtp-sink",
        "--messages=200",
        "--sessions=4",
        "--runs=1",
        "--no-install",
        "--quiet-threshold=100",  # no waiting for a quiet host in the test suite
        "--retries=0",
        f"--output={out}",
        f"--workdir={tmp_path_factory.mktemp('bench-work')}",
        f"--postroom-python={sys.executable}",
        f"--compare-python={sys.executable}",  # the same build as its own A/B twin
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((out / "latest.json").read_text())
    assert (out / "latest.md").read_text().strip() == done.stdout.strip()
    return done.stdout, data


def _table_row(table: str, label_start: str) -> list[str]:
    for line in table.splitlines():
        if line.startswith(f"| {label_start}"):
            return [cell.strip() for cell in line.strip("|").split("|")]
    raise AssertionError(f"no row for {label_start!r} in:\n{table}")


def test_the_table_has_numbers_and_ratios(smoke_run: tuple[str, dict[str, object]]) -> None:
    table, _ = smoke_run
    assert "### Accept, one message per connection" in table
    assert "### Accept, 50 per connection" in table
    postroom = _table_row(table, "postroom")
    sink = _table_row(table, "smtp-sink")
    number = re.compile(r"^[\d,]+(\.\d+)?$")
    assert number.match(postroom[2]), postroom  # msgs/s
    assert number.match(sink[2]), sink
    assert re.match(r"^\d+\.\d\dx$", sink[-2]), sink  # postroom ÷ smtp-sink
    assert "FAILED" not in table
    assert "Machine: " in table
    assert re.search(r"4 KiB appended and fsync'ed: \d+\.\d\d ms", table), table
    twin_lines = [
        line for line in table.splitlines() if "[the build at --compare-python] |" in line
    ]
    assert len(twin_lines) == 2, table  # one row in each of the two accept sections
    twin = [cell.strip() for cell in twin_lines[0].strip("|").split("|")]
    assert number.match(twin[2]), twin
    assert re.match(r"^\d+\.\d\dx$", twin[-2]), twin  # postroom ÷ its twin: the A/B


def test_the_json_records_machine_runs_and_ratios(
    smoke_run: tuple[str, dict[str, object]],
) -> None:
    _, data = smoke_run
    machine = data["machine"]
    assert isinstance(machine, dict)
    assert {"cores", "memory_bytes", "disk", "python"} <= machine.keys()
    disk = machine["disk"]
    assert isinstance(disk, dict)
    assert disk["append_fsync_ms"] > 0 and disk["new_file_fsync_ms"] > 0
    sections = data["sections"]
    assert isinstance(sections, list)
    assert [s["key"] for s in sections] == ["accept-1", "accept-50"]
    for section in sections:
        rows = {row["name"]: row for row in section["rows"]}
        assert rows["postroom"]["status"] == "ok"
        assert rows["postroom-compare"]["status"] == "ok"
        postroom_run = rows["postroom"]["samples"][0]["metrics"]
        assert postroom_run["msgs_per_s"] > 0
        assert postroom_run["stored"] == 200  # every acknowledged message is in the queue
        assert rows["postroom"]["summary"]["msgs_per_s"]["runs"] == 1
        assert rows["smtp-sink"]["postroom_ratio"] > 0


# -- submission (TLS and AUTH, against Postfix + Dovecot) and local delivery -------------


@pytest.fixture(scope="module")
def submission_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The submission and local workloads, tiny: 40 messages, 4 sessions, one run, one
    message per connection, STARTTLS only. The work directory's path is short: Postfix's
    unix sockets live under it, and their paths are limited to 107 bytes."""
    tools = (*TOOLS, Path("/usr/sbin/dovecot"), Path("/usr/include/openssl/ssl.h"))
    if not all(tool.exists() for tool in tools):
        if os.environ.get("CI"):
            pytest.fail("CI must install postfix, dovecot-core, gcc and libssl-dev")
        pytest.skip("needs postfix, dovecot-core, gcc and libssl-dev")
    out = tmp_path_factory.mktemp("bench-sub-out")
    workdir = Path(tempfile.mkdtemp(prefix="pb-", dir="/tmp"))
    argv = [
        sys.executable,
        str(ROOT / "bench" / "run.py"),
        "--only=submission,local",
        "--systems=postroom,postfix-dovecot-sha512crypt,postfix-virtual",
        "--submission-messages=40",
        "--submission-modes=starttls",
        "--relay-messages=100",
        "--sessions=4",
        "--per-connection=1",
        "--runs=1",
        "--no-install",
        "--quiet-threshold=100",
        "--retries=0",
        f"--output={out}",
        f"--workdir={workdir}",
        f"--postroom-python={sys.executable}",
        f"--compare-python={sys.executable}",  # the same build as its own A/B twin
    ]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((out / "latest.json").read_text())
    assert isinstance(data, dict)
    return data


def test_submission_and_local_rows_have_figures_and_ratios(
    submission_run: dict[str, object],
) -> None:
    sections = submission_run["sections"]
    assert isinstance(sections, list)
    keys = [s["key"] for s in sections]
    assert keys == ["submission-starttls-1", "local"]
    for section in sections:
        rows = {row["name"]: row for row in section["rows"]}
        peer = "postfix-virtual" if section["key"] == "local" else "postfix-dovecot-sha512crypt"
        assert rows["postroom"]["status"] == "ok", rows["postroom"]
        assert rows[peer]["status"] == "ok", rows[peer]
        assert rows[peer]["postroom_ratio"] > 0
        metrics = rows["postroom"]["samples"][0]["metrics"]
        assert metrics["client_cpu_s"] > 0  # the load generator's CPU is counted
        if section["key"] != "local":
            assert metrics["stored"] == 40  # every acknowledged message is in the queue
    targets = submission_run["targets"]
    assert isinstance(targets, list)
    assert {t["against"] for t in targets} == {"postfix-dovecot-sha512crypt", "postfix-virtual"}
