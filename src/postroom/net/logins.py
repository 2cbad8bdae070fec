"""The way every door checks a password: the AUTH throttle, the login cache, and one
check for identical attempts in flight.

An application logs in on every connection, often from a pool of many connections that
open at once, with the same right password. Three rules keep that cheap and keep
guessing as hard as before:

- A login the cache knows (``recall``: this password was verified against the user's
  current stored hash a moment ago) takes no failure slot and no password check: it
  only has to find the client and the account unthrottled. A throttled client gets the
  same ``throttled`` answer whatever it sends, so the cache tells a guesser nothing.
- Any other login takes a failure slot before its password is checked (``begin``), so
  guesses made at once cannot get more checks than the limit allows.
- An attempt identical to one in flight (same client address, account and password)
  waits for that one's verdict instead of taking a slot and checking again: a pool of
  connections logging in together costs one check and one slot, and repeats of one
  guess are worth one guess.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from postroom.net.throttle import client_key

__all__ = ["Login", "LoginGate", "LoginThrottle"]

T = TypeVar("T")


class _Attempt(Protocol):
    async def succeeded(self) -> None: ...


class LoginThrottle(Protocol):
    async def begin(self, client: str, account: str) -> _Attempt | None: ...

    async def throttled(self, client: str, account: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Login(Generic[T]):
    verdict: Literal["ok", "failed", "throttled"]
    who: T | None = None  # set when ok


class LoginGate(Generic[T]):
    def __init__(
        self,
        throttle: LoginThrottle,
        *,
        verify: Callable[[str, str], Awaitable[T | None]],
        recall: Callable[[str, str], Awaitable[T | None]],
    ) -> None:
        self._throttle = throttle
        self._verify = verify  # the full check (argon2id)
        self._recall = recall  # the cache only: None unless known good right now
        self._key = secrets.token_bytes(32)  # never leaves memory
        self._in_flight: dict[bytes, asyncio.Future[Login[T]]] = {}

    async def login(self, client: str, account: str, username: str, password: str) -> Login[T]:
        """Check ``password`` for ``username`` from ``client``; ``account`` is the name the
        throttle counts (the username as typed, bounded). StoreError when the throttle's
        counts or the users cannot be reached."""
        known = await self._recall(username, password)
        if known is not None:
            return await self._unless_throttled(client, account, known)
        flight_key = self._flight_key(client, account, password)
        flight = self._in_flight.get(flight_key)
        if flight is not None:
            try:
                earlier = await asyncio.shield(flight)
            except asyncio.CancelledError:
                if not flight.cancelled():
                    raise  # this attempt was cancelled, not the one it waited for
                return await self.login(client, account, username, password)
            if earlier.verdict == "ok" and earlier.who is not None:
                return await self._unless_throttled(client, account, earlier.who)
            return earlier
        flight = asyncio.get_running_loop().create_future()
        self._in_flight[flight_key] = flight
        try:
            result = await self._check(client, account, username, password)
        except Exception as exc:  # the store: those waiting get the same error
            flight.set_exception(exc)
            flight.exception()  # retrieved: nobody may be waiting for it
            raise
        except BaseException:  # cancelled: those waiting check for themselves
            flight.cancel()
            raise
        finally:
            del self._in_flight[flight_key]
        flight.set_result(result)
        return result

    async def _check(self, client: str, account: str, username: str, password: str) -> Login[T]:
        attempt = await self._throttle.begin(client, account)
        if attempt is None:
            return Login("throttled")
        who = await self._verify(username, password)
        if who is None:
            return Login("failed")  # the slot stays taken: a failure
        await attempt.succeeded()
        return Login("ok", who)

    async def _unless_throttled(self, client: str, account: str, who: T) -> Login[T]:
        if await self._throttle.throttled(client, account):
            return Login("throttled")
        return Login("ok", who)

    def _flight_key(self, client: str, account: str, password: str) -> bytes:
        data = "\x00".join((client_key(client), account, password))
        encoded = data.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(encoded, key=self._key, digest_size=32).digest()
