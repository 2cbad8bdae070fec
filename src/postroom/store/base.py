"""The Store protocol: narrow, use-case methods, one per thing the system needs.

Every engine passes ``tests/store/test_contract.py``.
"""

from __future__ import annotations

from typing import Protocol

from postroom.store.models import NewMessage, StoredMessage, UserRecord

__all__ = ["Store"]


class Store(Protocol):
    async def start(self) -> None:
        """Open files and connections, create or migrate the schema."""

    async def aclose(self) -> None:
        """Finish pending commits, then close."""

    # -- the queue ---------------------------------------------------------------
    async def enqueue(self, message: NewMessage) -> None:
        """Store the message, envelope and DSN parameters; return only when the commit
        that holds them is durable (fsync'ed). Concurrent calls share commits.
        Raises StoreFull (client: 452 4.3.1) or StoreUnavailable (451 4.3.0); then
        nothing of the message remains."""

    async def message(self, message_id: str) -> StoredMessage | None: ...

    async def messages(self, *, limit: int = 100, after: str | None = None) -> list[StoredMessage]:
        """Messages in queue-id (time) order, ``limit`` at most, after ``after``."""

    async def read_body(self, message_id: str) -> bytes | None:
        """The stored bytes (trace headers and body) of a message."""

    async def count_messages(self) -> int: ...

    # -- the directory -----------------------------------------------------------
    async def add_domain(self, name: str, now: float) -> bool:
        """Add a local domain (A-label form); False when it already existed."""

    async def remove_domain(self, name: str) -> bool: ...

    async def domains(self) -> list[str]: ...

    async def is_local_domain(self, name: str) -> bool: ...

    async def add_user(self, user: UserRecord) -> bool:
        """False when a user with that address already exists."""

    async def user(self, address: str) -> UserRecord | None: ...

    async def users(self) -> list[UserRecord]: ...

    async def set_password(self, address: str, password_hash: str) -> bool: ...

    async def remove_user(self, address: str) -> bool: ...
