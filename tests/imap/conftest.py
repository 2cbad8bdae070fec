from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.imap.harness import ImapHarness


@pytest.fixture
def imap(tmp_path: Path) -> Iterator[ImapHarness]:
    harness = ImapHarness(tmp_path / "data").start()
    yield harness
    harness.stop()
