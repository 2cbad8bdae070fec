"""A tiny run of the harness's PostgreSQL workloads (bench/), so that they cannot rot.

``--quick`` with 100 messages, one run: accept on PostgreSQL against SQLite, and delivery
by one and two nodes on one database the harness starts. What is checked is the harness
(every row measured, every message stored or delivered, the commit counts and the
scaling column filled in, the targets listed), not the figures. Needs Postfix's
smtp-source and smtp-sink and PostgreSQL's server programs (CI installs both); skipped
without them outside CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.bench.test_smoke import ROOT, TOOLS
from tests.support.postgres import find_bindir

MESSAGES = 100


@pytest.fixture(scope="module")
def pg_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    if not all(tool.exists() for tool in TOOLS) or find_bindir() is None:
        if os.environ.get("CI"):
            pytest.fail("smtp-source/smtp-sink or PostgreSQL missing: CI must install them")
        pytest.skip("smtp-source/smtp-sink or PostgreSQL are not installed")
    out = tmp_path_factory.mktemp("bench-pg-out")
    argv = [
        sys.executable,
        str(ROOT / "bench" / "run.py"),
        "--quick",
        "--only=pg-accept,pg-delivery",
        f"--messages={MESSAGES}",
        f"--relay-messages={MESSAGES}",
        "--sessions=4",
        "--per-connection=25",
        "--nodes=1,2",
        "--no-install",
        "--quiet-threshold=100",
        f"--output={out}",
        f"--workdir={tmp_path_factory.mktemp('bench-pg-work')}",
        f"--postroom-python={sys.executable}",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((out / "latest.json").read_text())
    return done.stdout, data


def _sections(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {section["key"]: section for section in data["sections"]}


def _rows(section: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in section["rows"]}


def test_accept_on_postgresql_is_measured_against_sqlite(
    pg_run: tuple[str, dict[str, Any]],
) -> None:
    table, data = pg_run
    sections = _sections(data)
    assert {"pg-accept-1", "pg-accept-25"} <= sections.keys()
    for key in ("pg-accept-1", "pg-accept-25"):
        rows = _rows(sections[key])
        for name in ("postroom", "postroom-pg"):
            assert rows[name]["status"] == "ok", rows[name]["errors"]
            assert rows[name]["samples"][0]["metrics"]["stored"] == MESSAGES
        assert rows["postroom"]["postroom_ratio"] > 0  # PostgreSQL's rate over SQLite's
    assert "Accept on PostgreSQL against SQLite" in table
    wanted = [t for t in data["targets"] if "PostgreSQL ≥ 0.8x SQLite" in t["what"]]
    assert len(wanted) == 2 and all(t["measured"] is not None for t in wanted)


def test_delivery_by_one_and_two_nodes_counts_messages_and_commits(
    pg_run: tuple[str, dict[str, Any]],
) -> None:
    table, data = pg_run
    rows = _rows(_sections(data)["pg-delivery"])
    for name, nodes in (("nodes-1", 1), ("nodes-2", 2)):
        assert rows[name]["status"] == "ok", rows[name]["errors"]
        metrics = rows[name]["samples"][0]["metrics"]
        assert metrics["delivered"] == MESSAGES
        assert metrics["nodes"] == nodes
        assert metrics["db_commits_per_s"] > 0 and metrics["commits_per_msg"] > 0
        assert metrics["db_cpu_s"] > 0 and metrics["scaling"] > 0
        assert metrics["wal_flushes_per_s"] > 0
    assert rows["nodes-1"]["samples"][0]["metrics"]["scaling"] == pytest.approx(1.0)
    assert "2 node(s): " in table  # the model's lines
    wanted = [t for t in data["targets"] if "x N x one node" in t["what"]]
    assert len(wanted) == 1 and wanted[0]["measured"] is not None
    assert data["versions"]["postgresql"]
