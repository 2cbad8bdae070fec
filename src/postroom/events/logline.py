"""Subscriber: one structured (JSON) log line per event."""

from __future__ import annotations

import dataclasses
import json
import logging

from postroom.events.catalog import Event

__all__ = ["LogLineWriter"]


class LogLineWriter:
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("postroom.mail")

    def __call__(self, event: Event) -> None:
        if not self._logger.isEnabledFor(logging.INFO):
            return  # building the line costs more than the rest of a small transaction
        record = {"event": event.kind, **dataclasses.asdict(event)}
        self._logger.info(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
