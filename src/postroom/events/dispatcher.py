"""The outbox's way out: events POSTed, signed, to the configured ``[[webhooks]]``.

A supervised task (``run``) on the primary process: each round gives new events a
delivery row per webhook that wants them (``fan_out``), leases the due deliveries (one
message's events to one webhook in order, the store sees to that) and POSTs each, one
event per request. A 2xx settles it; anything else (another status, a timeout, a
refused connection) is tried again after a delay that grows from 5 s to an hour,
until the webhook's ``retry_for`` (24 h) has passed since the event reached it: then it
is recorded failed, and the message's next event may go. Nodes sharing a database
lease rows, so each delivery is sent by one of them at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from postroom import __version__
from postroom.clock import Clock
from postroom.config.eventhooks import WebhookTarget
from postroom.config.secrets import MissingSecret, read_secret
from postroom.errors import ConfigError, StoreError
from postroom.events.signing import signed_headers
from postroom.mail.events import EventOrigin, EventType, MailEvent, new_event_id
from postroom.store.base import EventStore
from postroom.store.models import WebhookAttempt

# httpx (and the command-line tools it loads with it) once the first event is POSTed: the
# dispatcher runs on every primary, and most have no [[webhooks]].
if TYPE_CHECKING:
    import httpx

__all__ = [
    "RETRY_DELAYS",
    "ProbeResult",
    "WebhookDispatcher",
    "WebhookSender",
    "next_attempt_at",
    "send_test_event",
]

_log = logging.getLogger("postroom.webhooks.out")

# Seconds before the next try, by the number of failed tries so far (the last repeats):
# a receiver restarting is caught within seconds, one down for the day is asked hourly.
RETRY_DELAYS = (5.0, 30.0, 120.0, 300.0, 900.0, 1800.0, 3600.0)
_FAN_OUT_BATCH = 500
_CLAIM_BATCH = 100
_CONCURRENCY = 16  # requests in flight at once, over every webhook
_POLL = 1.0  # seconds between rounds when nothing woke the dispatcher
_FIRST_STORE_PAUSE, _LAST_STORE_PAUSE = 0.5, 30.0


def next_attempt_at(failures: int, now: float, created_at: float, retry_for: float) -> float | None:
    """When to try again after ``failures`` failed tries, or None: give up."""
    delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1]
    at = now + delay
    return at if at <= created_at + retry_for else None


class WebhookSender:
    """POSTs one event to one webhook, signed with its secret (``postroom webhook test``
    alone; the dispatcher for every delivery)."""

    def __init__(
        self,
        targets: Sequence[WebhookTarget],
        clock: Clock,
        *,
        environ: Mapping[str, str],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """ConfigError when a webhook's secret cannot be read."""
        self._secrets = {t.name: _secret(t, environ) for t in targets}
        self._clock = clock
        self._transport = transport
        self._client: httpx.AsyncClient | None = None  # made for the first POST

    async def post(self, target: WebhookTarget, event: MailEvent) -> tuple[int | None, str | None]:
        """POST one event: (the HTTP status or None, None when it was taken or why not)."""
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport,
                follow_redirects=False,
                headers={"User-Agent": f"postroom/{__version__}"},
            )
        body = json.dumps(event.as_json(), separators=(",", ":"), ensure_ascii=False).encode()
        headers = signed_headers(self._secrets[target.name], self._clock.time(), body, event.id)
        try:
            response = await self._client.post(
                str(target.url), content=body, headers=headers, timeout=target.timeout
            )
        except httpx.TimeoutException:
            return None, f"no answer within {target.timeout:g} s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"HTTP {response.status_code}"

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What a webhook answered to a test event: its status, and why not when not 2xx."""

    event: MailEvent
    status: int | None
    error: str | None


async def send_test_event(
    target: WebhookTarget,
    clock: Clock,
    *,
    environ: Mapping[str, str],
    transport: httpx.AsyncBaseTransport | None = None,
) -> ProbeResult:
    """POST a signed test event (type "queued", reason "test") to ``target`` now, outside
    the outbox (``postroom webhook test``, the dashboard's "send a test"). ConfigError
    when its secret cannot be read."""
    event = MailEvent(
        id=new_event_id(),
        type=EventType.QUEUED,
        at=clock.time(),
        recipient="test@example.com",
        reason="test",
        origin=EventOrigin.INTAKE,
    )
    sender = WebhookSender([target], clock, environ=environ, transport=transport)
    try:
        status, error = await sender.post(target, event)
    finally:
        await sender.aclose()
    return ProbeResult(event, status, error)


class WebhookDispatcher:
    def __init__(
        self,
        store: EventStore,
        targets: Sequence[WebhookTarget],
        clock: Clock,
        *,
        environ: Mapping[str, str],
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        """ConfigError when a webhook's secret cannot be read."""
        self._store = store
        self._targets = {t.name: t for t in targets}
        self._sender = WebhookSender(targets, clock, environ=environ, transport=transport)
        self._clock = clock
        self._sleep = sleep
        self._wake = asyncio.Event()
        self._gate = asyncio.Semaphore(_CONCURRENCY)

    @property
    def targets(self) -> Mapping[str, WebhookTarget]:
        return self._targets

    def wake(self) -> None:
        """Look for new events now (something was just recorded)."""
        self._wake.set()

    def route(self, event: MailEvent) -> list[str]:
        """The webhooks that want ``event`` (the store's fan-out filter)."""
        return [t.name for t in self._targets.values() if t.wants(event.type, event.tags)]

    async def run(self) -> None:
        """Rounds until cancelled. A failing receiver never ends it; a store error is
        logged and the round tried again after a pause that doubles from 0.5 s to 30 s
        (the events wait in the store meanwhile), so a database outage leaves nothing
        for the task supervisor to restart."""
        pause = _FIRST_STORE_PAUSE
        while True:
            self._wake.clear()
            try:
                await self.run_once()
            except StoreError as exc:
                _log.warning("webhooks: the store failed, trying again in %g s: %s", pause, exc)
                wait, pause = pause, min(pause * 2, _LAST_STORE_PAUSE)
            else:
                wait, pause = _POLL, _FIRST_STORE_PAUSE
            if self._sleep is not None:
                await self._sleep(wait)
                continue
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that comes as the wake-up does, and the task never stops.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def run_once(self) -> int:
        """One round: fan out what is new, send what is due; how many were sent."""
        now = self._clock.time()
        route = self.route if self._targets else None  # None: marked, never read back
        while await self._store.fan_out(route, limit=_FAN_OUT_BATCH, now=now) == _FAN_OUT_BATCH:
            now = self._clock.time()
        # A row of a webhook no longer configured is claimed too, and recorded failed.
        lease = max((t.timeout for t in self._targets.values()), default=10.0) + 30.0
        claimed = await self._store.claim_webhook_deliveries(
            self._clock.time(), limit=_CLAIM_BATCH, lease=lease
        )
        results = await asyncio.gather(
            *(self._deliver(d.webhook, d.event, d.attempts, d.created_at) for d in claimed)
        )
        for result in results:
            await self._store.record_webhook_attempt(result)
        return len(results)

    async def _deliver(
        self, webhook: str, event: MailEvent, attempts: int, created_at: float
    ) -> WebhookAttempt:
        target = self._targets.get(webhook)
        now = self._clock.time()
        if target is None:  # removed from the configuration since the event was fanned out
            return WebhookAttempt(webhook, event.id, now, False, None, "not configured", None)
        async with self._gate:
            status, error = await self._sender.post(target, event)
        now = self._clock.time()
        if error is None:
            return WebhookAttempt(webhook, event.id, now, True, status, "", None)
        retry = next_attempt_at(attempts + 1, now, created_at, target.retry_for)
        if retry is None:
            _log.error(
                "webhook %s: event %s (%s of %s) given up after %d tries: %s",
                webhook,
                event.id,
                event.type.value,
                event.queue_id,
                attempts + 1,
                error,
            )
        else:
            _log.warning("webhook %s: event %s not taken: %s", webhook, event.id, error)
        return WebhookAttempt(webhook, event.id, now, False, status, error, retry)

    async def aclose(self) -> None:
        await self._sender.aclose()


def _secret(target: WebhookTarget, environ: Mapping[str, str]) -> str:
    try:
        return read_secret("secret", target.secret, target.secret_env, environ)
    except MissingSecret as exc:
        raise ConfigError(f"webhooks.{target.name}.{exc.key}", exc.problem) from None
