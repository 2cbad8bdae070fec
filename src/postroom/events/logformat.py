"""The log's line formats: text for people, JSON (one object a line) for log shippers."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

__all__ = ["FIELDS", "TEXT_FORMAT", "JsonFormatter", "StructuredLine", "TextFormatter", "formatter"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS = "fields"
"""The ``extra`` key under which a line carries its structured fields (a dict)."""


class StructuredLine:
    """A message that is all fields: in the text format the fields as one JSON object
    (built only when a handler formats the line), in the JSON format ``summary`` as the
    message and the fields as keys of the line's object."""

    __slots__ = ("fields", "summary")

    def __init__(self, summary: str, fields: dict[str, Any]) -> None:
        self.summary = summary
        self.fields = fields

    def __str__(self) -> str:
        return json.dumps(self.fields, separators=(",", ":"), ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...fields}``: a line's structured fields
    (a ``StructuredLine``, or ``extra={FIELDS: {...}}``) become keys of its object, a
    traceback an ``exc_info`` key."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        message = record.msg
        fields: object
        if isinstance(message, StructuredLine):
            line["message"] = message.summary
            fields = message.fields
        else:
            line["message"] = record.getMessage()
            fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            line.update((k, v) for k, v in fields.items() if k not in line)
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, its time as logging's default (``2026-01-31 12:00:00,123``), the
    part up to the second made once a second: at ``info`` a busy server logs a line or two
    per message, and ``strftime`` of the local time was a fifth of each line's cost."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        # (second, its text), replaced whole: lines come from more than one thread.
        self._stamp = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        msec_format = self.default_msec_format
        if datefmt is not None or msec_format is None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        stamp = self._stamp
        if stamp[0] != second:
            text = time.strftime(self.default_time_format, self.converter(second))
            stamp = self._stamp = (second, text)
        return msec_format % (stamp[1], record.msecs)


def formatter(kind: str) -> logging.Formatter:
    """The formatter for ``log.format``: ``"text"`` or ``"json"``."""
    return JsonFormatter() if kind == "json" else TextFormatter()
