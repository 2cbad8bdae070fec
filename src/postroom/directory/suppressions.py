"""The suppression list as operators and applications change it (CLI and API alike).

Addresses are kept in their lookup form (``Address.key``: the local part in lower case,
the domain as A-labels), scopes as A-labels; ``""`` is the global scope.
"""

from __future__ import annotations

from postroom.clock import Clock, SystemClock
from postroom.directory.domains import normalize_domain
from postroom.errors import AddressError, InvalidAddress, UnknownSuppression
from postroom.mail.address import parse_address
from postroom.store.base import SuppressionStore
from postroom.store.models import GLOBAL_SCOPE, Suppression, SuppressionReason

__all__ = ["Suppressions", "normalize_address", "normalize_scope"]


def normalize_address(text: str) -> str:
    """An address's lookup form; InvalidAddress when it does not parse."""
    try:
        return parse_address(text.strip()).key
    except AddressError as exc:
        raise InvalidAddress(f"{text!r} is not a valid address: {exc}") from None


def normalize_scope(domain: str | None) -> str:
    """A scope: ``""`` (global) for None or empty, else the domain as an A-label."""
    return normalize_domain(domain) if domain else GLOBAL_SCOPE


class Suppressions:
    def __init__(self, store: SuppressionStore, clock: Clock | None = None) -> None:
        self._store = store
        self._clock = clock or SystemClock()

    async def add(
        self,
        address: str,
        *,
        scope: str | None = None,
        reason: SuppressionReason = SuppressionReason.MANUAL,
        source: str,
        detail: str = "",
    ) -> tuple[Suppression, bool]:
        """List ``address`` (in ``scope``, else globally); the entry and whether it is new."""
        entry = Suppression(
            address=normalize_address(address),
            scope=normalize_scope(scope),
            reason=reason,
            source=source,
            created_at=self._clock.time(),
            detail=detail,
        )
        added = await self._store.add_suppression(entry)
        return entry, added

    async def remove(self, address: str, *, scope: str | None = None) -> Suppression:
        """Take ``address`` off the list in ``scope``; UnknownSuppression when not on it."""
        key, where = normalize_address(address), normalize_scope(scope)
        found = await self._store.suppressions(address=key, scope=where, limit=1)
        if not found or not await self._store.remove_suppression(key, where):
            place = f"for {where}" if where else "globally"
            raise UnknownSuppression(f"{key} is not suppressed {place}")
        return found[0]

    async def list(
        self,
        *,
        scope: str | None = None,
        address: str | None = None,
        limit: int = 100,
        after: tuple[str, str] | None = None,
    ) -> list[Suppression]:
        """Entries by address; ``scope`` ``""`` for the global ones only."""
        return await self._store.suppressions(
            scope=None if scope is None else normalize_scope(scope),
            address=None if address is None else normalize_address(address),
            limit=limit,
            after=after,
        )
