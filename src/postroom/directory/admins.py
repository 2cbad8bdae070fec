"""Administrators of the dashboard: logins of their own, apart from the mail users (an
SMTP password never opens the dashboard, nor the reverse), argon2id like users'.

A name is 1 to 64 letters, digits, ``.``, ``_`` or ``-``: it is shown in the audit log
and in the session token, so it holds nothing that needs quoting.
"""

from __future__ import annotations

import builtins
import re

from postroom.clock import Clock, SystemClock
from postroom.directory.passwords import PasswordCheck, hash_password_async
from postroom.directory.users import check_password
from postroom.errors import DirectoryError
from postroom.store.base import AdminStore
from postroom.store.models import AdminRecord

__all__ = ["Admins", "check_admin_name"]

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def check_admin_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise DirectoryError(
            f"{name!r} is not a valid admin name: 1 to 64 letters, digits, '.', '_' or '-'"
        )
    return name


class Admins:
    def __init__(self, store: AdminStore, clock: Clock | None = None) -> None:
        self._store = store
        self._clock = clock or SystemClock()
        self._check = PasswordCheck()

    async def add(self, name: str, password: str) -> AdminRecord:
        check_admin_name(name)
        check_password(password)
        record = AdminRecord(name, await hash_password_async(password), self._clock.time())
        if not await self._store.add_admin(record):
            raise DirectoryError(f"admin {name} already exists")
        return record

    async def verify(self, name: str, password: str) -> AdminRecord | None:
        """The admin when the password is right, else None (unknown names included, in
        about the same time)."""
        record = await self._store.admin(name) if _NAME.fullmatch(name) else None
        if not await self._check.verify(record.password_hash if record else None, password):
            return None
        return record

    async def passwd(self, name: str, password: str) -> None:
        """A new password; the admin's open sessions end."""
        check_password(password)
        if not await self._store.set_admin_password(name, await hash_password_async(password)):
            raise DirectoryError(f"no such admin: {name}")
        await self._store.end_admin_sessions(name, self._clock.time())

    async def remove(self, name: str) -> None:
        if not await self._store.remove_admin(name):
            raise DirectoryError(f"no such admin: {name}")

    async def list(self) -> builtins.list[AdminRecord]:
        return await self._store.admins()
