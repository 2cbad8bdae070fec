"""The machine line's disk facts: the journal, and what a durable write costs."""

from __future__ import annotations

import os
from pathlib import Path

from bench.host import _has_journal, durable_write_costs


def test_the_journal_is_read_from_the_file_system_features() -> None:
    assert _has_journal("/dev/vda", "has_journal ext_attr resize_inode") is True
    assert _has_journal("/dev/vda", "ext_attr resize_inode dir_index") is False


def test_without_the_features_a_journal_is_looked_for_among_the_mounted_ones() -> None:
    found = _has_journal("/dev/no-such-disk", None)
    if os.path.isdir("/proc/fs/jbd2"):
        assert found is False  # no journal of that device is mounted
    else:
        assert found is None


def test_a_durable_write_costs_some_time_and_leaves_nothing(tmp_path: Path) -> None:
    costs = durable_write_costs(tmp_path, count=5)
    assert set(costs) == {"append_fsync_ms", "new_file_fsync_ms"}
    assert all(ms > 0 for ms in costs.values())
    assert list(tmp_path.iterdir()) == []  # the scratch files are gone
