"""Subscriber: one structured log line per event."""

from __future__ import annotations

import dataclasses
import logging

from postroom.events.catalog import Event
from postroom.events.logformat import StructuredLine

__all__ = ["LogLineWriter"]


class LogLineWriter:
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("postroom.mail")

    def __call__(self, event: Event) -> None:
        if not self._logger.isEnabledFor(logging.INFO):
            return  # building the line costs more than the rest of a small transaction
        fields: dict[str, object] = {"event": event.kind}
        for field in dataclasses.fields(event):
            value = getattr(event, field.name)
            # The events' fields are plain values; asdict's deep copy costs a third of a line.
            is_record = dataclasses.is_dataclass(value) and not isinstance(value, type)
            fields[field.name] = dataclasses.asdict(value) if is_record else value
        self._logger.info(StructuredLine(event.kind, fields))
