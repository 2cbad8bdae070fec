"""In-process publish/subscribe. One Bus object is passed in; nothing is global."""

from __future__ import annotations

import logging
from collections.abc import Callable

from postroom.events.catalog import Event

__all__ = ["Bus", "Subscriber"]

Subscriber = Callable[[Event], None]
_log = logging.getLogger("postroom.events")


class Bus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def publish(self, event: Event) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:  # a broken subscriber must not break the SMTP session
                _log.exception("event subscriber failed on %s", event.kind)
