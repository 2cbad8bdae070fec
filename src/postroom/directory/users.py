"""Users: who may log in (SMTP AUTH), with which password, sending as which domains
(the rule itself is ``intake.principals.user_rights``).

A user's address is stored as its lookup key (``Address.key``: local part lowercased,
domain as A-labels). ``verify`` takes about the same time whether the user exists or
not: for an unknown user it checks the password against a dummy hash, so response
time does not tell an attacker which addresses exist.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Iterable

from postroom.clock import Clock, SystemClock
from postroom.directory.domains import sender_domain_list
from postroom.directory.logincache import LoginCache
from postroom.directory.passwords import PasswordCheck, hash_password_async, needs_rehash
from postroom.errors import (
    AddressError,
    InvalidAddress,
    InvalidPassword,
    StoreError,
    UnknownUser,
    UserExists,
)
from postroom.mail.address import address_key, mailbox_problem, parse_address
from postroom.store.base import DirectoryStore
from postroom.store.models import UserRecord

__all__ = ["Users", "check_password", "new_user_key", "user_key"]


def user_key(address: str) -> str:
    """The stored form of a user address; InvalidAddress when it does not parse."""
    try:
        return address_key(address)
    except AddressError as exc:
        raise InvalidAddress(f"{address!r} is not a valid address: {exc}") from exc


def new_user_key(address: str) -> str:
    """``user_key`` for a user about to be added: its address must also be able to name
    a mailbox (``a/b@...``, ``"../x"@...`` cannot). Users added before this rule can
    still be looked up, changed and removed with ``user_key``."""
    key = user_key(address)
    if (problem := mailbox_problem(parse_address(key))) is not None:
        raise InvalidAddress(f"{address!r} cannot be a mailbox: {problem}")
    return key


def check_password(password: str) -> None:
    if not password:
        raise InvalidPassword("the password is empty")
    if "\x00" in password:
        raise InvalidPassword("the password holds a NUL character")


class Users:
    def __init__(
        self,
        store: DirectoryStore,
        clock: Clock | None = None,
        *,
        login_cache: LoginCache | None = None,
    ) -> None:
        self._store = store
        self._clock = clock or SystemClock()
        self._login_cache = login_cache
        self._check = PasswordCheck()

    async def add(
        self,
        address: str,
        password: str,
        sender_domains: Iterable[str] = (),
        *,
        any_sender: bool = False,
    ) -> UserRecord:
        """Create a user. It may send as its own domain, the ``sender_domains``, or with
        ``any_sender`` as any domain."""
        key = new_user_key(address)
        check_password(password)
        domains = sender_domain_list(sender_domains)
        record = UserRecord(
            address=key,
            password_hash=await hash_password_async(password),
            sender_domains=domains,
            created_at=self._clock.time(),
            any_sender=any_sender,
        )
        if not await self._store.add_user(record):
            raise UserExists(f"user {key} already exists")
        return record

    async def get(self, address: str) -> UserRecord | None:
        try:
            key = user_key(address)
        except InvalidAddress:
            return None
        return await self._store.user(key)

    async def verify(self, address: str, password: str) -> UserRecord | None:
        """The user when the password is right, else None (unknown users included).

        The record is read from the store every time, so a changed or removed password
        is refused at once even when the login cache knew the old one."""
        record = await self.get(address)
        cache = self._login_cache
        if (
            record is not None
            and cache is not None
            and cache.verified(record.password_hash, password)
        ):
            return record
        if not await self._check.verify(record.password_hash if record else None, password):
            return None
        assert record is not None
        if needs_rehash(record.password_hash):
            # Upgrade to the current cost; a failed write must not fail the login.
            new_hash = await hash_password_async(password)
            with contextlib.suppress(StoreError):
                await self._store.set_password(record.address, new_hash)
        elif cache is not None:
            cache.remember(record.password_hash, password)
        return record

    async def recall(self, address: str, password: str) -> UserRecord | None:
        """The user when the login cache knows this password for the user's current
        stored hash; None otherwise (then ``verify`` decides). Never runs argon2id."""
        if self._login_cache is None:
            return None
        record = await self.get(address)
        if record is None or not self._login_cache.verified(record.password_hash, password):
            return None
        return record

    async def passwd(self, address: str, password: str) -> None:
        key = user_key(address)
        check_password(password)
        if not await self._store.set_password(key, await hash_password_async(password)):
            raise UnknownUser(f"no such user: {key}")

    async def set_senders(
        self, address: str, sender_domains: Iterable[str] = (), *, any_sender: bool = False
    ) -> UserRecord:
        """Replace what the user may send as, besides its own domain; the new record."""
        key = user_key(address)
        domains = sender_domain_list(sender_domains)
        if not await self._store.set_user_senders(key, domains, any_sender):
            raise UnknownUser(f"no such user: {key}")
        record = await self._store.user(key)
        if record is None:  # removed in between
            raise UnknownUser(f"no such user: {key}")
        return record

    async def remove(self, address: str) -> None:
        key = user_key(address)
        if not await self._store.remove_user(key):
            raise UnknownUser(f"no such user: {key}")

    async def list(self) -> builtins.list[UserRecord]:
        """Every user, sorted by address."""
        return sorted(await self._store.users(), key=lambda user: user.address)
