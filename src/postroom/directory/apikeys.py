"""HTTP API keys: created once (the whole key is shown then and never again), verified by
hash, revoked by name; each may be limited to sender domains, and has scopes.

Scopes say what a key may do: ``send`` mail; ``read`` the messages sent with it;
``read-all`` every message in the log; ``queue`` hold, release, retry and delete the
messages it may see. A new key gets ``send,read`` unless told otherwise.

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
from enum import StrEnum
from typing import Final

from postroom.clock import Clock, SystemClock
from postroom.directory.domains import sender_domain_list
from postroom.errors import ApiKeyExists, DirectoryError, UnknownApiKey
from postroom.store.base import ApiStore
from postroom.store.models import ApiKeyRecord

__all__ = ["DEFAULT_SCOPES", "ApiKeys", "NewApiKey", "Scope", "check_key_name", "parse_scopes"]

_PREFIX = "pr"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TOKEN = re.compile(rf"{_PREFIX}_([A-Za-z0-9]{{16}})_([A-Za-z0-9_-]{{43}})")


class Scope(StrEnum):
    SEND = "send"
    READ = "read"  # the messages sent with this key
    READ_ALL = "read-all"  # every message, whoever sent it
    QUEUE = "queue"  # hold, release, retry, delete (the messages the key may see)
    SUPPRESSIONS = "suppressions"  # list, add and remove suppressed addresses


DEFAULT_SCOPES: Final = (Scope.SEND, Scope.READ)


def parse_scopes(values: Iterable[str]) -> tuple[Scope, ...]:
    """Scope names, each value one name or a comma list, in the order of ``Scope``."""
    names = {part.strip().lower() for value in values for part in value.split(",")}
    names.discard("")
    unknown = names - set(Scope)
    if unknown:
        known = ", ".join(Scope)
        raise DirectoryError(f"unknown scope {sorted(unknown)[0]!r} (known: {known})")
    return tuple(scope for scope in Scope if scope in names)


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
    def __init__(self, store: ApiStore, clock: Clock | None = None) -> None:
        self._store = store
        self._clock = clock or SystemClock()

    async def create(
        self,
        name: str,
        sender_domains: Iterable[str] = (),
        scopes: Iterable[Scope] = DEFAULT_SCOPES,
        *,
        any_sender: bool = False,
    ) -> NewApiKey:
        """A new key with its ``scopes``; it may send as the local domains, the
        ``sender_domains``, or with ``any_sender`` as any domain."""
        check_key_name(name)
        domains = sender_domain_list(sender_domains)
        granted = parse_scopes(scopes)
        if not granted:
            raise DirectoryError("an API key needs at least one scope")
        key_id = "".join(secrets.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(16))
        secret = secrets.token_urlsafe(32)  # 43 characters, 256 bits
        record = ApiKeyRecord(
            name,
            key_id,
            _hash(secret),
            domains,
            self._clock.time(),
            tuple(granted),
            any_sender=any_sender,
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
