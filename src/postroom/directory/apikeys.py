"""HTTP API keys: created once (the whole key is shown then and never again), verified by
hash, revoked by name; each may be limited to sender domains.

A key reads ``pr_<key id>_<secret>``. The key id finds the row; the secret has 256 bits
of entropy, so one SHA-256 of it is as good as a slow hash and costs the request nothing
(a slow hash protects guessable passwords, not random keys). Comparison is constant-time.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from postroom.clock import Clock, SystemClock
from postroom.directory.domains import sender_domain_list
from postroom.errors import ApiKeyExists, DirectoryError, UnknownApiKey
from postroom.store.base import Store
from postroom.store.models import ApiKeyRecord

__all__ = ["ApiKeys", "NewApiKey", "check_key_name"]

_PREFIX = "pr"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TOKEN = re.compile(rf"{_PREFIX}_([A-Za-z0-9]{{16}})_([A-Za-z0-9_-]{{43}})")


def check_key_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise DirectoryError(
            f"{name!r} is not a valid key name (letters, digits, '.', '_', '-'; up to 64)"
        )
    return name


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class NewApiKey:
    record: ApiKeyRecord
    token: str  # the whole key, to show once


class ApiKeys:
    def __init__(self, store: Store, clock: Clock | None = None) -> None:
        self._store = store
        self._clock = clock or SystemClock()

    async def create(
        self, name: str, sender_domains: Iterable[str] = (), *, any_sender: bool = False
    ) -> NewApiKey:
        """A new key; it may send as the local domains, the ``sender_domains``, or with
        ``any_sender`` as any domain."""
        check_key_name(name)
        domains = sender_domain_list(sender_domains)
        key_id = "".join(secrets.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(16))
        secret = secrets.token_urlsafe(32)  # 43 characters, 256 bits
        record = ApiKeyRecord(
            name, key_id, _hash(secret), domains, self._clock.time(), any_sender=any_sender
        )
        if not await self._store.add_api_key(record):
            raise ApiKeyExists(f"an API key named {name!r} already exists")
        return NewApiKey(record, f"{_PREFIX}_{key_id}_{secret}")

    async def verify(self, token: str) -> ApiKeyRecord | None:
        """The key's record when ``token`` is a valid, unrevoked key; else None."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        record = await self._store.api_key(match[1])
        if record is None or not hmac.compare_digest(record.secret_hash, _hash(match[2])):
            return None
        return record

    async def list(self) -> builtins.list[ApiKeyRecord]:
        return await self._store.api_keys()

    async def set_senders(
        self, name: str, sender_domains: Iterable[str] = (), *, any_sender: bool = False
    ) -> ApiKeyRecord:
        """Replace what the key may send as, besides the local domains; the new record."""
        domains = sender_domain_list(sender_domains)
        if await self._store.set_api_key_senders(name, domains, any_sender):
            for record in await self._store.api_keys():
                if record.name == name:
                    return record
        raise UnknownApiKey(f"no API key named {name!r}")

    async def revoke(self, name: str) -> None:
        if not await self._store.remove_api_key(name):
            raise UnknownApiKey(f"no API key named {name!r}")
