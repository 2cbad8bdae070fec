"""The EventStore and SuppressionStore methods, once for every engine.

The SQL is ``outbox``'s, written once for both engines; an engine's store mixes
``EventOps`` in, names its ``outbox.Dialect`` in ``_dialect`` and provides ``_write`` and
``_read_consistent`` (as for ``DeliveryOps``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from postroom.mail.events import MailEvent
from postroom.store import outbox
from postroom.store.base import EventRoute
from postroom.store.models import (
    AttemptCount,
    Suppression,
    WebhookAttempt,
    WebhookDelivery,
    WebhookState,
)
from postroom.store.rows import check_lease

__all__ = ["EventOps"]

R = TypeVar("R")


class EventOps:
    _dialect: outbox.Dialect

    async def _write(self, job: Callable[[Any], R], weight: int = 0) -> R:
        raise NotImplementedError

    async def _read_consistent(self, fn: Callable[[Any], R]) -> R:
        raise NotImplementedError

    async def _lookup(self, fn: Callable[[Any], R]) -> R:
        """A read of a few rows by primary key, asked for every submitted message: an
        engine may answer it on the event loop's thread (SQLite does)."""
        return await self._read_consistent(fn)

    # -- the outbox -------------------------------------------------------------------
    async def record_events(self, events: Sequence[MailEvent]) -> None:
        if events:
            await self._write(
                functools.partial(outbox.insert_events, self._dialect, events=list(events))
            )

    async def events(self, queue_id: str) -> list[MailEvent]:
        return await self._read_consistent(
            functools.partial(outbox.events_of, self._dialect, queue_id)
        )

    async def fan_out(self, route: EventRoute | None, *, limit: int, now: float) -> int:
        if limit <= 0 or not await self._read_consistent(outbox.has_new_events):
            return 0
        return await self._write(
            functools.partial(outbox.fan_out, self._dialect, route, limit, now)
        )

    async def claim_webhook_deliveries(
        self, now: float, *, limit: int, lease: float
    ) -> list[WebhookDelivery]:
        check_lease(lease)
        if limit <= 0:
            return []
        due = functools.partial(outbox.has_due_deliveries, self._dialect, now)
        if not await self._read_consistent(due):
            return []
        return await self._write(
            functools.partial(outbox.claim_deliveries, self._dialect, now, limit, now + lease)
        )

    async def record_webhook_attempt(self, attempt: WebhookAttempt) -> None:
        await self._write(functools.partial(outbox.record_attempt, self._dialect, attempt))

    async def webhook_deliveries(
        self,
        *,
        webhook: str | None = None,
        state: WebhookState | None = None,
        queue_id: str | None = None,
        limit: int = 100,
    ) -> list[WebhookDelivery]:
        if limit <= 0:
            return []
        return await self._read_consistent(
            functools.partial(
                outbox.webhook_deliveries,
                self._dialect,
                limit,
                webhook=webhook,
                state=state,
                queue_id=queue_id,
            )
        )

    async def purge_events(self, before: float) -> int:
        return await self._write(functools.partial(outbox.purge_events, self._dialect, before))

    async def webhook_backlog(self) -> dict[str, int]:
        return await self._read_consistent(functools.partial(outbox.webhook_backlog, self._dialect))

    async def complaint_counts(self, since: float, bucket: float) -> list[AttemptCount]:
        return await self._read_consistent(
            functools.partial(outbox.complaint_counts, self._dialect, since, bucket)
        )

    # -- the suppression list ---------------------------------------------------------
    async def add_suppression(self, entry: Suppression) -> bool:
        return await self._write(functools.partial(outbox.add_suppression, self._dialect, entry))

    async def remove_suppression(self, address: str, scope: str) -> bool:
        return await self._write(
            functools.partial(outbox.remove_suppression, self._dialect, address, scope)
        )

    async def suppressions(
        self,
        *,
        scope: str | None = None,
        address: str | None = None,
        limit: int = 100,
        after: tuple[str, str] | None = None,
    ) -> list[Suppression]:
        if limit <= 0:
            return []
        return await self._read_consistent(
            functools.partial(outbox.suppressions, self._dialect, scope, address, (limit, after))
        )

    async def suppressed(
        self, addresses: Collection[str], sender_domain: str | None
    ) -> dict[str, Suppression]:
        if not addresses:
            return {}
        return await self._lookup(
            functools.partial(outbox.suppressed, self._dialect, list(addresses), sender_domain)
        )
