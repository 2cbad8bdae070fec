"""Bearer API-key authentication and per-key rate limits (a token bucket per key).

The bucket holds ``burst`` requests and refills at ``rate_limit`` per minute on the
injected clock's monotonic time; an empty bucket answers 429 with ``Retry-After``
(whole seconds until the next token).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from starlette.requests import Request

from postroom.api.errors import ApiError
from postroom.clock import Clock
from postroom.directory.apikeys import ApiKeys
from postroom.store.models import ApiKeyRecord

__all__ = ["Authenticator", "RateLimiter"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """``per_minute`` 0: no limit."""

    def __init__(self, clock: Clock, *, per_minute: int, burst: int) -> None:
        self._clock = clock
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._buckets: dict[str, _Bucket] = {}

    def wait_time(self, key: str) -> float:
        """Take one token for ``key``: 0 when allowed, else the seconds until one is free."""
        if self._rate <= 0:
            return 0.0
        now = self._clock.monotonic()
        bucket = self._buckets.setdefault(key, _Bucket(self._burst, now))
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self._rate


class Authenticator:
    def __init__(self, keys: ApiKeys, limiter: RateLimiter) -> None:
        self._keys = keys
        self._limiter = limiter

    async def __call__(self, request: Request) -> ApiKeyRecord:
        """The request's API key, or ApiError 401 / 429."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        record = None
        if scheme.lower() == "bearer" and token.strip():
            record = await self._keys.verify(token.strip())
        if record is None:
            raise ApiError(
                401,
                "a valid API key is required (Authorization: Bearer <key>)",
                headers={"WWW-Authenticate": 'Bearer realm="postroom"'},
            )
        request.state.api_key = record.name  # for the log, should the request fail
        wait = self._limiter.wait_time(record.name)
        if wait > 0:
            raise ApiError(
                429,
                "rate limit of this API key reached",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return record
