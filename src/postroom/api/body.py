"""Request bodies within limits: 413 as soon as a limit is passed (by the declared
Content-Length, before a byte is read, or by the bytes that arrive), 422 when the
client stops early. Nothing reads past a limit.

Bodies that must be parsed whole (JSON, webhook events) are held in memory within one
``ByteBudget`` shared by every request: when a body would take it past its limit, the
answer is ``503`` with ``Retry-After`` before the body is read (one request alone is
always let in). A raw message never needs to be whole: it goes to a ``SpooledBody``
(memory while small, then an unlinked file) as it arrives, byte for byte: intake's
clean-up makes its line ends canonical, as for every door.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request

from postroom.api.errors import ApiError
from postroom.mail.spool import SpooledBody

__all__ = ["BUDGET_RETRY_AFTER", "ByteBudget", "Held", "SpooledRequest", "read_body", "spool_body"]

# Seconds: a body in flight is handled within seconds, so its share comes back soon.
BUDGET_RETRY_AFTER = "5"


class ByteBudget:
    """Body bytes held in memory at once, across all requests."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @contextmanager
    def hold(self) -> Iterator[Held]:
        held = Held(self)
        try:
            yield held
        finally:
            self.used -= held.size


class Held:
    """One request's share of the budget; returned when the request ends."""

    def __init__(self, budget: ByteBudget) -> None:
        self._budget = budget
        self.size = 0

    def take(self, size: int) -> None:
        budget = self._budget
        others = budget.used - self.size
        if others > 0 and budget.used + size > budget.limit:
            raise ApiError(
                503,
                "the server holds as many request bodies as it may; try again later",
                headers={"Retry-After": BUDGET_RETRY_AFTER},
            )
        budget.used += size
        self.size += size


def _declared(request: Request, limit: int, what: str) -> int | None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_big(limit, what)
    return int(declared) if declared is not None and declared.isdigit() else None


def _too_big(limit: int, what: str) -> ApiError:
    return ApiError(413, f"{what} is larger than {limit} bytes")


async def read_body(
    request: Request, limit: int, held: Held, what: str = "the request", *, weight: int = 1
) -> bytes:
    """The whole body in memory, counted against the budget ``held`` belongs to:
    ``weight`` times its size, for a body whose handling holds that many copies."""
    declared = _declared(request, limit, what)
    if declared is not None:
        held.take(declared * weight)  # before reading: a refused body is never read
    chunks = bytearray()
    try:
        async for chunk in request.stream():
            chunks += chunk
            if len(chunks) > limit:
                raise _too_big(limit, what)
            if declared is None:
                held.take(len(chunk) * weight)
    except ClientDisconnect:
        raise ApiError(422, "the request body ended early") from None
    return bytes(chunks)


@dataclass(slots=True)
class SpooledRequest:
    """A raw message as received."""

    body: SpooledBody
    digest: str  # SHA-256 of the bytes as sent
    ascii: bool  # 7-bit throughout


async def spool_body(
    request: Request, limit: int, spool: SpooledBody, what: str = "the message"
) -> SpooledRequest:
    _declared(request, limit, what)
    digest = hashlib.sha256()
    received = 0
    ascii_only = True
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise _too_big(limit, what)
            digest.update(chunk)
            ascii_only = ascii_only and chunk.isascii()
            spool.write(chunk)
    except ClientDisconnect:
        raise ApiError(422, "the request body ended early") from None
    return SpooledRequest(spool, digest.hexdigest(), ascii_only)
