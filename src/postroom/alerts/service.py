"""The alert task: delivery attempts in (a bus subscriber that only queues), alerts out
through each ``[[alerts]]`` destination, each with its own ``Watch`` and ``Limiter``.

The subscriber never blocks the scheduler: attempts go into a bounded queue, and when it
is full (the task cannot keep up, an outage) the newest are dropped and counted, which
loses only alerts that the limiter would have held back anyway. The task runs under the
supervisor: a destination that fails (a webhook down, intake refusing the email) is
logged and the alert is lost, never the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from postroom.alerts.formats import alert_email, alert_json
from postroom.alerts.watch import Alert, Limiter, Watch
from postroom.clock import Clock
from postroom.config.feedback import AlertFormat, AlertSettings
from postroom.events.catalog import DeliveryAttempt, Event

# httpx (and the command-line tools it loads with it) only where an alert is sent: a
# server with no [[alerts]] never starts this task and carries none of it.
if TYPE_CHECKING:
    import httpx

__all__ = ["Alerts", "DnsVerdict", "SendEmail"]

_log = logging.getLogger("postroom.alerts")

# (sender, recipients, message bytes) -> None; raises when it could not be queued.
SendEmail = Callable[[str, Sequence[str], bytes], Awaitable[None]]
_QUEUE = 1000


@dataclass(frozen=True, slots=True)
class DnsVerdict:
    """A domain check's result: its problems, one line each (none: all good)."""

    domain: str
    problems: tuple[str, ...]


@dataclass(slots=True)
class _Destination:
    settings: AlertSettings
    watch: Watch
    limiter: Limiter


class Alerts:
    SEND_TIMEOUT = 10.0  # seconds a webhook has to answer

    def __init__(
        self,
        settings: Sequence[AlertSettings],
        *,
        clock: Clock,
        hostname: str,
        send_email: SendEmail,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._destinations = [_Destination(s, Watch(s), Limiter(s)) for s in settings]
        self._clock = clock
        self._hostname = hostname
        self._send_email = send_email
        self._http = http
        self._queue: asyncio.Queue[DeliveryAttempt | DnsVerdict] = asyncio.Queue(_QUEUE)
        self._busy = False
        self.dropped = 0
        self.sent = 0

    def on_event(self, event: Event) -> None:
        """The bus subscriber: queue the attempt, never wait."""
        if isinstance(event, DeliveryAttempt):
            self._put(event)

    def on_dns(self, verdict: DnsVerdict) -> None:
        """A domain check's result (``alerts.dnswatch``)."""
        self._put(verdict)

    def _put(self, item: DeliveryAttempt | DnsVerdict) -> None:
        if not self._destinations:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        import httpx

        given = contextlib.nullcontext(self._http) if self._http is not None else None
        async with given or httpx.AsyncClient(timeout=self.SEND_TIMEOUT) as http:
            while True:
                await self._handle(http, await self._queue.get())

    async def flush(self, http: httpx.AsyncClient) -> None:
        """Handle what is queued now, with ``http`` (tests)."""
        while not self._queue.empty():
            await self._handle(http, self._queue.get_nowait())

    async def drained(self) -> None:
        """Done once every attempt queued so far has been handled (a stopping server
        lets the running task send what its last deliveries raised)."""
        await self._queue.join()

    async def _handle(self, http: httpx.AsyncClient, item: DeliveryAttempt | DnsVerdict) -> None:
        self._busy = True
        try:
            for destination, alert in self._judge(item):
                await self._send(http, destination, alert)
        finally:
            self._busy = False
            self._queue.task_done()

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being sent (for ``postroom status`` and tests)."""
        return self._queue.empty() and not self._busy

    def _judge(self, item: DeliveryAttempt | DnsVerdict) -> list[tuple[AlertSettings, Alert]]:
        at = self._clock.time()
        out: list[tuple[AlertSettings, Alert]] = []
        for destination in self._destinations:
            if isinstance(item, DnsVerdict):
                raised = destination.watch.dns(at, item.domain, list(item.problems))
            else:
                raised = self._attempt(destination.watch, at, item)
            for alert in raised:
                admitted = destination.limiter.admit(alert)
                if admitted is not None:
                    out.append((destination.settings, admitted))
        return out

    @staticmethod
    def _attempt(watch: Watch, at: float, attempt: DeliveryAttempt) -> list[Alert]:
        return watch.attempt(
            at=at,
            queue_id=attempt.queue_id,
            recipient=attempt.recipient,
            mailer=attempt.mailer,
            disposition=attempt.disposition,
            status=attempt.status,
            reply=attempt.reply,
        )

    async def _send(self, http: httpx.AsyncClient, settings: AlertSettings, alert: Alert) -> None:
        import httpx

        try:
            if settings.format is AlertFormat.EMAIL:
                sender = settings.sender or f"postmaster@{self._hostname}"
                data = alert_email(alert, sender=sender, to=settings.to, hostname=self._hostname)
                await self._send_email(sender, settings.to, data)
            else:
                await self._post(http, settings, alert)
        except (httpx.HTTPError, AlertFailed, OSError) as exc:
            _log.warning("alert %s (%s) not sent: %s", settings.name, alert.title, exc)
            return
        self.sent += 1
        _log.info("alert %s sent: %s", settings.name, alert.title)

    async def _post(self, http: httpx.AsyncClient, settings: AlertSettings, alert: Alert) -> None:
        url = settings.url or os.environ.get(settings.url_env or "", "")
        if not url:
            raise AlertFailed("no url (url, or url_env naming a set variable)")
        headers = {}
        if settings.secret is not None:
            headers["Authorization"] = f"Bearer {settings.secret.get_secret_value()}"
        answer = await http.post(
            url, json=alert_json(alert, settings.format, self._hostname), headers=headers
        )
        if not answer.is_success:
            raise AlertFailed(f"{url} answered {answer.status_code}")


class AlertFailed(Exception):
    """A destination refused or could not take an alert."""
