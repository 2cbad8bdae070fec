"""Idempotency-Key: a retried send gets the first answer instead of a second message.

Keys are per API key and kept 24 hours. The first 202 answer is stored in the same
transaction as the message's meta; a retry with the same key and the same request gets
those bytes again, one with a different request gets 409. Requests with the same key
that arrive together are served one after the other (a lock per key), so the second
finds the first's answer. Refusals are not stored: the same request is refused again.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from postroom.api.errors import ApiError
from postroom.clock import Clock
from postroom.store import ApiStore
from postroom.store.models import IdempotencyRecord

__all__ = ["KEY_PATTERN", "WINDOW", "Idempotency", "check_key", "request_hash"]

WINDOW: Final = 24 * 3600.0
MAX_KEY = 255
HEADER = "Idempotency-Key"
# Printable ASCII, inner spaces only (HTTP drops a field value's outer whitespace).
KEY_PATTERN = f"^[!-~](?:[ -~]{{0,{MAX_KEY - 2}}}[!-~])?$"


def check_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not re.fullmatch(KEY_PATTERN, value):
        raise ApiError.invalid([(HEADER, f"1 to {MAX_KEY} printable ASCII characters")])
    return value


def request_hash(content_type: str, query: str, body_sha256: str) -> str:
    """What makes two sends the same request: form, query and body (by its SHA-256, so
    a spooled body need not be read again)."""
    digest = hashlib.sha256()
    for part in (content_type.encode(), query.encode(), body_sha256.encode()):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class Idempotency:
    def __init__(self, store: ApiStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def serialized(self, key_name: str, key: str) -> AsyncIterator[None]:
        slot = (key_name, key)
        lock, users = self._locks.get(slot, (asyncio.Lock(), 0))
        self._locks[slot] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[slot]
            if users == 1:
                del self._locks[slot]
            else:
                self._locks[slot] = (lock, users - 1)

    async def earlier(self, key_name: str, key: str, digest: str) -> IdempotencyRecord | None:
        """The first answer to replay, None if there is none; 409 for another request."""
        found = await self._store.idempotent(key_name, key, self._clock.time() - WINDOW)
        if found is not None and found.request_hash != digest:
            raise ApiError(409, f"{HEADER} {key!r} was used for a different request")
        return found

    def answer(
        self, key_name: str, key: str, digest: str, status: int, body: bytes
    ) -> IdempotencyRecord:
        return IdempotencyRecord(key_name, key, digest, status, body, self._clock.time())

    def forget_before(self) -> float:
        return self._clock.time() - WINDOW
