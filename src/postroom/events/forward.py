"""An accept worker's delivery attempts, told to the primary (``workers > 1``).

A worker delivers the local and relay mail it accepts (``delivery.direct``) and
publishes each attempt on its own bus: its log line and counters are its own, but the
alerts (a bounce, a failing mailer, the bounce rate) are judged by the primary alone,
which must see every attempt. So a worker, when alerts are configured, sends each
``DeliveryAttempt`` as a JSON datagram on ``alerts.sock`` in the data directory, and the
primary hands what it reads to its ``Alerts``. Like the wake-up it is a hint: a datagram
the primary cannot take (stopped, its buffer full) is dropped, and the worker says so
once in its log; the attempt itself is in the store either way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path

from postroom.events.catalog import DeliveryAttempt
from postroom.net.wakeup import DatagramListener, DatagramSender

__all__ = ["AttemptForwarder", "AttemptReceiver", "socket_path"]

_NAME = "alerts.sock"
_LARGEST = 65536  # bytes read of a datagram
_REPLY_CHARS = 8000  # of a remote's reply (a few long lines): the datagram stays small
_log = logging.getLogger("postroom.events")


def socket_path(data_dir: Path) -> Path:
    return data_dir / _NAME


class AttemptForwarder:
    """A worker's bus subscriber: each ``DeliveryAttempt`` to the primary."""

    def __init__(self, data_dir: Path) -> None:
        self._sender = DatagramSender(socket_path(data_dir))
        self._dropping = False

    def __call__(self, event: object) -> None:
        if not isinstance(event, DeliveryAttempt):
            return
        told = dataclasses.replace(event, reply=event.reply[:_REPLY_CHARS])
        data = json.dumps(dataclasses.asdict(told)).encode()
        if self._sender.send(data):
            self._dropping = False
        elif not self._dropping:
            self._dropping = True
            _log.warning("the primary's alerts did not take this worker's attempts")

    def close(self) -> None:
        self._sender.close()


class AttemptReceiver:
    """The primary's end: calls ``on_attempt`` with each worker's attempt."""

    def __init__(self, data_dir: Path, on_attempt: Callable[[DeliveryAttempt], None]) -> None:
        self._on_attempt = on_attempt
        self._listener = DatagramListener(
            socket_path(data_dir), self._received, name="alerts", size=_LARGEST
        )

    def start(self) -> bool:
        return self._listener.start()

    def _received(self, datagrams: list[bytes]) -> None:
        for data in datagrams:
            try:
                attempt = DeliveryAttempt(**json.loads(data))
            except (ValueError, TypeError):  # not one of ours: ignored
                _log.debug("an unreadable attempt datagram (%d bytes)", len(data))
                continue
            self._on_attempt(attempt)

    def close(self) -> None:
        self._listener.close()
