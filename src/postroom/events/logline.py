"""Subscriber: one structured log line per event."""

from __future__ import annotations

import dataclasses
import logging

from postroom.events.catalog import Event
from postroom.events.logformat import StructuredLine

__all__ = ["LogLineWriter"]

# Values written as they are; anything else is looked at (a record becomes a dict).
_PLAIN: frozenset[type] = frozenset({str, int, float, bool, tuple, type(None)})


class LogLineWriter:
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("postroom.mail")
        self._names: dict[type, tuple[str, ...]] = {}  # each event type's field names

    def __call__(self, event: Event) -> None:
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return  # building the line costs more than the rest of a small transaction
        kind = type(event)
        names = self._names.get(kind)
        if names is None:
            names = self._names[kind] = tuple(f.name for f in dataclasses.fields(event))
        fields: dict[str, object] = {"event": event.kind}
        for name in names:
            value = getattr(event, name)
            # The events' fields are plain values; asdict's deep copy costs a third of a line.
            plain = type(value) in _PLAIN or not dataclasses.is_dataclass(value)
            fields[name] = value if plain or isinstance(value, type) else dataclasses.asdict(value)
        # The record made and handled as Logger.info does, without looking up the
        # caller's file and line, which no line format shows (a tenth of the line's cost).
        record = logger.makeRecord(
            logger.name, logging.INFO, "", 0, StructuredLine(event.kind, fields), (), None
        )
        logger.handle(record)
