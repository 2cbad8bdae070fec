"""The one way every door checks a password (SMTP AUTH, POP3, IMAP, the dashboard): the
failure throttle, the login cache, and one check for identical attempts in flight.

An application logs in on every connection, often from a pool of connections that open
at once, all with the same right password. Three rules keep that cheap and keep guessing
as hard as before:

- A login the cache knows (``recall``: this password was verified against the account's
  current stored hash a moment ago) takes no failure slot and no password check: it
  only has to find the client and the account unthrottled. A throttled client gets the
  same ``throttled`` answer whatever it sends, so the cache tells a guesser nothing.
- Any other login takes a failure slot before its password is checked (``begin``), so
  guesses made at once cannot get more checks than the limit allows.
- An attempt identical to one in flight (same client address, account and password)
  waits for that one's verdict instead of taking a slot and checking again: a pool of
  connections logging in together costs one check and one slot, and repeats of one
  guess are worth one guess.

The counts or the accounts being out of reach (the database is away) is ``unavailable``:
nothing was checked, the client is told to try later.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from postroom.errors import StoreError
from postroom.net.throttle import client_key

__all__ = ["Login", "LoginGate", "LoginThrottle"]

T = TypeVar("T")
Verdict = Literal["ok", "failed", "throttled", "unavailable"]

_log = logging.getLogger("postroom.auth")


class _Attempt(Protocol):
    async def succeeded(self) -> None: ...


class LoginThrottle(Protocol):
    async def begin(self, client: str, account: str) -> _Attempt | None: ...

    async def throttled(self, client: str, account: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Login(Generic[T]):
    verdict: Verdict
    who: T | None = None  # set when ok


async def _nobody(_username: str, _password: str) -> None:
    return None


class LoginGate(Generic[T]):
    def __init__(
        self,
        throttle: LoginThrottle,
        *,
        verify: Callable[[str, str], Awaitable[T | None]],
        recall: Callable[[str, str], Awaitable[T | None]] = _nobody,
    ) -> None:
        self._throttle = throttle
        self._verify = verify  # the full check (argon2id)
        self._recall = recall  # the cache only: None unless known good right now
        self._key = secrets.token_bytes(32)  # never leaves memory
        self._in_flight: dict[bytes, asyncio.Future[Login[T]]] = {}

    async def login(
        self, client: str, account: str, username: str, password: str, *, authzid: str = ""
    ) -> Login[T]:
        """Check ``password`` for ``username`` from ``client``. ``account`` is the name
        the throttle counts (the username as typed, bounded); an ``authzid`` other than
        the username itself is refused (after taking its slot, as a wrong password)."""
        try:
            if authzid not in ("", username):
                return await self._check(client, account, None)
            known = await self._recall(username, password)
            if known is not None:
                return await self._unless_throttled(client, account, known)
            return await self._once(client, account, username, password)
        except StoreError as exc:
            _log.warning("login not checked, the store is out of reach: %s", exc)
            return Login("unavailable")

    async def _once(self, client: str, account: str, username: str, password: str) -> Login[T]:
        flight_key = self._flight_key(client, account, password)
        flight = self._in_flight.get(flight_key)
        if flight is not None:
            try:
                earlier = await asyncio.shield(flight)
            except asyncio.CancelledError:
                if not flight.cancelled():
                    raise  # this attempt was cancelled, not the one it waited for
                return await self._once(client, account, username, password)
            if earlier.verdict == "ok" and earlier.who is not None:
                return await self._unless_throttled(client, account, earlier.who)
            return earlier
        flight = asyncio.get_running_loop().create_future()
        self._in_flight[flight_key] = flight
        try:
            result = await self._check(client, account, (username, password))
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

    async def _check(
        self, client: str, account: str, credentials: tuple[str, str] | None
    ) -> Login[T]:
        attempt = await self._throttle.begin(client, account)
        if attempt is None:
            return Login("throttled")
        who = None if credentials is None else await self._verify(*credentials)
        if who is None:
            return Login("failed")  # the slot stays taken: a failure
        try:
            await attempt.succeeded()
        except StoreError as exc:  # logged in all the same; the slot stays a failure
            _log.warning("login: the failure counts could not be updated: %s", exc)
        return Login("ok", who)

    async def _unless_throttled(self, client: str, account: str, who: T) -> Login[T]:
        if await self._throttle.throttled(client, account):
            return Login("throttled")
        return Login("ok", who)

    def _flight_key(self, client: str, account: str, password: str) -> bytes:
        data = "\x00".join((client_key(client), account, password))
        encoded = data.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(encoded, key=self._key, digest_size=32).digest()
