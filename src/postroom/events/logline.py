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
        fields = {"event": event.kind, **dataclasses.asdict(event)}
        self._logger.info(StructuredLine(event.kind, fields))
