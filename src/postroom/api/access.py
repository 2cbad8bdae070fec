"""What an API key may do (its scopes) and which messages it may see.

A missing scope is ``403`` naming the scope. A message the key may not see is answered
``404`` like one that does not exist, so a key cannot learn what others sent. A key sees
the messages sent with it (``Source(api, key name)``), or every message with
``read-all``; the queue actions (``queue``) reach the same messages.
"""

from __future__ import annotations

from dataclasses import replace

from postroom.api.errors import ApiError
from postroom.directory.apikeys import Scope
from postroom.mail.envelope import SourceKind
from postroom.store.models import ApiKeyRecord, LogQuery, StoredMessage

__all__ = ["not_found", "own_messages", "require", "sees"]


def require(key: ApiKeyRecord, *scopes: Scope) -> None:
    """ApiError 403 unless the key has one of ``scopes`` (the first is the one named)."""
    if not any(scope in key.scopes for scope in scopes):
        raise ApiError(403, f"this API key lacks the {scopes[0]} scope", scope=scopes[0])


def sees(key: ApiKeyRecord, message: StoredMessage) -> bool:
    if Scope.READ_ALL in key.scopes:
        return True
    return message.source_kind == SourceKind.API.value and message.principal == key.name


def own_messages(key: ApiKeyRecord, query: LogQuery) -> LogQuery:
    """``query`` narrowed to what the key may see."""
    if Scope.READ_ALL in key.scopes:
        return query
    return replace(query, source_kind=SourceKind.API.value, principal=key.name)


def not_found(queue_id: str) -> ApiError:
    return ApiError(404, f"no message with id {queue_id!r}")
