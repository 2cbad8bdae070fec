"""The start of accept workers (workerprocs.py, workers.py), in a primary in miniature
(tests/support/forking.py) run as its own process: workers have to be forked before any
thread, event loop or store connection exists, which a pytest process cannot promise.
The real server's workers: tests/e2e/test_workers.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.forking import START_WAIT

REPO = Path(__file__).resolve().parents[1]


def run_primary(case: str, directory: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.forking", case, str(directory)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.splitlines()[-1])
    assert isinstance(answer, dict)
    return answer


def test_a_worker_forked_after_the_primary_made_a_thread_and_a_connection_has_neither(
    tmp_path: Path,
) -> None:
    answer = run_primary("inventory", tmp_path)
    assert answer["started"] is True
    # /readyz names each worker until it listens, and not after.
    starting = ["accept worker 1: starting", "accept worker 2: starting"]
    assert answer["readiness"] == [starting, []]
    for index in (1, 2):
        held = json.loads((tmp_path / f"worker-{index}.json").read_text())
        assert held["threads"] == ["MainThread"]
        assert str(tmp_path / "primary.db") not in held["fds"]
        # What it was given, it has: the primary's listening socket itself.
        assert answer["listening"] in held["fds"]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("refuses", "cannot start: no certificate at all"),
        ("exits", "exited with 3 before it listened"),
        ("silent", f"was not listening after {START_WAIT:g} s: killed"),
    ],
)
def test_a_worker_that_does_not_listen_fails_the_start_with_its_reason(
    tmp_path: Path, case: str, reason: str
) -> None:
    answer = run_primary(case, tmp_path)
    assert "started" not in answer
    assert reason in str(answer["failed"])
