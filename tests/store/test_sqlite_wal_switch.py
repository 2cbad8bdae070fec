"""Processes opening a new SQLite file at once all switch it to WAL without an error."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from postroom.store.sqlite.connection import use_wal

OPENERS = 4
ROUNDS = 20  # without the retry about one round in three fails


def _open_together(path: Path) -> list[str]:
    modes: list[str] = []
    errors: list[Exception] = []
    start = threading.Barrier(OPENERS)

    def open_one() -> None:
        conn = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
        try:
            start.wait()
            modes.append(use_wal(conn, 5.0))
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=open_one) for _ in range(OPENERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return modes


def test_openers_switching_a_new_file_to_wal_at_once_all_succeed(tmp_path: Path) -> None:
    for round_ in range(ROUNDS):
        assert _open_together(tmp_path / f"limits-{round_}.sqlite") == ["wal"] * OPENERS
