"""Password hashing with argon2id (RFC 9106), and async variants that keep the loop free.

The cost is OWASP's argon2id baseline (19 MiB, 2 passes, 1 lane): a SMTP AUTH runs
one verification per connection, so the per-hash memory is what bounds a burst of
logins. Hashes carry their own parameters, so raising the cost later still verifies
old hashes; ``needs_rehash`` tells when a stored hash is below the current cost.
"""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "PasswordCheck",
    "hash_password",
    "hash_password_async",
    "needs_rehash",
    "verify_password",
    "verify_password_async",
]

# Immutable parameters, not state: a PasswordHasher keeps nothing between calls.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=Type.ID)


def hash_password(password: str) -> str:
    """A PHC-format ``$argon2id$...`` string with a fresh random salt."""
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when ``password`` matches; False for a wrong password or a malformed hash."""
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


async def hash_password_async(password: str) -> str:
    """``hash_password`` in a worker thread: argon2 costs tens of milliseconds of CPU."""
    return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password_hash: str, password: str) -> bool:
    """``verify_password`` in a worker thread."""
    return await asyncio.to_thread(verify_password, password_hash, password)


class PasswordCheck:
    """Checks a login's password in about the same time whether the account exists or
    not: for an unknown account (``None``) the password is checked against a dummy hash,
    made on first need with the current cost, so timing does not tell which exist."""

    def __init__(self) -> None:
        self._dummy: str | None = None

    async def verify(self, password_hash: str | None, password: str) -> bool:
        if password_hash is None:
            if self._dummy is None:
                self._dummy = await hash_password_async(secrets.token_urlsafe(16))
            await verify_password_async(self._dummy, password)
            return False
        return await verify_password_async(password_hash, password)
