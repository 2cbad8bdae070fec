"""The events and suppression endpoints of ``/api/v1``.

- ``GET /messages/{id}/events``: a message's events (``read`` for the key's own
  messages, ``read-all`` for any), in the shape webhooks get.
- ``GET|POST /suppressions``, ``DELETE /suppressions/{address}``: the suppression list
  (scope ``suppressions``; an entry added here has the source ``api key NAME``).
- ``GET /webhooks`` and ``GET /webhooks/deliveries``: the configured webhooks with what
  waits for each, and the delivery history (``read-all``: they show every message).

Their inputs are checked against what the OpenAPI document states (``schemas``): the
suppression's body by ``SuppressionIn``, the query's fields each by its pattern, an
unknown field refused.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from postroom.api.access import require
from postroom.api.body import ByteBudget, read_body
from postroom.api.convert import parse_model
from postroom.api.deps import ApiDeps
from postroom.api.errors import ApiError
from postroom.api.messages import MessageApi
from postroom.api.schemas import DOMAIN, SuppressionIn
from postroom.directory.apikeys import Scope
from postroom.directory.suppressions import Suppressions
from postroom.errors import DirectoryError, InvalidDomain, UnknownSuppression
from postroom.store.models import WebhookState

__all__ = ["EventApi"]

_MAX_BODY = 64 * 1024
_MAX_LIMIT = 1000
_DOMAIN = re.compile(DOMAIN)


class EventApi:
    def __init__(self, deps: ApiDeps, messages: MessageApi, budget: ByteBudget) -> None:
        """``messages``: its key check and its rule of which messages a key sees."""
        self._store = deps.store
        self._authenticate = messages.authenticate
        self._visible = messages.visible
        self._webhooks = tuple(deps.webhooks)
        self._budget = budget
        self._suppressions = Suppressions(deps.store, deps.clock)

    async def message_events(self, request: Request) -> Response:
        key = await self._authenticate(request)
        require(key, Scope.READ, Scope.READ_ALL)
        message = await self._visible(key, request.path_params["id"])
        events = await self._store.events(message.id)
        return JSONResponse({"events": [e.as_json() for e in events]})

    # -- the suppression list -----------------------------------------------------------
    async def suppressions(self, request: Request) -> Response:
        key = await self._authenticate(request)
        require(key, Scope.SUPPRESSIONS)
        params = _query(request, "scope", "address", "limit", "after")
        limit = _limit(params)
        after = params.get("after")
        cursor = None
        if after is not None:
            address, _, scope = after.partition(" ")
            cursor = (address, scope)
        with _refusals():
            entries = await self._suppressions.list(
                scope=params.get("scope"), address=params.get("address"), limit=limit + 1,
                after=cursor,
            )  # fmt: skip
        page = entries[:limit]
        more = len(entries) > limit
        last = page[-1] if page and more else None
        return JSONResponse(
            {
                "suppressions": [e.as_json() for e in page],
                "next_cursor": f"{last.address} {last.scope}".rstrip() if last else None,
            }
        )

    async def suppress(self, request: Request) -> Response:
        key = await self._authenticate(request)
        require(key, Scope.SUPPRESSIONS)
        with self._budget.hold() as held:
            raw = await read_body(request, _MAX_BODY, held)
        fields = parse_model(SuppressionIn, _object(raw))
        with _refusals():
            entry, added = await self._suppressions.add(
                fields.address,
                scope=fields.scope,
                reason=fields.reason,
                source=f"api key {key.name}",
                detail=fields.detail or "",
            )
        return JSONResponse(entry.as_json(), status_code=201 if added else 200)

    async def unsuppress(self, request: Request) -> Response:
        key = await self._authenticate(request)
        require(key, Scope.SUPPRESSIONS)
        address = request.path_params["address"]
        params = _query(request, "scope")
        with _refusals():
            entry = await self._suppressions.remove(address, scope=params.get("scope"))
        return JSONResponse(entry.as_json())

    # -- outgoing webhooks ------------------------------------------------------------
    async def webhooks(self, request: Request) -> Response:
        key = await self._authenticate(request)
        require(key, Scope.READ_ALL)
        backlog = await self._store.webhook_backlog()
        return JSONResponse(
            {
                "webhooks": [t.as_json(backlog.get(t.name, 0)) for t in self._webhooks],
                "not_fanned_out": backlog.get("", 0),
            }
        )

    async def deliveries(self, request: Request) -> Response:
        key = await self._authenticate(request)
        require(key, Scope.READ_ALL)
        params = _query(request, "webhook", "state", "limit")
        state_text = params.get("state")
        state = None
        if state_text is not None:
            try:
                state = WebhookState(state_text)
            except ValueError:
                known = ", ".join(s.value for s in WebhookState)
                raise ApiError.invalid([("state", f"one of {known}")]) from None
        found = await self._store.webhook_deliveries(
            webhook=params.get("webhook"), state=state, limit=_limit(params)
        )
        return JSONResponse({"deliveries": [d.as_json() for d in found]})


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """The directory's refusals as API errors naming the field."""
    try:
        yield
    except UnknownSuppression as exc:
        raise ApiError(404, str(exc)) from None
    except InvalidDomain as exc:
        raise ApiError.invalid([("scope", str(exc))]) from None
    except DirectoryError as exc:
        raise ApiError.invalid([("address", str(exc))]) from None


def _query(request: Request, *known: str) -> QueryParams:
    """The query, each field once and known, a scope a domain name (or empty)."""
    params = request.query_params
    problems = [(name, "unknown field") for name in params if name not in known]
    problems += [(name, "given more than once") for name in known if len(params.getlist(name)) > 1]
    scope = params.get("scope")
    if scope is not None and not (len(scope) <= 253 and _DOMAIN.fullmatch(scope)):
        problems.append(("scope", "a domain name, or empty for the global scope"))
    if problems:
        raise ApiError.invalid(problems)
    return params


def _limit(params: QueryParams) -> int:
    text = params.get("limit", "100")
    if not text.isdigit() or not 1 <= int(text) <= _MAX_LIMIT:
        raise ApiError.invalid([("limit", f"a whole number from 1 to {_MAX_LIMIT}")])
    return int(text)


def _object(raw: bytes) -> Mapping[str, object]:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError.invalid([("body", "not a JSON object")]) from None
    if not isinstance(data, dict):
        raise ApiError.invalid([("body", "not a JSON object")])
    return data
