"""The queue's delivery methods, once for every engine.

Each engine's ``delivery`` module builds the jobs (its SQL); what the Store methods do
around them (check the arguments, skip empty work, run the job on the writer) is the
same everywhere and lives here. An engine's store mixes ``DeliveryOps`` in, names its
module in ``_delivery`` and provides ``_write`` and ``_read_consistent``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from postroom.mail.events import MailEvent
from postroom.store.models import Attempt, Claim, RecipientUpdate
from postroom.store.rows import check_lease, check_outcomes

__all__ = ["DeliveryJobs", "DeliveryOps"]

C = TypeVar("C")  # the engine's connection type
C_contra = TypeVar("C_contra", contravariant=True)
R = TypeVar("R")

PURGE_CHUNK = 256  # messages removed per transaction, so enqueues are not held up


class DeliveryJobs(Protocol[C_contra]):
    """What an engine's ``delivery`` module provides (a module satisfies it)."""

    def claim_job(
        self, now: float, limit: int, lease_until: float
    ) -> Callable[[C_contra], list[Claim]]: ...

    def next_due(self, conn: C_contra) -> float | None: ...

    def record_job(
        self,
        message_id: str,
        updates: Sequence[RecipientUpdate],
        attempts: Sequence[Attempt],
        events: Sequence[MailEvent],
    ) -> Callable[[C_contra], Any]: ...

    def release_job(
        self, message_id: str, addresses: Collection[str]
    ) -> Callable[[C_contra], Any]: ...

    def renew_job(
        self, leases: Mapping[str, Collection[str]], now: float, until: float
    ) -> Callable[[C_contra], int]: ...

    def hold_job(self, message_id: str, held: bool) -> Callable[[C_contra], bool]: ...

    def hold_all_job(self, held: bool) -> Callable[[C_contra], int]: ...

    def retry_job(self, message_id: str | None, now: float) -> Callable[[C_contra], int]: ...

    def delete_job(self, message_id: str) -> Callable[[C_contra], bool]: ...

    def purge_candidates(
        self, before: float, conn: C_contra, *, bodies: bool = False
    ) -> list[str]: ...

    def purge_job(
        self, before: float, candidates: Sequence[str], *, bodies: bool = False
    ) -> Callable[[C_contra], int]: ...


class DeliveryOps(Generic[C]):
    _delivery: DeliveryJobs[C]

    async def _write(self, job: Callable[[C], R], weight: int = 0) -> R:
        raise NotImplementedError

    async def _read_consistent(self, fn: Callable[[C], R]) -> R:
        """Run ``fn`` on a reader, all its queries seeing one moment."""
        raise NotImplementedError

    async def claim_due(self, now: float, *, limit: int, lease: float) -> list[Claim]:
        check_lease(lease)
        if limit <= 0:
            return []
        return await self._write(self._delivery.claim_job(now, limit, now + lease))

    async def next_due(self) -> float | None:
        return await self._read_consistent(self._delivery.next_due)

    async def record_outcomes(
        self,
        message_id: str,
        updates: Sequence[RecipientUpdate],
        attempts: Sequence[Attempt],
        events: Sequence[MailEvent] = (),
    ) -> None:
        check_outcomes(message_id, updates, attempts)
        if updates or attempts or events:
            await self._record_outcomes(message_id, updates, attempts, events)

    async def _record_outcomes(
        self,
        message_id: str,
        updates: Sequence[RecipientUpdate],
        attempts: Sequence[Attempt],
        events: Sequence[MailEvent],
    ) -> None:
        """Write checked outcomes (an engine's process may hand them to another's)."""
        await self._record(self._delivery.record_job(message_id, updates, attempts, events))

    async def _record(self, job: Callable[[C], Any]) -> None:
        """Run an outcome's job on the writer (an engine may merge neighbours)."""
        await self._write(job)

    async def release(self, message_id: str, addresses: Sequence[str]) -> None:
        if addresses:
            await self._write(self._delivery.release_job(message_id, addresses))

    async def renew_leases(
        self, leases: Mapping[str, Collection[str]], now: float, *, lease: float
    ) -> int:
        check_lease(lease)
        if not leases:
            return 0
        return await self._write(self._delivery.renew_job(leases, now, now + lease))

    async def hold(self, message_id: str) -> bool:
        return await self._write(self._delivery.hold_job(message_id, held=True))

    async def release_hold(self, message_id: str) -> bool:
        return await self._write(self._delivery.hold_job(message_id, held=False))

    async def hold_all(self, held: bool) -> int:
        return await self._write(self._delivery.hold_all_job(held))

    async def retry_now(self, message_id: str | None, now: float) -> int:
        return await self._write(self._delivery.retry_job(message_id, now))

    async def delete(self, message_id: str) -> bool:
        return await self._write(self._delivery.delete_job(message_id))

    async def purge(self, before: float) -> int:
        return await self._purge(before, bodies=False)

    async def purge_bodies(self, before: float) -> int:
        return await self._purge(before, bodies=True)

    async def _purge(self, before: float, *, bodies: bool) -> int:
        """Found on a reader, removed in small transactions, each checked again."""
        candidates = await self._read_consistent(
            functools.partial(self._delivery.purge_candidates, before, bodies=bodies)
        )
        removed = 0
        for start in range(0, len(candidates), PURGE_CHUNK):
            chunk = candidates[start : start + PURGE_CHUNK]
            removed += await self._write(self._delivery.purge_job(before, chunk, bodies=bodies))
        return removed
