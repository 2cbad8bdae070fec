"""Bearer API-key authentication and per-key rate limits (a token bucket per key).

The bucket holds ``burst`` requests and refills at ``rate_limit`` per minute on the
injected clock's wall time (the nodes' clocks agree); an empty bucket answers 429 with
``Retry-After`` (whole seconds until the next token).
"""

from __future__ import annotations

import math
from typing import Final

from starlette.requests import Request

from postroom.api.errors import ApiError
from postroom.clock import Clock
from postroom.directory.apikeys import ApiKeys
from postroom.store.base import LimitStore
from postroom.store.models import ApiKeyRecord

__all__ = ["Authenticator", "RateLimiter"]

_MAX_REMEMBERED: Final = 10_000  # refusals kept; past it they are forgotten (asked again)


class RateLimiter:
    """``per_minute`` 0: no limit. The buckets are the store's (``LimitStore``), shared by
    every node on the database: a key gets its rate once, not once per node.

    A refusal is remembered here until its wait is over: no other node can put a token
    back sooner (tokens only come with time), so a client hammering past its limit costs
    the database nothing until then."""

    def __init__(self, limits: LimitStore, clock: Clock, *, per_minute: int, burst: int) -> None:
        self._limits = limits
        self._clock = clock
        self._rate = per_minute / 60.0
        self._burst = burst
        self._refused_until: dict[str, float] = {}

    async def wait_time(self, key: str) -> float:
        """Take one token for ``key``: 0 when allowed, else the seconds until one is free."""
        if self._rate <= 0:
            return 0.0
        now = self._clock.time()
        until = self._refused_until.get(key)
        if until is not None:
            if now < until:
                return until - now
            del self._refused_until[key]
        wait = await self._limits.take_token(
            f"api {key}", now, per_second=self._rate, burst=self._burst
        )
        if wait > 0:
            if len(self._refused_until) >= _MAX_REMEMBERED:
                self._refused_until.clear()
            self._refused_until[key] = now + wait
        return wait


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
        wait = await self._limiter.wait_time(record.name)
        if wait > 0:
            raise ApiError(
                429,
                "rate limit of this API key reached",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return record
