"""The queue and the directory rows at rest: narrow protocols by part, engines behind them.

``open_store(url)`` returns a started ``Store``. The only package that speaks SQL.
"""

from postroom.store.base import (
    AdminStore,
    ApiStore,
    DirectoryStore,
    LogStore,
    QueueStore,
    Store,
    StoreLifecycle,
)
from postroom.store.models import (
    NewMessage,
    RecipientState,
    RecipientStatus,
    StoredMessage,
    UserRecord,
)
from postroom.store.open import open_store

__all__ = [
    "AdminStore",
    "ApiStore",
    "DirectoryStore",
    "LogStore",
    "NewMessage",
    "QueueStore",
    "RecipientState",
    "RecipientStatus",
    "Store",
    "StoreLifecycle",
    "StoredMessage",
    "UserRecord",
    "open_store",
]
