"""The queue and the directory rows at rest: one protocol, engines behind it.

``open_store(url)`` returns a started ``Store``. The only package that speaks SQL.
"""

from postroom.store.base import Store
from postroom.store.models import (
    NewMessage,
    RecipientState,
    RecipientStatus,
    StoredMessage,
    UserRecord,
)
from postroom.store.open import open_store

__all__ = [
    "NewMessage",
    "RecipientState",
    "RecipientStatus",
    "Store",
    "StoredMessage",
    "UserRecord",
    "open_store",
]
