"""create_app(deps): the routes, and error handlers that answer every failure in the one
JSON shape (``errors``); no traceback reaches a client."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from postroom.api.body import ByteBudget
from postroom.api.deps import ApiDeps
from postroom.api.errors import (
    ApiError,
    api_error_response,
    http_exception,
    internal_error,
    store_error,
)
from postroom.api.events import EventApi
from postroom.api.health import healthz, metrics, readiness
from postroom.api.hooks import ProviderHooks
from postroom.api.messages import MessageApi
from postroom.api.openapi import openapi_document
from postroom.api.routing import Endpoint, routes_by_path
from postroom.api.tracking import TrackingApi
from postroom.errors import StoreError

__all__ = ["create_app"]

PREFIX = "/api/v1"
DASHBOARD = "/dashboard"


def create_app(deps: ApiDeps, dashboard: ASGIApp | None = None) -> Starlette:
    """The API's routes; with ``dashboard``, that app under /dashboard/ and / leading to it."""
    # Bodies parsed whole, JSON sends and webhook events alike, share one memory budget.
    budget = ByteBudget(deps.settings.max_inflight_bytes)
    messages = MessageApi(deps, budget)
    hooks = ProviderHooks(deps, deps.hooked, budget)
    events = EventApi(deps, messages, budget)
    document = openapi_document()

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    # (method, path, endpoint); routes_by_path makes one route per path, so a 405's
    # Allow names every method of the path.
    table: list[tuple[str, str, Endpoint]] = [
        ("POST", f"{PREFIX}/messages", messages.send),
        ("GET", f"{PREFIX}/messages", messages.list),
        ("GET", f"{PREFIX}/messages/{{id}}", messages.get),
        ("DELETE", f"{PREFIX}/messages/{{id}}", messages.delete),
        *(
            ("POST", f"{PREFIX}/messages/{{id}}/{verb}", _action(messages, verb))
            for verb in ("retry", "hold", "release")
        ),
        ("GET", f"{PREFIX}/messages/{{id}}/events", events.message_events),
        ("GET", f"{PREFIX}/suppressions", events.suppressions),
        ("POST", f"{PREFIX}/suppressions", events.suppress),
        ("DELETE", f"{PREFIX}/suppressions/{{address}}", events.unsuppress),
        ("GET", f"{PREFIX}/webhooks", events.webhooks),
        ("GET", f"{PREFIX}/webhooks/deliveries", events.deliveries),
        ("GET", f"{PREFIX}/openapi.json", openapi),
        ("GET", f"{PREFIX}/health", health),
        ("POST", "/hooks/{mailer}", hooks.receive),
        ("GET", "/readyz", readiness(deps.readiness, delivery_paused=deps.delivery_paused)),
        ("GET", "/healthz", healthz),
        ("GET", "/metrics", metrics(deps)),
    ]
    if deps.engagement is not None:
        tracking = TrackingApi(deps.engagement)
        table += [
            ("GET", "/t/o/{token}", tracking.open),
            ("GET", "/t/c/{token}", tracking.click),
            ("GET", "/t/u/{token}", tracking.unsubscribe_page),
            ("POST", "/t/u/{token}", tracking.unsubscribe),
        ]
    routes: list[BaseRoute] = list(routes_by_path(table))
    if dashboard is not None:
        routes.append(Route("/", _to_dashboard, methods=["GET"]))
        routes.append(Mount(DASHBOARD, dashboard))
    return Starlette(
        routes=routes,
        exception_handlers={
            ApiError: api_error_response,
            HTTPException: http_exception,
            StoreError: store_error,
            Exception: internal_error,
        },
    )


async def _to_dashboard(request: Request) -> Response:
    return RedirectResponse(f"{DASHBOARD}/", 303)


def _action(messages: MessageApi, verb: str) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        return await messages.action(request, verb)

    return endpoint
