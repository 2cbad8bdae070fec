"""The log handler: lines of one event-loop turn written together, warnings at once,
logrotate noticed, a failing disk survived."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.events.logfile import BatchedLogHandler


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "postroom.log"


@pytest.fixture
def logger(log_path: Path, ticks: Ticks) -> Iterator[logging.Logger]:
    handler = BatchedLogHandler(log_path, monotonic=ticks)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"test.logfile.{id(handler)}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger
    handler.close()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


async def test_lines_of_one_loop_turn_are_written_together_after_it(
    logger: logging.Logger, log_path: Path
) -> None:
    for n in range(5):
        logger.info("line %d", n)
    assert lines(log_path) == []  # still this turn
    await asyncio.sleep(0)
    assert lines(log_path) == [f"INFO line {n}" for n in range(5)]


async def test_a_warning_is_written_at_once_after_the_lines_before_it(
    logger: logging.Logger, log_path: Path
) -> None:
    logger.info("first")
    logger.warning("trouble")
    assert lines(log_path) == ["INFO first", "WARNING trouble"]
    logger.info("after")
    await asyncio.sleep(0)
    assert lines(log_path) == ["INFO first", "WARNING trouble", "INFO after"]


def test_outside_an_event_loop_every_line_is_written_at_once(
    logger: logging.Logger, log_path: Path
) -> None:
    logger.info("no loop here")
    assert lines(log_path) == ["INFO no loop here"]


async def test_a_line_from_another_thread_is_written_at_once_and_in_order(
    logger: logging.Logger, log_path: Path
) -> None:
    logger.info("from the loop")
    await asyncio.to_thread(logger.info, "from a thread")
    assert lines(log_path) == ["INFO from the loop", "INFO from a thread"]


def test_a_file_moved_away_by_logrotate_is_reopened_within_a_second(
    logger: logging.Logger, log_path: Path, ticks: Ticks
) -> None:
    logger.info("before rotation")
    rotated = log_path.with_suffix(".log.1")
    log_path.rename(rotated)
    ticks.now += 0.5
    logger.info("still the old file")  # checked at most once a second
    ticks.now += 0.6
    logger.info("after rotation")
    assert lines(rotated) == ["INFO before rotation", "INFO still the old file"]
    assert lines(log_path) == ["INFO after rotation"]


def test_a_full_disk_costs_the_lines_not_the_server(
    ticks: Ticks, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = BatchedLogHandler(Path("/dev/full"), monotonic=ticks)
    logger = logging.getLogger("test.logfile.full")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.warning("nowhere to go")  # no exception
    handler.close()
    assert "cannot write the log" in capsys.readouterr().err
