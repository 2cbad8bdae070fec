"""The log's lines for events: every field of the event, in the text format's time."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import ClassVar, cast

import pytest

from postroom.events import MessageQueued
from postroom.events.catalog import Event
from postroom.events.logformat import TEXT_FORMAT, TextFormatter, formatter
from postroom.events.logline import LogLineWriter


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def lines() -> Lines:
    return Lines()


@pytest.fixture
def logger(lines: Lines) -> logging.Logger:
    logger = logging.getLogger(f"test.logline.{id(lines)}")
    logger.handlers[:] = [lines]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


@dataclass(frozen=True, slots=True)
class Where:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Probe:
    kind: ClassVar[str] = "test.probe"
    name: str
    where: Where
    tags: tuple[str, ...] = ()


def test_a_line_has_every_field_of_its_event(logger: logging.Logger, lines: Lines) -> None:
    write = LogLineWriter(logger)
    queued = MessageQueued("Q1", "smtp", "a@example.com", ("b@example.com",), 42)
    probe = cast(Event, Probe("p", Where("mx.example", 25), ("x",)))  # no event has one yet
    for event in (queued, queued, probe):
        write(event)
    texts = [json.loads(record.getMessage()) for record in lines.records]
    assert (
        texts[0]
        == texts[1]
        == {
            "event": "message.queued",
            "queue_id": "Q1",
            "source": "smtp",
            "sender": "a@example.com",
            "recipients": ["b@example.com"],
            "size": 42,
            "handed_off": False,
        }
    )
    # A field that is itself a record is written as its fields.
    assert texts[2] == {
        "event": "test.probe",
        "name": "p",
        "where": {"host": "mx.example", "port": 25},
        "tags": ["x"],
    }
    assert {(r.name, r.levelno) for r in lines.records} == {(logger.name, logging.INFO)}


def test_no_line_is_built_below_its_level(logger: logging.Logger, lines: Lines) -> None:
    logger.setLevel(logging.WARNING)
    LogLineWriter(logger)(MessageQueued("Q1", "smtp", "", (), 0))
    assert lines.records == []


def test_the_text_formats_time_is_loggings_own_for_every_second() -> None:
    # The date and time are made once a second and reused: records in, at the edges of
    # and across seconds, in any order (lines come from several threads), each get
    # their own.
    ours, stdlib = formatter("text"), logging.Formatter(TEXT_FORMAT)
    assert isinstance(ours, TextFormatter)
    start = float(int(time.time()))
    for offset in (0.0, 0.999, 1.0, 0.5, 2.001, 1.9995, 3600.25, 0.0):
        record = logging.LogRecord("postroom.mail", logging.INFO, "", 0, "x", (), None)
        record.created = start + offset
        record.msecs = (record.created - int(record.created)) * 1000
        assert ours.format(record) == stdlib.format(record), offset
