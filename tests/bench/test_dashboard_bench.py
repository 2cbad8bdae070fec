"""A tiny run of bench/dashboard.py (300 messages, one request each), so it cannot rot:
it fills a store (and copies it into PostgreSQL), serves the dashboard and prints a
table with a row per request."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("engine", [[], ["--postgresql"]], ids=["sqlite", "postgresql"])
def test_the_dashboard_benchmark_fills_a_store_and_times_each_request(
    tmp_path: Path, engine: list[str]
) -> None:
    # PostgreSQL: the filled SQLite store is copied into a throwaway cluster.
    run = subprocess.run(
        [sys.executable, "-m", "bench.dashboard", "--messages", "300", "--repeat", "1",
         "--data", str(tmp_path / "data"), *engine],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "300 messages in the store" in run.stdout
    assert ("copied into PostgreSQL" in run.stdout) == bool(engine)
    rows = [line for line in run.stdout.splitlines() if line.startswith("| ") and "ms" not in line]
    assert len(rows) == 14
    assert all(re.fullmatch(r"\| [^|]+ \| \d+ \| \d+ \|", row) for row in rows)
