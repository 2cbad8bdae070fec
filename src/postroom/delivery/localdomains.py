"""The local domains as a synchronous test for routing, refreshed from the store.

Domains live in the store (the CLI changes them while the server runs); routing needs
a plain ``domain -> bool``. The scheduler refreshes this before each batch of claims.
"""

from __future__ import annotations

from postroom.store import DirectoryStore

__all__ = ["LocalDomains"]


class LocalDomains:
    def __init__(self, domains: frozenset[str] = frozenset()) -> None:
        self._domains = domains

    def __call__(self, ascii_domain: str) -> bool:
        return ascii_domain.lower() in self._domains

    async def refresh(self, store: DirectoryStore) -> None:
        self._domains = frozenset(d.lower() for d in await store.domains())
