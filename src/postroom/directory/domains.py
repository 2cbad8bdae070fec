"""Local domains: mail for them is ours to accept (and its users must exist).

Names are stored as A-labels (RFC 5890), lowercased, without a trailing dot, so
``Bücher.example`` and ``xn--bcher-kva.example`` are the same domain.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable

from postroom.clock import Clock, SystemClock
from postroom.errors import AddressError, DomainExists, InvalidDomain, UnknownDomain
from postroom.mail.address import parse_domain, to_ascii_domain
from postroom.store.base import DirectoryStore

__all__ = ["Domains", "normalize_domain", "sender_domain_list", "unicode_domain"]


def normalize_domain(name: str) -> str:
    """The A-label form of a domain name; InvalidDomain when it is not one."""
    try:
        domain = to_ascii_domain(parse_domain(name.strip()))
    except AddressError as exc:
        raise InvalidDomain(f"{name!r} is not a valid domain name") from exc
    if domain.startswith("["):
        raise InvalidDomain(f"{name!r} is an address literal, not a domain name")
    return domain


def sender_domain_list(names: Iterable[str]) -> tuple[str, ...]:
    """Sender domains as stored: A-labels, each once, in the order given."""
    return tuple(dict.fromkeys(normalize_domain(name) for name in names))


def unicode_domain(name: str) -> str:
    """The U-label form of an A-label domain, for people to read."""
    try:
        return name.encode("ascii").decode("idna")
    except UnicodeError:
        return name


class Domains:
    def __init__(self, store: DirectoryStore, clock: Clock | None = None) -> None:
        self._store = store
        self._clock = clock or SystemClock()

    async def add(self, name: str) -> str:
        """Make ``name`` local; returns its A-label form. DomainExists if it was."""
        domain = normalize_domain(name)
        if not await self._store.add_domain(domain, self._clock.time()):
            raise DomainExists(f"domain {domain} already exists")
        return domain

    async def remove(self, name: str) -> str:
        domain = normalize_domain(name)
        if not await self._store.remove_domain(domain):
            raise UnknownDomain(f"no such domain: {domain}")
        return domain

    async def list(self) -> builtins.list[str]:
        """The local domains as A-labels, sorted."""
        return sorted(await self._store.domains())

    async def is_local(self, name: str) -> bool:
        """True when ``name`` (any case, U- or A-labels) is a local domain."""
        try:
            domain = normalize_domain(name)
        except InvalidDomain:
            return False
        return await self._store.is_local_domain(domain)
