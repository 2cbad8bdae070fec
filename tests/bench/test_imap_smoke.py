"""A tiny run of bench/imap.py (200 messages, 12 IDLE sessions) so that it cannot rot:
it must print its figures and every IDLE session must see the new message."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_imap_bench_runs_and_every_idle_session_is_woken() -> None:
    done = subprocess.run(
        [sys.executable, "bench/imap.py", "--messages", "200", "--idle", "12",
         "--postroom-python", sys.executable],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"SELECT, warm +\d+\.\d+ s", out), out
    assert re.search(r"server RSS with all +\d+\.\d MiB", out), out
    assert re.search(r"woken by an SMTP delivery +12 of 12", out), out
    assert re.search(r"woken by a file in new/ \(poll\) +12 of 12", out), out
